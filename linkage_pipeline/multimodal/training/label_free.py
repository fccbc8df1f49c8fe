"""Label-free training crops: each printed name is its own class, its views made by knowledge that needs no labels.

The self-supervised model of CLIPPINGS started from a Japanese CLIP pretrained on web images, which cannot be
downloaded here. What that model brought to linking is general knowledge of the script: that 會 and 会 are one
character, that 株式会社 and （株） are one legal form, that a name set in a Mincho and in a Gothic face, scanned
badly, is still the same name. This module builds that knowledge into the data of the language-image
pretraining, from sources that need no firm labels:

``variants``
    Old and new character forms from Debian's Unihan tables and the Japanese kanji lists in them
    (:func:`~linkage_pipeline.multimodal.variants.japanese_old_new` **without** the project's hand list, which
    is the list our corpus generator prints; the Unihan-derived pairs cover 76 of its 106 pairs). A view
    converts each character to its other form with some probability.
``legal_forms``
    The legal forms of Japanese companies and the ways they are printed (full, old forms, parenthesised and
    circled abbreviations, omitted, before or after the name): :data:`LEGAL_FORM_LEXICON`.
``typefaces``
    Each view is set in a typeface drawn from the training faces (one face for every view when off).
``degradations``
    Each view gets scan degradations of :data:`~linkage_pipeline.multimodal.training.degrade.TRAIN_FAMILY`.
``glyph_noise``
    The text of each view is a simulated reading whose substitutions are glyph look-alikes found by rendering
    (:func:`glyph_confusions`): visual similarity, not the generator's tables.
``open_vocabulary``
    Half of the names are not drawn from our firm generator's few hundred characters but built from the whole
    常用漢字 and 人名用漢字 lists (Unihan kJoyoKanji and kJinmeiyoKanji, 2,688 characters every training face
    covers) and katakana (:func:`open_names`), so that every character a real directory prints has been seen,
    drawn in many faces and read with noise, and no character's embedding is left at its initial value.

A *name* (class) is one string printed once; two names of different firms are different classes even when a
person would link them, and two prints of one firm drawn separately are different classes too (no firm identity
is used). Hard negatives for the contrastive loss come from string similarity alone (:func:`string_neighbours`).
"""

from __future__ import annotations

import logging
import time
import unicodedata
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from linkage_pipeline.multimodal.training.augment import render_crop
from linkage_pipeline.multimodal.training.data import TrainingSet
from linkage_pipeline.multimodal.training.degrade import TRAIN_FAMILY, degrade
from linkage_pipeline.synthetic.firms import Firm, generate_firms, mention
from linkage_pipeline.synthetic.fonts import FontFile, resolve_training_fonts

logger = logging.getLogger(__name__)

#: Japanese company legal forms and their printed forms: (modern full form, old-form full form, abbreviations).
#: 株式会社 (kabushiki kaisha), 有限会社, 合資会社, 合名会社, 合同会社 and 相互会社, as the Commercial Code names
#: them; the parenthesised and circled abbreviations are the ones JIS X 0208/0213 and Unicode encode.
LEGAL_FORM_LEXICON: tuple[tuple[str, ...], ...] = (
    ("株式会社", "株式會社", "（株）", "(株)", "㈱"),
    ("有限会社", "有限會社", "（有）", "(有)", "㈲"),
    ("合資会社", "合資會社", "（資）", "(資)", "㈾"),
    ("合名会社", "合名會社", "（名）", "(名)", "㈴"),
    ("合同会社", "合同會社", "（同）"),
    ("相互会社", "相互會社"),
)
_LEGAL_STRINGS: tuple[tuple[str, int], ...] = tuple(
    sorted(((s, i) for i, forms in enumerate(LEGAL_FORM_LEXICON) for s in forms), key=lambda x: -len(x[0]))
)
KNOWLEDGE: tuple[str, ...] = ("variants", "legal_forms", "typefaces", "degradations", "glyph_noise", "open_vocabulary")
#: Share of the names built from the open character inventory when ``open_vocabulary`` is on.
OPEN_SHARE = 0.5


@dataclass(frozen=True)
class Knowledge:
    """Which knowledge sources make the views of a name (see the module docstring); all on by default."""

    variants: bool = True
    legal_forms: bool = True
    typefaces: bool = True
    degradations: bool = True
    glyph_noise: bool = True
    open_vocabulary: bool = True

    @classmethod
    def without(cls, *names: str) -> Knowledge:
        """All sources but ``names`` (for the ablation).

        Raises:
            ValueError: On an unknown source name.
        """
        unknown = sorted(set(names) - set(KNOWLEDGE))
        if unknown:
            raise ValueError(f"unknown knowledge source(s) {unknown}; expected some of {list(KNOWLEDGE)}")
        return cls(**{n: n not in names for n in KNOWLEDGE})


