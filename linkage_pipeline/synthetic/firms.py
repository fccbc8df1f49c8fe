"""Realistic 1950s Japanese firm names and the ways other documents print them.

A :class:`Firm` has one canonical name, printed the way a 1950s directory prints it (old character forms,
full legal form). :func:`mention` prints the same firm the way another document might: modern character forms,
``株式会社``/``（株）``/``㈱``/no legal form, a common abbreviation. :func:`generate_firms` draws a set of firms
that includes hard negatives: different firms whose names differ by one visually or semantically close element
(``明治製菓``/``明治製藥``, ``東洋紡績``/``東洋紡織``, ``日本``/``大日本``), so string matching is genuinely confused.

The vocabulary of stems is split into disjoint parts (``demo``, ``train``, ``heldout``) by a stable hash of
each family of confusable stems, so a model trained on ``train`` names never saw a ``demo`` or ``heldout`` firm.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Literal

import numpy as np

logger = logging.getLogger(__name__)


Vocabulary = Literal["demo", "train", "heldout", "all"]
VOCABULARIES: tuple[str, ...] = ("demo", "train", "heldout", "all")

#: Old (kyūjitai, as printed before and shortly after the 1949 reform) -> new (shinjitai) character forms.
#: Only real pairs; every old form is in JIS X 0208/0213, so the bundled Japanese fonts cover it.
OLD_NEW_PAIRS: tuple[tuple[str, str], ...] = (
    ("會", "会"), ("賣", "売"), ("鐵", "鉄"), ("鑛", "鉱"), ("國", "国"), ("氣", "気"), ("藥", "薬"),
    ("學", "学"), ("澤", "沢"), ("濱", "浜"), ("廣", "広"), ("團", "団"), ("實", "実"), ("發", "発"),
    ("醫", "医"), ("縣", "県"), ("區", "区"), ("亞", "亜"), ("榮", "栄"), ("營", "営"), ("與", "与"),
    ("關", "関"), ("兒", "児"), ("德", "徳"), ("淺", "浅"), ("釀", "醸"), ("絲", "糸"), ("纖", "繊"),
    ("證", "証"), ("鹽", "塩"), ("燈", "灯"), ("寫", "写"), ("圖", "図"), ("圓", "円"), ("壓", "圧"),
    ("變", "変"), ("擴", "拡"), ("續", "続"), ("聯", "連"), ("豐", "豊"), ("邊", "辺"), ("驛", "駅"),
    ("權", "権"), ("來", "来"), ("傳", "伝"), ("兩", "両"), ("劑", "剤"), ("勞", "労"), ("單", "単"),
    ("壽", "寿"), ("對", "対"), ("專", "専"), ("屬", "属"), ("帶", "帯"), ("應", "応"), ("數", "数"),
    ("條", "条"), ("樂", "楽"), ("檢", "検"), ("歐", "欧"), ("滿", "満"), ("燒", "焼"), ("獨", "独"),
    ("當", "当"), ("眞", "真"), ("礦", "鉱"), ("經", "経"), ("綠", "緑"), ("總", "総"), ("臺", "台"),
    ("舊", "旧"), ("萬", "万"), ("蠶", "蚕"), ("裝", "装"), ("豫", "予"), ("輕", "軽"), ("轉", "転"),
    ("辨", "弁"), ("鑄", "鋳"), ("險", "険"), ("雜", "雑"), ("靜", "静"), ("體", "体"), ("黑", "黒"),
    ("齋", "斎"), ("瀨", "瀬"), ("澁", "渋"), ("櫻", "桜"), ("溫", "温"), ("禮", "礼"), ("藏", "蔵"),
    ("觀", "観"), ("譯", "訳"), ("錢", "銭"), ("鎭", "鎮"), ("驗", "験"), ("麥", "麦"), ("畫", "画"),
    ("稱", "称"), ("寶", "宝"), ("處", "処"), ("廳", "庁"), ("戰", "戦"), ("拂", "払"), ("效", "効"), ("斷", "断"),
)
#: Lower-case alias kept for callers that follow the issue's wording.
old_new_pairs = OLD_NEW_PAIRS
_OLD_TO_NEW: dict[str, str] = dict(OLD_NEW_PAIRS)
_NEW_TO_OLD: dict[str, str] = {}
for _old, _new in OLD_NEW_PAIRS:
    _NEW_TO_OLD.setdefault(_new, _old)

#: Legal forms (canonical, old forms) and the ways lists print them; the first variant is the modern full form.
LEGAL_FORMS: dict[str, tuple[str, ...]] = {
    "株式會社": ("株式会社", "（株）", "㈱"),
    "合資會社": ("合資会社", "（資）", "㈾"),
    "合名會社": ("合名会社", "（名）", "㈴"),
    "有限會社": ("有限会社", "（有）", "㈲"),
}
_ALL_LEGAL_STRINGS: tuple[str, ...] = tuple(
    sorted({s for k, v in LEGAL_FORMS.items() for s in (k, *v)}, key=len, reverse=True)
)

# Stems: places, founders' families, auspicious words. Old forms where a 1950s directory would print them.
# Popular stems (many real firms share them) get a higher drawing weight, which is itself a source of
# near-duplicates: 東洋紡績, 東洋製罐, 東洋曹達, ...
_POPULAR_STEMS: tuple[str, ...] = (
    "東洋", "日本", "大日本", "大阪", "東京", "三井", "三菱", "住友", "富士", "帝國", "日東", "昭和",
    "東亞", "太平洋", "中央", "旭", "大和", "第一", "協和", "日新", "大同", "關西", "九州", "北海道",
)
_STEMS: tuple[str, ...] = (
    *_POPULAR_STEMS,
    # prefectures and regions
    "青森", "岩手", "宮城", "秋田", "山形", "福島", "茨城", "栃木", "群馬", "埼玉", "千葉", "神奈川",
    "新潟", "富山", "石川", "福井", "山梨", "長野", "岐阜", "静岡", "愛知", "三重", "滋賀", "京都",
    "兵庫", "奈良", "和歌山", "鳥取", "島根", "岡山", "廣島", "山口", "德島", "香川", "愛媛", "高知",
    "福岡", "佐賀", "長崎", "熊本", "大分", "宮崎", "鹿兒島", "關東", "東北", "四國", "北陸", "東海",
    "山陽", "中國", "中部", "近畿", "南海", "西日本", "東日本", "新日本", "北海",
    # cities
    "横濱", "神戸", "名古屋", "川崎", "尼崎", "八幡", "小倉", "室蘭", "函館", "仙台", "札幌", "金澤",
    "濱松", "四日市", "姫路", "佐世保", "下關", "門司", "堺", "岸和田", "桐生", "足利", "一宮", "今治",
    # auspicious and generic words
    "大正", "明治", "東陽", "大洋", "太洋", "日進", "大東", "共和", "三和", "三輪", "朝日", "旭日",
    "日之出", "興亞", "國光", "新興", "東邦", "日清", "極東", "亞細亞", "中外", "帝都", "第二", "大成",
    "明和", "日立", "日光", "光", "榮", "共榮", "信越", "常磐", "東和", "日和", "大興", "太陽", "三光",
    "丸三", "山一", "丸十", "寶", "互光", "朝陽", "協同", "合同", "聯合",
    # founders' families
    "古河", "古川", "片倉", "片岡", "安田", "淺野", "大倉", "大原", "鈴木", "野村", "野田", "藤田",
    "藤井", "久原", "岩井", "岩田", "伊藤", "伊東", "丸紅", "兼松", "松下", "松本", "山下", "山本",
    "石川島", "日産", "森永", "森下", "鐘淵", "倉敷", "郡是", "服部", "高田", "小西", "武田",
    "鹽野", "田邊", "澁澤", "岡本", "中山", "小林", "渡邊", "加藤", "吉田", "山崎", "山田", "村井",
)
_STEM_WEIGHT: dict[str, float] = {s: (10.0 if s in _POPULAR_STEMS else 1.0) for s in _STEMS}

#: Pairs of stems a reader (or a string matcher) easily confuses; each pair names two different firms.
CONFUSABLE_STEMS: tuple[tuple[str, str], ...] = (
    ("日本", "大日本"), ("日本", "新日本"), ("日本", "西日本"), ("日本", "東日本"), ("東洋", "東陽"),
    ("大洋", "太洋"), ("日新", "日進"), ("大同", "大東"), ("協和", "共和"), ("三和", "三輪"),
    ("旭", "朝日"), ("旭", "旭日"), ("北海道", "北海"), ("關西", "關東"), ("中央", "中外"), ("帝國", "帝都"),
    ("第一", "第二"), ("古河", "古川"), ("片倉", "片岡"), ("大倉", "大原"), ("野村", "野田"),
    ("藤田", "藤井"), ("岩井", "岩田"), ("伊藤", "伊東"), ("松下", "松本"), ("山下", "山本"),
    ("森永", "森下"), ("明治", "明和"), ("大和", "大成"), ("日立", "日光"), ("東亞", "興亞"),
    ("東邦", "東和"), ("東和", "日和"), ("太陽", "太平洋"), ("朝日", "朝陽"), ("三光", "三和"),
    ("共榮", "共和"), ("大興", "大同"), ("昭和", "明和"), ("日東", "日新"), ("富士", "富山"),
    ("東京", "東邦"), ("大阪", "大正"), ("三井", "三光"), ("三菱", "三輪"), ("住友", "住吉"),
    ("九州", "九十九"),
)

# Industries, canonical (old) forms. Every one is realistic in a 1950s directory.
_INDUSTRIES: tuple[str, ...] = (
    "紡績", "紡織", "製鋼", "製鐵", "化學工業", "化成工業", "製藥", "製菓", "電氣工業", "電機工業",
    "電線", "鑛業", "商事", "商會", "販賣", "造船", "機械製作所", "機械工業", "硝子", "製紙", "製絲",
    "水産", "瓦斯", "鐵道", "電氣鐵道", "産業", "興業", "工業", "工業所", "重工業", "食品", "織物",
    "毛織", "酒造", "釀造", "製粉", "製糖", "肥料", "倉庫", "運輸", "運送", "海運", "汽船", "土木",
    "建設", "窯業", "陶器", "製陶", "木材", "皮革", "染工", "精機", "精工", "製作所", "鐵工所",
    "金屬工業", "印刷", "證券", "信託", "石油", "石炭", "炭鑛", "セメント", "ゴム工業", "人絹",
    "纖維", "製材", "塗料", "油脂", "曹達", "燐寸", "綿業", "物産", "貿易", "通商", "洋行", "紙業",
    "電機", "通信機", "光學", "計器", "自動車", "車輛", "鋼管", "鋼業", "伸銅", "製罐", "醤油",
    "製氷", "電力", "百貨店", "銀行", "保險", "レーヨン", "ペイント", "肥料工業", "農機", "製靴",
)
#: The industry words names are built of (canonical, old forms), for other name generators.
INDUSTRY_WORDS: tuple[str, ...] = _INDUSTRIES
# Industries most 1950s firms belonged to; drawn more often, so that a name's industry is shared with many
# other firms (東洋紡績, 日東紡績, 大日本紡績 ...) as in a real directory.
_COMMON_INDUSTRIES: frozenset[str] = frozenset(
    ("紡績", "織物", "化學工業", "工業", "製作所", "商事", "商會", "産業", "鑛業", "電氣工業", "製紙",
     "機械製作所", "鐵工所", "製藥", "食品", "造船", "物産", "興業", "製鋼", "重工業", "毛織", "酒造",
     "運輸", "建設", "製菓", "印刷", "炭鑛", "電機", "精機", "硝子")
)
_INDUSTRY_WEIGHT: dict[str, float] = {i: (4.0 if i in _COMMON_INDUSTRIES else 1.0) for i in _INDUSTRIES}
#: Pairs of industries that look or read alike (菓/藥, 績/織, 鋼/鐵, ...): names of different firms.
CONFUSABLE_INDUSTRIES: tuple[tuple[str, str], ...] = (
    ("製菓", "製藥"), ("紡績", "紡織"), ("製鋼", "製鐵"), ("電氣工業", "電機工業"), ("化學工業", "化成工業"),
    ("商事", "商會"), ("製紙", "製絲"), ("酒造", "釀造"), ("製粉", "製糖"), ("鑛業", "工業"),
    ("産業", "興業"), ("運輸", "運送"), ("精機", "精工"), ("鋼管", "鋼業"), ("海運", "汽船"),
    ("毛織", "織物"), ("陶器", "製陶"), ("石油", "石炭"), ("機械製作所", "機械工業"), ("物産", "産業"),
    ("貿易", "通商"), ("鐵工所", "鐵道"), ("紙業", "製紙"), ("電機", "電線"), ("重工業", "工業"),
    ("製氷", "製粉"), ("電力", "電機"), ("炭鑛", "鑛業"), ("製材", "木材"), ("肥料", "肥料工業"),
    ("製作所", "工業所"), ("人絹", "纖維"), ("塗料", "ペイント"), ("信託", "證券"), ("倉庫", "運送"),
)
#: Common short forms of an industry word (東洋紡績 -> 東洋紡, 住友電氣工業 -> 住友電工).
INDUSTRY_ABBREVIATIONS: dict[str, tuple[str, ...]] = {
    "紡績": ("紡",),
    "電氣工業": ("電工",),
    "重工業": ("重工",),
    "工業所": ("工業",),
    "化學工業": ("化學", "化工"),
    "電氣鐵道": ("電鐵",),
    "機械製作所": ("機械",),
    "金屬工業": ("金屬",),
    "通信機": ("通信",),
    "ゴム工業": ("ゴム",),
    "肥料工業": ("肥料",),
}

#: (legal form, position, weight) of canonical names.
_LEGAL_CHOICES: tuple[tuple[str, str, float], ...] = (
    ("株式會社", "suffix", 0.52),
    ("株式會社", "prefix", 0.24),
    ("合資會社", "suffix", 0.05),
    ("合資會社", "prefix", 0.02),
    ("合名會社", "suffix", 0.03),
    ("有限會社", "suffix", 0.05),
    ("有限會社", "prefix", 0.02),
    ("", "none", 0.07),
)
_SPLIT_CUTS: dict[str, tuple[float, float]] = {"demo": (0.0, 0.3), "heldout": (0.3, 0.5), "train": (0.5, 1.0)}


def to_new_forms(text: str) -> str:
    """Replace every old character form in ``text`` by its modern form (``會社`` -> ``会社``)."""
    return "".join(_OLD_TO_NEW.get(c, c) for c in text)


def to_old_forms(text: str) -> str:
    """Replace every modern character form that has an old form in the table by the old form."""
    return "".join(_NEW_TO_OLD.get(c, c) for c in text)


def strip_legal_form(text: str) -> str:
    """Remove every legal-form string (``株式會社``, ``（株）``, ``㈱``, ...) from ``text``."""
    for s in _ALL_LEGAL_STRINGS:
        text = text.replace(s, "")
    return text


def name_key(text: str) -> str:
    """Normalised key of a printed name: modern forms, no legal form. Two firms never share a key."""
    return to_new_forms(strip_legal_form(text))


@dataclass(frozen=True)
class Firm:
    """One real firm.

    Attributes:
        entity_id: Stable id, ``"F00042"``; the same id in every document that mentions the firm.
        canonical: The name as a 1950s directory prints it (old forms, full legal form).
        stem: Place, family or auspicious word (``東洋``).
        industry: Industry word, old forms (``紡績``).
        legal_form: ``株式會社``, ``合資會社``, ``合名會社``, ``有限會社`` or ``""``.
        legal_position: ``prefix``, ``suffix`` or ``none``.
        aliases: Short forms of ``stem + industry`` (``東洋紡``) that no other firm of the same draw uses.
    """

    entity_id: str
    canonical: str
    stem: str = ""
    industry: str = ""
    legal_form: str = ""
    legal_position: str = "none"
    aliases: tuple[str, ...] = ()

    @property
    def core(self) -> str:
        """The name without its legal form, old forms."""
        return self.stem + self.industry if self.stem else strip_legal_form(self.canonical)


@dataclass(frozen=True)
class MentionStyle:
    """How a kind of document prints a firm's name; every field is a probability.

    Attributes:
        p_exact: Print the canonical name unchanged.
        p_modern_all: Typesetter used modern forms throughout (every old form replaced).
        p_modern_char: Otherwise, chance that each old-form character is printed in its modern form.
        legal_weights: Relative weights of printing the legal form as: old full form, modern full form,
            parenthesised abbreviation ``（株）``, circled ``㈱``, omitted.
        p_move_legal: Print the legal form on the other side of the name.
        p_alias: Use a short form of the name (``東洋紡``) when the firm has one.
    """

    p_exact: float
    p_modern_all: float
    p_modern_char: float
    legal_weights: tuple[float, float, float, float, float]
    p_move_legal: float
    p_alias: float


MENTION_STYLES: dict[str, MentionStyle] = {
    "canonical": MentionStyle(1.0, 0.0, 0.0, (1, 0, 0, 0, 0), 0.0, 0.0),
    # Directories mostly reprint the registered name; some editions already use modern forms.
    "directory": MentionStyle(0.75, 0.3, 0.3, (0.5, 0.3, 0.0, 0.1, 0.1), 0.0, 0.0),
    # A list's reporting firm is printed in full, usually in the typesetter's modern forms.
    "title": MentionStyle(0.25, 0.6, 0.5, (0.3, 0.5, 0.1, 0.05, 0.05), 0.0, 0.05),
    # Supplier/customer lists are typed from questionnaires: modern forms, abbreviations, legal form dropped.
    "list": MentionStyle(0.1, 0.55, 0.5, (0.12, 0.28, 0.2, 0.1, 0.3), 0.2, 0.25),
}


def mention(firm: Firm, rng: np.random.Generator, style: str | MentionStyle = "list") -> str:
    """Print ``firm``'s name the way a document of ``style`` would.

    Args:
        firm: The firm.
        rng: Source of randomness; the result is a deterministic function of its state.
        style: A key of :data:`MENTION_STYLES` (``canonical``, ``directory``, ``list``) or a MentionStyle.

    Returns:
        The printed name (never empty).

    Raises:
        ValueError: If ``style`` is an unknown name.
    """
    if isinstance(style, str):
        if style not in MENTION_STYLES:
            raise ValueError(f"unknown mention style {style!r}; expected one of {sorted(MENTION_STYLES)}")
        style = MENTION_STYLES[style]
    if rng.random() < style.p_exact:
        return firm.canonical
    core = firm.core
    if firm.aliases and rng.random() < style.p_alias:
        core = firm.aliases[int(rng.integers(len(firm.aliases)))]
    legal = ""
    position = firm.legal_position
    if firm.legal_form:
        w = np.asarray(style.legal_weights, dtype=float)
        choice = int(rng.choice(len(w), p=w / w.sum()))
        variants = LEGAL_FORMS[firm.legal_form]
        legal = (firm.legal_form, variants[0], variants[1], variants[2], "")[choice]
        if legal and rng.random() < style.p_move_legal:
            position = "prefix" if position == "suffix" else "suffix"
    text = legal + core if position == "prefix" else core + legal
    if rng.random() < style.p_modern_all:
        text = to_new_forms(text)
    elif style.p_modern_char > 0:
        text = "".join(
            _OLD_TO_NEW[c] if c in _OLD_TO_NEW and rng.random() < style.p_modern_char else c for c in text
        )
    return text


def _stable_unit(text: str) -> float:
    """A number in [0, 1) that depends only on ``text`` (not on PYTHONHASHSEED)."""
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big") / 2.0**64


def _stem_families() -> dict[str, str]:
    """Map each stem to its family representative: stems linked by CONFUSABLE_STEMS share a family."""
    parent: dict[str, str] = {s: s for s in _STEMS}
    for a, b in CONFUSABLE_STEMS:
        parent.setdefault(a, a)
        parent.setdefault(b, b)

    def find(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in CONFUSABLE_STEMS:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return {s: find(s) for s in parent}


def vocabulary_stems(vocabulary: Vocabulary = "demo") -> tuple[str, ...]:
    """Stems of one vocabulary part; the parts are disjoint and keep confusable stems together.

    Args:
        vocabulary: ``demo``, ``train``, ``heldout`` or ``all``.

    Returns:
        The stems, in a fixed order.

    Raises:
        ValueError: If ``vocabulary`` is unknown.
    """
    if vocabulary not in VOCABULARIES:
        raise ValueError(f"unknown vocabulary {vocabulary!r}; expected one of {VOCABULARIES}")
    families = _stem_families()
    stems = sorted(families)
    if vocabulary == "all":
        return tuple(stems)
    lo, hi = _SPLIT_CUTS[vocabulary]
    return tuple(s for s in stems if lo <= _stable_unit("stem-family:" + families[s]) < hi)


def _canonical(stem: str, industry: str, legal_form: str, position: str) -> str:
    core = stem + industry
    if position == "prefix":
        return legal_form + core
    if position == "suffix":
        return core + legal_form
    return core


def generate_firms(
    n: int,
    seed: int = 0,
    *,
    vocabulary: Vocabulary = "demo",
    hard_negative_share: float = 0.6,
    id_prefix: str = "F",
) -> list[Firm]:
    """Draw ``n`` distinct firms, a share of them near-identical to another firm of the draw.

    Args:
        n: Number of firms, ``>= 1``.
        seed: Seed; the same ``(n, seed, vocabulary, hard_negative_share)`` gives the same firms.
        vocabulary: Which disjoint part of the stem vocabulary to draw from (``demo``, ``train``,
            ``heldout``, or ``all``).
        hard_negative_share: Probability that a new firm is built as a confusable sibling of an earlier one
            (a confusable industry or stem, or the same stem in another industry).
        id_prefix: Prefix of the entity ids (``F`` gives ``F00000``, ``F00001``, ...).

    Returns:
        ``n`` firms with ids ``{id_prefix}00000`` ... in a shuffled order of construction; no two firms share
        a :func:`name_key` or an alias key.

    Raises:
        ValueError: If ``n`` or ``hard_negative_share`` is out of range, ``vocabulary`` unknown, or the
            vocabulary part cannot supply ``n`` distinct names.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not 0.0 <= hard_negative_share <= 1.0:
        raise ValueError(f"hard_negative_share must be in [0, 1], got {hard_negative_share}")
    stems = vocabulary_stems(vocabulary)
    capacity = len(stems) * len(_INDUSTRIES)
    if n > capacity // 2:
        raise ValueError(
            f"vocabulary {vocabulary!r} has {len(stems)} stems x {len(_INDUSTRIES)} industries; "
            f"at most {capacity // 2} firms can be drawn, got n={n}"
        )
    vocab_index = VOCABULARIES.index(vocabulary)
    rng = np.random.default_rng([seed, vocab_index, 0x46495232])
    stem_set = set(stems)
    weights = np.array([_STEM_WEIGHT.get(s, 1.0) for s in stems])
    weights /= weights.sum()
    stem_partners: dict[str, list[str]] = {}
    for a, b in CONFUSABLE_STEMS:
        if a in stem_set and b in stem_set:
            stem_partners.setdefault(a, []).append(b)
            stem_partners.setdefault(b, []).append(a)
    industry_partners: dict[str, list[str]] = {}
    for a, b in CONFUSABLE_INDUSTRIES:
        industry_partners.setdefault(a, []).append(b)
        industry_partners.setdefault(b, []).append(a)
    industry_p = np.array([_INDUSTRY_WEIGHT[i] for i in _INDUSTRIES])
    industry_p /= industry_p.sum()
    legal_p = np.array([w for _, _, w in _LEGAL_CHOICES])
    legal_p /= legal_p.sum()

    drawn: list[tuple[str, str, str, str]] = []
    keys: set[str] = set()
    attempts = 0
    while len(drawn) < n:
        attempts += 1
        if attempts > 200 * n + 1000:
            raise ValueError(f"could not draw {n} distinct firms from vocabulary {vocabulary!r}")
        if drawn and rng.random() < hard_negative_share:
            stem, industry, _, _ = drawn[int(rng.integers(len(drawn)))]
            kind = rng.random()
            if kind < 0.45 and industry in industry_partners:
                partners = industry_partners[industry]
                industry = partners[int(rng.integers(len(partners)))]
            elif kind < 0.75 and stem in stem_partners:
                partners = stem_partners[stem]
                stem = partners[int(rng.integers(len(partners)))]
            else:
                industry = _INDUSTRIES[int(rng.choice(len(_INDUSTRIES), p=industry_p))]
        else:
            stem = stems[int(rng.choice(len(stems), p=weights))]
            industry = _INDUSTRIES[int(rng.choice(len(_INDUSTRIES), p=industry_p))]
        legal_form, position, _ = _LEGAL_CHOICES[int(rng.choice(len(_LEGAL_CHOICES), p=legal_p))]
        key = name_key(stem + industry)
        if key in keys:
            continue
        keys.add(key)
        drawn.append((stem, industry, legal_form, position))

    order = rng.permutation(n)
    drawn = [drawn[i] for i in order]
    # Short forms are allowed only where they name no other firm of this draw.
    alias_count: dict[str, int] = {}
    candidates: list[list[str]] = []
    for stem, industry, _, _ in drawn:
        cands = [stem + a for a in INDUSTRY_ABBREVIATIONS.get(industry, ())]
        candidates.append(cands)
        for c in cands:
            alias_count[name_key(c)] = alias_count.get(name_key(c), 0) + 1
    firms = []
    for i, ((stem, industry, legal_form, position), cands) in enumerate(zip(drawn, candidates, strict=True)):
        aliases = tuple(c for c in cands if name_key(c) not in keys and alias_count[name_key(c)] == 1)
        firms.append(
            Firm(
                entity_id=f"{id_prefix}{i:05d}",
                canonical=_canonical(stem, industry, legal_form, position),
                stem=stem,
                industry=industry,
                legal_form=legal_form,
                legal_position=position,
                aliases=aliases,
            )
        )
    logger.debug("drew %d firms from vocabulary %s (seed %d, %d attempts)", n, vocabulary, seed, attempts)
    return firms


def vocabulary_characters() -> str:
    """Every character any generated name or mention can contain (for font coverage checks)."""
    chars: set[str] = set()
    for s in (*_STEMS, *(b for _, b in CONFUSABLE_STEMS), *_INDUSTRIES):
        chars.update(s)
    for k, v in LEGAL_FORMS.items():
        chars.update(k)
        for s in v:
            chars.update(s)
    for v in INDUSTRY_ABBREVIATIONS.values():
        for s in v:
            chars.update(s)
    chars.update(to_new_forms("".join(sorted(chars))))
    return "".join(sorted(chars))
