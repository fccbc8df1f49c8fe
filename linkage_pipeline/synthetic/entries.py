"""Body text of a 1950s firm-directory entry: address, founding date, capital, officers, business lines, banks.

A directory such as 帝國銀行會社要錄 prints, under each firm's name, a few lines in smaller type::

    所在地　東京都中央區日本橋通三丁目五番地
    設立　昭和十二年四月　資本金　五千萬圓
    社長　山田太郎　專務　鈴木一郎
    營業種目　綿絲紡績、織物製造販賣
    取引銀行　富士銀行、三菱銀行
    仕入先　東洋紡績、大日本紡績、帝國人造絹絲
    販賣先　丸紅商事、伊藤忠商事

:func:`entry_fields` draws those fields for one entry from a seeded vocabulary (old character forms, kanji
numerals, as a vertical directory prints them); :func:`wrap_fields` breaks them into printed lines of a given
length. Everything is a function of the generator passed in.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: Wards, towns and districts used in addresses (old forms).
_CITIES: tuple[str, ...] = (
    "中央區", "千代田區", "港區", "澁谷區", "品川區", "大田區", "江東區", "墨田區", "北區", "西區", "東區",
    "南區", "浪速區", "此花區", "中京區", "下京區", "中區", "鶴見區", "神奈川區", "川崎市", "横濱市",
    "神戸市", "尼崎市", "堺市", "名古屋市", "濱松市", "靜岡市", "福岡市", "八幡市", "小倉市", "札幌市",
    "仙台市", "廣島市", "岡山市", "金澤市", "新潟市", "長野市", "桐生市", "一宮市", "四日市市",
)
_TOWNS: tuple[str, ...] = (
    "日本橋通", "京橋", "銀座", "丸ノ内", "大手町", "芝浦", "本町", "南本町", "北濱", "堂島", "船場",
    "榮町", "錦町", "元町", "新町", "旭町", "八幡町", "大黑町", "寶町", "室町", "本石町", "濱町", "築地",
    "三田", "田町", "川口町", "若松町", "東雲町", "曙町", "住吉町", "堀江", "天滿", "今橋", "高麗橋",
)
_SURNAMES: tuple[str, ...] = (
    "山田", "鈴木", "佐藤", "田中", "高橋", "伊藤", "渡邊", "中村", "小林", "加藤", "吉田", "山本", "松本",
    "井上", "木村", "林", "清水", "山崎", "森", "池田", "橋本", "石川", "前田", "藤田", "小川", "岡田",
    "長谷川", "村上", "近藤", "坂本", "遠藤", "青木", "西村", "福田", "太田", "三浦", "藤井", "岡本",
    "松田", "中川", "中野", "原田", "小野", "竹内", "金子", "和田", "中山", "石田", "上田", "森田", "原",
    "柴田", "酒井", "工藤", "横山", "宮崎", "宮本", "内田", "高木", "安藤", "島田", "谷口", "大野", "齋藤",
)
_GIVEN: tuple[str, ...] = (
    "太郎", "一郎", "二郎", "三郎", "正雄", "正一", "清", "茂", "實", "勇", "博", "武", "進", "弘",
    "昇", "隆", "豐", "榮一", "榮作", "德三", "喜一", "善吉", "庄三郎", "彌太郎", "久雄", "義雄", "秀夫",
    "俊夫", "敏雄", "賢治", "英一", "健三", "孝", "修", "亮", "寛", "覺", "傳次郎", "與三郎", "龜吉",
)
_OFFICER_TITLES: tuple[str, ...] = ("專務", "常務", "取締役", "監査役", "支配人")
_PRESIDENT_TITLES: tuple[str, ...] = ("社長", "取締役社長", "代表取締役", "會長", "店主", "代表社員")
_LINES_OF_BUSINESS: tuple[str, ...] = (
    "綿絲紡績", "綿布製造", "織物製造販賣", "毛織物製造", "人絹絲", "化學藥品製造", "醫藥品製造販賣",
    "電氣機械器具製造", "電線製造", "鋼材販賣", "鑄鋼品製造", "各種機械製造", "工作機械", "石炭販賣",
    "石炭採掘", "肥料製造", "清酒釀造", "醤油釀造", "製菓", "製粉", "製糖", "硝子製品", "陶磁器製造",
    "紙及紙製品", "印刷業", "木材製材", "土木建築請負", "海上運送", "陸上運送", "倉庫業", "損害保險",
    "輸出入貿易", "雜貨販賣", "食料品卸", "石油販賣", "塗料製造", "油脂製造", "ゴム製品製造", "自動車部品",
    "車輛製造", "船舶修理", "鐵鋼二次製品", "金物卸", "綿花輸入", "生絲輸出", "セメント製造",
)
_BANKS: tuple[str, ...] = (
    "富士銀行", "三菱銀行", "住友銀行", "帝國銀行", "第一銀行", "東海銀行", "三和銀行", "大和銀行",
    "日本勸業銀行", "日本興業銀行", "北海道拓殖銀行", "神戸銀行", "協和銀行", "東京銀行", "安田銀行",
    "横濱銀行", "常陽銀行", "靜岡銀行", "千葉銀行", "足利銀行", "八十二銀行", "十六銀行", "百五銀行",
    "北陸銀行", "廣島銀行", "山口銀行", "福岡銀行", "伊豫銀行", "商工組合中央金庫", "日本長期信用銀行",
)
_FACTORIES: tuple[str, ...] = (
    "川崎", "尼崎", "堺", "四日市", "八幡", "室蘭", "岡谷", "桐生", "一宮", "大垣", "濱松", "富山",
    "新居濱", "宇部", "大牟田", "延岡", "日立", "鶴見", "蒲田", "西宮", "姫路", "岸和田", "福山",
)
_ERAS: tuple[tuple[str, int], ...] = (("明治", 45), ("大正", 15), ("昭和", 28))
_DIGITS = "〇一二三四五六七八九"
#: Separators a directory prints between names of an inline list.
INLINE_SEPARATOR = "、"
#: Between a field's caption and its value.
FIELD_GAP = "\u3000"


def kanji_number(n: int) -> str:
    """Write ``n`` (0 <= n < 100000) in kanji numerals the way a directory prints years and amounts.

    Args:
        n: The number.

    Returns:
        ``三十五`` for 35, ``百二十`` for 120, ``千五百`` for 1500, ``二萬`` for 20000.

    Raises:
        ValueError: If ``n`` is out of range.
    """
    if not 0 <= n < 100000:
        raise ValueError(f"kanji_number covers 0..99999, got {n}")
    if n == 0:
        return "〇"
    out = []
    for value, unit in ((10000, "萬"), (1000, "千"), (100, "百"), (10, "十")):
        q, n = divmod(n, value)
        if q:
            out.append(("" if q == 1 and unit != "萬" else _DIGITS[q]) + unit)
    if n:
        out.append(_DIGITS[n])
    return "".join(out)


def _pick(rng: np.random.Generator, pool: Sequence[str]) -> str:
    return pool[int(rng.integers(len(pool)))]


def _picks(rng: np.random.Generator, pool: Sequence[str], lo: int, hi: int) -> list[str]:
    k = int(rng.integers(lo, hi + 1))
    return [pool[int(i)] for i in rng.choice(len(pool), size=min(k, len(pool)), replace=False)]


def _person(rng: np.random.Generator) -> str:
    return _pick(rng, _SURNAMES) + _pick(rng, _GIVEN)


def _date(rng: np.random.Generator) -> str:
    era, last = _ERAS[int(rng.choice(3, p=[0.15, 0.3, 0.55]))]
    year = int(rng.integers(1, last + 1))
    text = era + ("元" if year == 1 else kanji_number(year)) + "年"
    if rng.random() < 0.7:
        text += kanji_number(int(rng.integers(1, 13))) + "月"
    return text


def _capital(rng: np.random.Generator) -> str:
    if rng.random() < 0.75:
        return kanji_number(int(rng.choice([5, 10, 20, 30, 50, 100, 150, 200, 300, 500, 1000, 3000, 5000]))) + "萬圓"
    return kanji_number(int(rng.integers(1, 10)) * 100) + "千圓"


def entry_fields(
    rng: np.random.Generator,
    prefecture: str,
    partner_names: Sequence[str],
) -> list[str]:
    """The body fields of one directory entry, each a caption and its value.

    Args:
        rng: Randomness of this entry.
        prefecture: The section's prefecture (the address starts with it).
        partner_names: Names of other firms, as the directory prints them; suppliers and customers are drawn
            from them (may be empty: the entry then has no supplier or customer field).

    Returns:
        Between 3 and 7 fields, in the order a directory prints them (address first).
    """
    fields = [
        "所在地" + FIELD_GAP + prefecture + _pick(rng, _CITIES) + _pick(rng, _TOWNS)
        + kanji_number(int(rng.integers(1, 10))) + "丁目" + kanji_number(int(rng.integers(1, 60))) + "番地"
    ]
    founded = "設立" + FIELD_GAP + _date(rng)
    capital = "資本金" + FIELD_GAP + _capital(rng)
    if rng.random() < 0.5:
        fields.append(founded + FIELD_GAP + capital)
    else:
        fields.extend([founded, capital])
    officers = [_pick(rng, _PRESIDENT_TITLES) + FIELD_GAP + _person(rng)]
    officers += [_pick(rng, _OFFICER_TITLES) + FIELD_GAP + _person(rng) for _ in range(int(rng.integers(0, 4)))]
    fields.append(FIELD_GAP.join(officers))
    optional: list[str] = []
    if rng.random() < 0.8:
        optional.append("營業種目" + FIELD_GAP + INLINE_SEPARATOR.join(_picks(rng, _LINES_OF_BUSINESS, 1, 3)))
    if rng.random() < 0.6:
        optional.append("取引銀行" + FIELD_GAP + INLINE_SEPARATOR.join(_picks(rng, _BANKS, 1, 3)))
    if rng.random() < 0.25:
        optional.append("工場" + FIELD_GAP + INLINE_SEPARATOR.join(_picks(rng, _FACTORIES, 1, 3)))
    if rng.random() < 0.3:
        optional.append("從業員" + FIELD_GAP + kanji_number(int(rng.integers(2, 300)) * 10) + "名")
    if len(partner_names) >= 2:
        for caption, p in (("仕入先", 0.45), ("販賣先" if rng.random() < 0.7 else "得意先", 0.4)):
            if rng.random() < p:
                optional.append(caption + FIELD_GAP + INLINE_SEPARATOR.join(_picks(rng, partner_names, 1, 4)))
    return fields + optional


def wrap_fields(fields: Sequence[str], width: int) -> list[str]:
    """Break fields into printed lines of at most ``width`` characters; each field starts a new line.

    Args:
        fields: The fields of one entry.
        width: Characters per printed line (``>= 4``).

    Returns:
        The printed lines, none empty and none starting with a separator or a blank.

    Raises:
        ValueError: If ``width`` is below 4.
    """
    if width < 4:
        raise ValueError(f"width must be >= 4 characters, got {width}")
    lines: list[str] = []
    for field_ in fields:
        rest = field_
        while rest:
            cut = min(width, len(rest))
            if cut < len(rest):
                # Break after a blank or a 、 in the second half of the line rather than inside a word.
                soft = max(rest.rfind(FIELD_GAP, 0, cut + 1), rest.rfind(INLINE_SEPARATOR, 0, cut))
                if soft >= width // 2:
                    cut = soft + 1 if rest[soft] == INLINE_SEPARATOR else soft
            if len(rest) - cut == 1 and cut > 4:
                cut -= 1  # no line of a single character
            # A compositor never starts a line with 、 (blanks at a break are dropped): move a character down.
            while cut < len(rest) and rest[cut] == INLINE_SEPARATOR and cut > 1:
                cut -= 1
            line, rest = rest[:cut].rstrip(FIELD_GAP), rest[cut:].lstrip(FIELD_GAP)
            if line:
                lines.append(line)
    return lines