# ------------------------------------------------------------------------------------------ text knowledge
@lru_cache(maxsize=1)
def variant_pairs() -> dict[str, str]:
    """Old <-> new character forms from Unihan and the Japanese kanji lists, without the project's hand list.

    Returns:
        Both directions in one map (old -> new and new -> one old form).
    """
    from linkage_pipeline.multimodal import variants

    pairs = variants.japanese_old_new_sources(include_hand=False)
    both: dict[str, str] = {}
    for old, (new, _source) in pairs.items():
        both[old] = new
        both.setdefault(new, old)
    return both


def swap_forms(text: str, rng: np.random.Generator, rate: float, pairs: dict[str, str]) -> str:
    """Each character with another form is converted to it with probability ``rate`` (one draw per such char)."""
    out = []
    for ch in text:
        other = pairs.get(ch)
        out.append(other if other is not None and rng.random() < rate else ch)
    return "".join(out)


def find_legal_form(text: str) -> tuple[int, int, int] | None:
    """``(start, end, form index)`` of the first legal-form string in ``text`` (longest match), or ``None``."""
    best = None
    for s, i in _LEGAL_STRINGS:
        at = text.find(s)
        if at >= 0 and (best is None or at < best[0]):
            best = (at, at + len(s), i)
    return best


def vary_legal_form(text: str, rng: np.random.Generator) -> str:
    """Reprint the legal form of ``text`` another way: another printed form, moved to the other side, or dropped."""
    found = find_legal_form(text)
    if found is None:
        return text
    start, end, form = found
    core = text[:start] + text[end:]
    if not core:
        return text
    choice = rng.random()
    if choice < 0.3:
        return core
    forms = LEGAL_FORM_LEXICON[form]
    printed = forms[int(rng.integers(len(forms)))]
    prefix = start == 0
    if rng.random() < 0.25:
        prefix = not prefix
    return printed + core if prefix else core + printed


@lru_cache(maxsize=4)
def glyph_confusions(chars: str, font_path: str, font_index: int = 0, k: int = 3, size: int = 32) -> dict[str, str]:
    """Each character's ``k`` most similar-looking characters among ``chars``, by rendering them.

    Characters are drawn in one typeface, blurred and down-sampled to 16 x 16, and compared by cosine similarity;
    this is the visual similarity an OCR engine confuses, found without any reading or label.

    Returns:
        ``{char: k look-alikes}`` (strings of length ``k``).
    """
    import cv2

    font = ImageFont.truetype(font_path, size, index=font_index)
    cells = []
    for ch in chars:
        im = Image.new("L", (size + 8, size + 8), 0)
        ImageDraw.Draw(im).text((4, 4), ch, fill=255, font=font)
        a = cv2.GaussianBlur(np.asarray(im, dtype=np.float32), (0, 0), 1.5)
        cells.append(cv2.resize(a, (16, 16), interpolation=cv2.INTER_AREA).ravel())
    x = np.stack(cells)
    x -= x.mean(axis=1, keepdims=True)
    x /= np.linalg.norm(x, axis=1, keepdims=True) + 1e-6
    sim = x @ x.T
    np.fill_diagonal(sim, -np.inf)
    nearest = np.argsort(-sim, axis=1)[:, :k]
    return {ch: "".join(chars[j] for j in nearest[i]) for i, ch in enumerate(chars)}


def glyph_noise(text: str, rng: np.random.Generator, confusions: dict[str, str], error_rate: float) -> str:
    """A simulated reading: per character, with probability ``error_rate``, a look-alike, a drop or a doubling."""
    out = []
    for ch in unicodedata.normalize("NFKC", text):
        if rng.random() >= error_rate:
            out.append(ch)
            continue
        kind = rng.random()
        alike = confusions.get(ch)
        if kind < 0.6 and alike:
            out.append(alike[int(rng.integers(len(alike)))])
        elif kind < 0.85:
            continue
        else:
            out.extend((ch, ch))
    return "".join(out)


# ------------------------------------------------------------------------------------------------ the set
@lru_cache(maxsize=1)
def open_inventory() -> tuple[str, str]:
    """The characters of open-vocabulary names: ``(kanji, katakana)``.

    The kanji are the 常用漢字 and 人名用漢字 of Unihan (:func:`~linkage_pipeline.multimodal.variants.load_japanese_lists`)
    that every installed training face covers and the tokenizer knows, in code point order; the katakana are the
    full-width letters ア..ン with voiced and small forms and the long-vowel mark.
    """
    from linkage_pipeline.multimodal import variants
    from linkage_pipeline.multimodal.tokenizer import tokenizer_characters
    from linkage_pipeline.synthetic.fonts import font_cmap

    lists = variants.load_japanese_lists()
    known = set(tokenizer_characters())
    covered = frozenset.intersection(*(font_cmap(font.path, font.index) for font in resolve_training_fonts()))
    kanji = "".join(sorted(c for c in lists.joyo | lists.jinmeiyo if c in known and ord(c) in covered))
    katakana = "".join(chr(c) for c in range(ord("ァ"), ord("ン") + 1)) + "ヴー"
    return kanji, katakana


#: Katakana no word begins with (small letters, ン, ヲ).
_NO_WORD_START = frozenset("ァィゥェォッャュョヮヵヶンヲ")


def _reserved_stems() -> tuple[str, ...]:
    """Stems of the demo and held-out vocabularies (both old and new forms): open names never contain one."""
    from linkage_pipeline.synthetic.firms import to_new_forms, vocabulary_stems

    stems = {s for v in ("demo", "heldout") for s in vocabulary_stems(v) if len(s) >= 2}
    return tuple(sorted(stems | {to_new_forms(s) for s in stems}))


def open_names(n: int, seed: int) -> list[str]:
    """``n`` distinct firm-like names over the open character inventory (:func:`open_inventory`).

    A name is one stem (two in a fifth of names) of 1-3 random kanji or 2-5 random katakana, then an industry
    word (our generator's, in old or new forms, or two random kanji), then a legal form before or after (or none),
    as our generator prints them. Names containing a demo or held-out stem are redrawn.

    Raises:
        ValueError: If ``n < 1``.
    """
    from linkage_pipeline.synthetic.firms import INDUSTRY_WORDS, to_new_forms

    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    kanji, katakana = open_inventory()
    reserved = _reserved_stems()
    rng = np.random.default_rng([seed, 0x4F50454E])
    legal = [forms[i] for forms in LEGAL_FORM_LEXICON[:4] for i in (0, 1)]

    def stem() -> str:
        if rng.random() < 0.75:
            return "".join(kanji[int(i)] for i in rng.integers(len(kanji), size=int(rng.choice([1, 2, 2, 2, 3]))))
        word = "".join(katakana[int(i)] for i in rng.integers(len(katakana) - 1, size=int(rng.integers(2, 6))))
        while word[0] in _NO_WORD_START:
            word = katakana[int(rng.integers(len(katakana) - 1))] + word[1:]
        return word + "ー" if rng.random() < 0.2 else word

    names: list[str] = []
    seen: set[str] = set()
    while len(names) < n:
        core = stem() + (stem() if rng.random() < 0.2 else "")
        kind = rng.random()
        if kind < 0.55:
            word = INDUSTRY_WORDS[int(rng.integers(len(INDUSTRY_WORDS)))]
            core += to_new_forms(word) if rng.random() < 0.5 else word
        elif kind < 0.9:
            core += "".join(kanji[int(i)] for i in rng.integers(len(kanji), size=2))
        if core in seen or any(r in core for r in reserved):
            continue
        seen.add(core)
        where = rng.random()
        form = legal[int(rng.integers(len(legal)))]
        names.append(form + core if where < 0.3 else core + form if where < 0.9 else core)
    return names


def _names(n: int, seed: int, open_share: float = 0.0, chunk: int = 4000) -> list[str]:
    """``n`` printed names: generated train-vocabulary firms, each printed once in a random document style; with
    ``open_share > 0`` that share of them (at random positions) are :func:`open_names` instead."""
    rng = np.random.default_rng([seed, 0x4C46])
    names: list[str] = []
    i = 0
    while len(names) < n:
        firms: list[Firm] = generate_firms(min(chunk, max(n - len(names), 2)), seed + i, vocabulary="train")
        for firm in firms:
            names.append(mention(firm, rng, ("directory", "list", "title")[int(rng.integers(3))]))
        i += 1
    names = names[:n]
    if open_share > 0:
        chosen = np.flatnonzero(np.random.default_rng([seed, 0x4F53]).random(n) < open_share)
        if len(chosen):
            for at, name in zip(chosen, open_names(len(chosen), seed), strict=True):
                names[int(at)] = name
    return names


def build_label_free_set(
    n_names: int,
    views: int = 3,
    *,
    seed: int = 0,
    knowledge: Knowledge = Knowledge(),
    fonts: Sequence[str] | None = None,
    variant_rate: float = 0.5,
    legal_rate: float = 0.6,
    error_rate: float = 0.08,
    noise: float = 1.0,
) -> TrainingSet:
    """Render ``views`` views of each of ``n_names`` printed names; the class of a crop is its name.

    Args:
        n_names: Names (classes), ``>= 2``.
        views: Views per name, ``>= 2``; the first keeps the printed text, the others vary it by the knowledge
            sources on.
        seed: Seed of names, variations, renderings and readings.
        knowledge: Which knowledge sources make the views.
        fonts: Typeface families (default: the training faces); with ``typefaces`` off the first one only.
        variant_rate: Chance that a view converts each character with another form (``variants``).
        legal_rate: Chance that a view reprints the legal form (``legal_forms``).
        error_rate: Per-character error rate of the simulated reading (``glyph_noise``; 0 when off).
        noise: Strength of the light rendering noise of :func:`render_crop` (always on, as in every training set).

    Returns:
        The set (name-major); ``firms`` holds one pseudo-firm per name (its printed text), ``info`` the settings.

    Raises:
        ValueError: If counts are out of range.
    """
    if n_names < 2 or views < 2:
        raise ValueError(f"n_names >= 2 and views >= 2 expected, got n_names={n_names}, views={views}")
    start = time.perf_counter()
    font_files: tuple[FontFile, ...] = resolve_training_fonts(fonts)
    if not knowledge.typefaces:
        font_files = font_files[:1]
    names = _names(n_names, seed, OPEN_SHARE if knowledge.open_vocabulary else 0.0)
    pairs = variant_pairs() if knowledge.variants else {}
    chars = "".join(sorted({c for t in names for c in unicodedata.normalize("NFKC", t)} | set(pairs)))
    base_font = font_files[0]
    confusions = glyph_confusions(chars, base_font.path, base_font.index) if knowledge.glyph_noise else {}
    rng = np.random.default_rng([seed, 0x4C414246])
    images, directions, texts, true_texts, labels = [], [], [], [], []
    for label, name in enumerate(names):
        for j in range(views):
            text = name
            if j > 0:
                if knowledge.legal_forms and rng.random() < legal_rate:
                    text = vary_legal_form(text, rng)
                if pairs and rng.random() < variant_rate:
                    text = swap_forms(text, rng, float(rng.uniform(0.3, 1.0)), pairs)
            direction = ("horizontal", "vertical")[int(rng.integers(2))]
            font = font_files[int(rng.integers(len(font_files)))]
            img = render_crop(text, font, direction, rng, noise=noise)
            if knowledge.degradations:
                arr, _ = degrade(np.asarray(img), rng, TRAIN_FAMILY, direction=direction)
                img = Image.fromarray(arr, mode="L")
            reading = (glyph_noise(text, rng, confusions, error_rate) if knowledge.glyph_noise
                       else unicodedata.normalize("NFKC", text))
            images.append(img)
            directions.append(direction)
            texts.append(reading or text[:1])
            true_texts.append(text)
            labels.append(label)
    info = {
        "origin": "label-free names",
        "n_names": n_names,
        "views": views,
        "seed": seed,
        "knowledge": asdict(knowledge),
        "fonts": [f.family for f in font_files],
        "open_share": OPEN_SHARE if knowledge.open_vocabulary else 0.0,
        "open_characters": len(open_inventory()[0]) if knowledge.open_vocabulary else 0,
        "variant_pairs": len(pairs) // 2,
        "variant_rate": variant_rate,
        "legal_rate": legal_rate,
        "error_rate": error_rate if knowledge.glyph_noise else 0.0,
        "degradations": TRAIN_FAMILY.name if knowledge.degradations else None,
    }
    logger.info("rendered %d label-free crops of %d names in %.1fs", len(images), n_names, time.perf_counter() - start)
    return TrainingSet(
        images, directions, texts, true_texts, np.asarray(labels, dtype=np.int64),
        [Firm(entity_id=f"N{i:06d}", canonical=t) for i, t in enumerate(names)], info,
    )


def string_neighbours(texts: Sequence[str], k: int) -> np.ndarray:
    """Each name with its ``k - 1`` most similar other names by character 1-2-gram TF-IDF cosine.

    Args:
        texts: One printed name per class.
        k: Set size, ``1 <= k <= len(texts)``.

    Returns:
        int64 (C, k), as :func:`~linkage_pipeline.multimodal.training.mining.nearest_classes` returns.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer

    if not 1 <= k <= len(texts):
        raise ValueError(f"k must be in [1, {len(texts)}], got {k}")
    norm = [unicodedata.normalize("NFKC", t) for t in texts]
    x = TfidfVectorizer(analyzer="char", ngram_range=(1, 2), lowercase=False).fit_transform(norm).tocsr()
    out = np.empty((len(texts), k), dtype=np.int64)
    for start in range(0, len(texts), 2048):
        sim = (x[start : start + 2048] @ x.T).toarray()
        rows = np.arange(sim.shape[0])
        sim[rows, start + rows] = -np.inf
        top = np.argsort(-sim, axis=1, kind="stable")[:, : k - 1]
        out[start : start + sim.shape[0], 0] = start + rows
        out[start : start + sim.shape[0], 1:] = top
    return out
