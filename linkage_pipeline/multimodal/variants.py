"""Character variants from the Unihan database, and Japanese old/new (旧字体/新字体) forms, as text-side knowledge.

The label-free training stage needs knowledge that no firm label gives: which characters are the same character
printed another way. Two packaged sources give it:

* the Unihan variant tables (``Unihan_Variants.txt``: kTraditionalVariant, kSimplifiedVariant, kZVariant,
  kSemanticVariant, kSpecializedSemanticVariant), loaded by :func:`load_unihan_variants` into a
  :class:`VariantTable` that answers :meth:`VariantTable.variants`, :meth:`VariantTable.equivalence_classes`,
  :meth:`VariantTable.normalise` (a matching key) and :meth:`VariantTable.substitute` (augmentation: an OCR text and
  its variant-substituted form are a positive pair);
* Japanese old -> new pairs (:func:`japanese_old_new`): the hand list
  :data:`linkage_pipeline.synthetic.firms.OLD_NEW_PAIRS`, the official old forms of the 人名用漢字 list (Unihan
  kJinmeiyoKanji ``2010:U+XXXX`` values), and pairs derived from the variant relations where both characters are
  Japanese (in JIS X 0208/0213) and the new side is a 常用漢字 (Unihan kJoyoKanji).

Data location: the Debian package ``unicode-data`` (installed by ``.ci/setup``) ships the Unihan files as
``/usr/share/unicode/Unihan_*.txt.bz2`` (Unicode 15.0 in Debian 12). A directory holding ``Unihan_*.txt``,
``Unihan_*.txt.bz2`` or the upstream ``Unihan.zip`` works too. Nothing is downloaded.

JIS X 0208/0213 repertoire: a character is Japanese here if it encodes with Python's ``shift_jis_2004`` codec
(JIS X 0213:2004, a superset of JIS X 0208). On the CJK ideographs this set equals Unihan's own
``kJis0`` (JIS X 0208) union ``kJIS0213`` fields, 10,051 characters in Unicode 15.0 (checked when this module was
written); the codec needs no data file.

Everything is deterministic: tables are built in file order, outputs are sorted by code point, and randomness comes
only from the caller's generator.
"""

from __future__ import annotations

import bz2
import io
import re
import zipfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from linkage_pipeline.synthetic.firms import OLD_NEW_PAIRS

#: Where the Debian package ``unicode-data`` puts the Unihan files.
UNIHAN_DIR = Path("/usr/share/unicode")
#: Debian package that ships the Unihan files (named in the error when they are missing).
UNIHAN_PACKAGE = "unicode-data"

#: The variant relations read from ``Unihan_Variants.txt`` (kSpoofingVariant is skipped: look-alikes, not variants).
VARIANT_KINDS: tuple[str, ...] = (
    "kTraditionalVariant",
    "kSimplifiedVariant",
    "kZVariant",
    "kSemanticVariant",
    "kSpecializedSemanticVariant",
)
#: Not a Unihan field: the Japanese old -> new pairs a table is built with (``OLD_NEW_PAIRS`` by default), so
#: classes join 澤 and 沢 or 發 and 発, which Unihan does not relate.
JAPANESE_KIND = "japaneseOldNew"
#: Every relation a :class:`VariantTable` holds.
KINDS: tuple[str, ...] = (*VARIANT_KINDS, JAPANESE_KIND)
#: Relations used when a caller names none: every kind except kSpecializedSemanticVariant, whose pairs share a
#: meaning only in some contexts.
DEFAULT_KINDS: tuple[str, ...] = (*VARIANT_KINDS[:4], JAPANESE_KIND)
#: Relations :func:`japanese_old_new` derives pairs from, most trusted first (the order breaks ties).
#: kTraditionalVariant is kSimplifiedVariant read backwards; both are listed because Unihan does not always
#: record both directions.
DERIVED_KINDS: tuple[str, ...] = ("kZVariant", "kSimplifiedVariant", "kTraditionalVariant", "kSemanticVariant")

_CODE_POINT = re.compile(r"U\+([0-9A-F]{4,6})")
_VALUE = re.compile(r"U\+([0-9A-F]{4,6})(?:<[^\s<>]+)?")
_JINMEIYO = re.compile(r"(\d{4})(?::U\+([0-9A-F]{4,6}))?")
_JOYO = re.compile(r"(\d{4})|U\+([0-9A-F]{4,6})")


# --------------------------------------------------------------------------------------------------------------------
# Files


def _candidates(name: str, path: str | Path | None) -> list[tuple[Path, str | None]]:
    """Places ``name`` may be: (file, zip member or None), in the order they are tried."""
    base = UNIHAN_DIR if path is None else Path(path)
    if base.is_dir():
        return [(base / name, None), (base / f"{name}.bz2", None), (base / "Unihan.zip", name)]
    if base.suffix == ".zip":
        return [(base, name)]
    return [(base, None)]


def _read_unihan(name: str, path: str | Path | None) -> tuple[str, str]:
    """Read one Unihan file as text.

    Args:
        name: File name inside the Unihan set, e.g. ``Unihan_Variants.txt``.
        path: ``None`` (the Debian location), a directory, a ``Unihan.zip``, or the file itself (plain or ``.bz2``).

    Returns:
        (where it was read from, for messages; its text).

    Raises:
        FileNotFoundError: If the file is nowhere to be found (names the package to install).
    """
    tried = _candidates(name, path)
    for file, member in tried:
        if not file.is_file():
            continue
        if member is not None:
            with zipfile.ZipFile(file) as archive:
                if member not in archive.namelist():
                    continue
                return f"{file}!{member}", archive.read(member).decode("utf-8")
        if file.suffix == ".bz2":
            with bz2.open(file, "rt", encoding="utf-8") as handle:
                return str(file), handle.read()
        return str(file), file.read_text(encoding="utf-8")
    looked = ", ".join(f"{f}!{m}" if m else str(f) for f, m in tried)
    raise FileNotFoundError(
        f"{name} not found (looked for {looked}); install the Debian package {UNIHAN_PACKAGE} "
        f"(apt-get install {UNIHAN_PACKAGE}; .ci/setup does this) or pass the path of a Unihan directory or zip"
    )


def _records(source: str, text: str) -> Iterator[tuple[int, str, str, str]]:
    """Data lines of a Unihan file as (line number, character, field, value); comments and blank lines skipped.

    Raises:
        ValueError: On a line that is not ``U+XXXX<TAB>kField<TAB>value`` (names the file and line).
    """
    for number, line in enumerate(io.StringIO(text), start=1):
        line = line.rstrip("\r\n")
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split("\t")
        if len(parts) != 3 or not parts[1].startswith("k") or not parts[2]:
            raise ValueError(f"{source} line {number}: expected 'U+XXXX<TAB>kField<TAB>value', got {line!r}")
        match = _CODE_POINT.fullmatch(parts[0])
        if match is None:
            raise ValueError(f"{source} line {number}: bad code point {parts[0]!r}")
        yield number, chr(int(match.group(1), 16)), parts[1], parts[2]


# --------------------------------------------------------------------------------------------------------------------
# Variant table


def _check_kinds(kinds: Iterable[str]) -> tuple[str, ...]:
    """``kinds`` in :data:`KINDS` order, checked and de-duplicated (order-insensitive cache key)."""
    chosen = set(kinds) if not isinstance(kinds, str) else {kinds}
    unknown = sorted(chosen - set(KINDS))
    if unknown:
        raise ValueError(f"unknown variant kind(s) {unknown}; expected some of {list(KINDS)}")
    if not chosen:
        raise ValueError(f"no variant kind chosen; expected some of {list(KINDS)}")
    return tuple(k for k in KINDS if k in chosen)


@dataclass(frozen=True)
class VariantTable:
    """Per character, its Unihan variants by kind.

    The relations are read as written (``entries[kind][ch]`` is the value list of ``ch``'s ``kind`` line, in file
    order, without ``ch`` itself: Unihan lists e.g. 会 as its own simplified form), but :meth:`variants`,
    :meth:`equivalence_classes`, :meth:`normalise` and :meth:`substitute` treat them as undirected: 國's
    kSimplifiedVariant 国 makes 国 a variant of 國 and 國 a variant of 国, whether or not 国's kTraditionalVariant
    line says so.

    Attributes:
        entries: kind -> character -> its variants of that kind, as listed; kind :data:`JAPANESE_KIND` holds the
            Japanese old -> new pairs the table was built with (old -> (new,)).
        preferred: Characters :meth:`normalise` picks as the representative of their class when present (by
            default the new sides of ``OLD_NEW_PAIRS``, so a class holding 国 normalises to 国, not to 囗-something
            with a smaller code point).
        source: Where the table was read from.
    """

    entries: Mapping[str, Mapping[str, tuple[str, ...]]]
    preferred: frozenset[str] = frozenset(new for _, new in OLD_NEW_PAIRS)
    source: str = ""
    _cache: dict[tuple[str, ...], object] = field(default_factory=dict, compare=False, repr=False)

    def _neighbours(self, kinds: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
        key = ("neighbours", *kinds)
        cached = self._cache.get(key)
        if cached is None:
            graph: dict[str, set[str]] = {}
            for kind in kinds:
                for ch, values in self.entries.get(kind, {}).items():
                    for other in values:
                        graph.setdefault(ch, set()).add(other)
                        graph.setdefault(other, set()).add(ch)
            cached = {ch: tuple(sorted(others)) for ch, others in graph.items()}
            self._cache[key] = cached
        return cached  # type: ignore[return-value]

    def variants(self, ch: str, kinds: Iterable[str] = DEFAULT_KINDS) -> tuple[str, ...]:
        """Characters directly related to ``ch`` by any of ``kinds`` (either direction), sorted by code point.

        Args:
            ch: One character.
            kinds: Relations to follow (some of :data:`VARIANT_KINDS`).

        Returns:
            Its variants, without ``ch`` itself; empty when it has none.

        Raises:
            ValueError: If ``ch`` is not one character or a kind is unknown.
        """
        if len(ch) != 1:
            raise ValueError(f"expected one character, got {ch!r}")
        return self._neighbours(_check_kinds(kinds)).get(ch, ())

    def characters(self, kinds: Iterable[str] = DEFAULT_KINDS) -> tuple[str, ...]:
        """Every character with at least one variant under ``kinds``, sorted by code point."""
        return tuple(sorted(self._neighbours(_check_kinds(kinds))))

    def equivalence_classes(self, kinds: Iterable[str] = DEFAULT_KINDS) -> tuple[frozenset[str], ...]:
        """Connected components of the undirected graph of the chosen relations (classes of two or more).

        Args:
            kinds: Relations that join characters (some of :data:`VARIANT_KINDS`).

        Returns:
            The classes, ordered by their smallest code point.
        """
        checked = _check_kinds(kinds)
        key = ("classes", *checked)
        cached = self._cache.get(key)
        if cached is None:
            graph = self._neighbours(checked)
            seen: set[str] = set()
            classes: list[frozenset[str]] = []
            for start in sorted(graph):
                if start in seen:
                    continue
                seen.add(start)
                stack, members = [start], [start]
                while stack:
                    for other in graph[stack.pop()]:
                        if other not in seen:
                            seen.add(other)
                            stack.append(other)
                            members.append(other)
                classes.append(frozenset(members))
            cached = tuple(classes)
            self._cache[key] = cached
        return cached  # type: ignore[return-value]

    def representatives(self, kinds: Iterable[str] = DEFAULT_KINDS) -> dict[str, str]:
        """Character -> the fixed representative of its class (see :meth:`normalise`), for characters in a class."""
        checked = _check_kinds(kinds)
        key = ("representatives", *checked)
        cached = self._cache.get(key)
        if cached is None:
            mapping: dict[str, str] = {}
            for members in self.equivalence_classes(checked):
                head = min(members, key=lambda c: (c not in self.preferred, ord(c)))
                for ch in members:
                    mapping[ch] = head
            cached = mapping
            self._cache[key] = cached
        return cached  # type: ignore[return-value]

    def normalise(self, text: str, kinds: Iterable[str] = DEFAULT_KINDS) -> str:
        """Map every character to a fixed representative of its variant class (a matching key, not display text).

        The representative is the member in :attr:`preferred` (the Japanese 新字体 of ``OLD_NEW_PAIRS`` by
        default) when the class holds one, the smallest code point among those if it holds several, and otherwise
        the class's smallest code point. Characters without variants are kept. Note the classes follow Chinese
        simplification too, so distinct Japanese characters can share a key (後 and 后 both become 后 under the
        default kinds); use fewer kinds (e.g. ``("kZVariant", "kSemanticVariant")``) for a stricter key.

        Args:
            text: Any text.
            kinds: Relations that define the classes.

        Returns:
            The text with each character replaced by its representative (same length).
        """
        mapping = self.representatives(kinds)
        return "".join(mapping.get(ch, ch) for ch in text)

    def substitute(
        self,
        text: str,
        rng: np.random.Generator,
        rate: float,
        kinds: Iterable[str] = DEFAULT_KINDS,
    ) -> str:
        """Replace each character that has variants, with probability ``rate``, by one of them drawn uniformly.

        One draw decides each character with variants (and one more picks the variant when it is replaced);
        characters without variants draw nothing, so the result depends only on ``text``, ``rate`` and the
        generator's state.

        Args:
            text: Any text.
            rng: Randomness.
            rate: Probability in [0, 1] that a character with variants is replaced; 1 replaces every one.
            kinds: Relations whose variants may be drawn.

        Returns:
            The text with some characters replaced by a variant (same length).

        Raises:
            ValueError: If ``rate`` is outside [0, 1].
        """
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"rate must be in [0, 1], got {rate}")
        graph = self._neighbours(_check_kinds(kinds))
        out: list[str] = []
        for ch in text:
            options = graph.get(ch)
            if options and rng.random() < rate:
                out.append(options[int(rng.integers(len(options)))])
            else:
                out.append(ch)
        return "".join(out)


def parse_unihan_variants(text: str, source: str = "<text>") -> dict[str, dict[str, tuple[str, ...]]]:
    """Parse the text of ``Unihan_Variants.txt``.

    Values look like ``U+4E7E<kMatthews,kMeyerWempe U+4E81``: code points, each optionally followed by
    ``<sources``, which are dropped. Fields other than :data:`VARIANT_KINDS` (kSpoofingVariant) are skipped.

    Args:
        text: File content.
        source: Name for error messages.

    Returns:
        kind -> character -> its variants of that kind (file order, duplicates and the character itself dropped).

    Raises:
        ValueError: On a malformed line or value (names ``source`` and the line number).
    """
    entries: dict[str, dict[str, tuple[str, ...]]] = {kind: {} for kind in VARIANT_KINDS}
    for number, ch, kind, value in _records(source, text):
        if kind not in entries:
            continue
        variants: list[str] = []
        for token in value.split(" "):
            match = _VALUE.fullmatch(token)
            if match is None:
                raise ValueError(f"{source} line {number}: bad {kind} value {token!r} in {value!r}")
            other = chr(int(match.group(1), 16))
            if other != ch and other not in variants:
                variants.append(other)
        if ch in entries[kind]:
            raise ValueError(f"{source} line {number}: second {kind} line for U+{ord(ch):04X}")
        if variants:
            entries[kind][ch] = tuple(variants)
    return entries


@lru_cache(maxsize=4)
def load_unihan_variants(
    path: str | Path | None = None,
    preferred: frozenset[str] | None = None,
    japanese_pairs: tuple[tuple[str, str], ...] = OLD_NEW_PAIRS,
) -> VariantTable:
    """Load the Unihan variant table (cached per arguments).

    Args:
        path: ``None`` for the Debian ``unicode-data`` location (:data:`UNIHAN_DIR`), a directory holding
            ``Unihan_Variants.txt[.bz2]`` or ``Unihan.zip``, a ``Unihan.zip``, or the file itself (plain or ``.bz2``).
        preferred: Representatives :meth:`VariantTable.normalise` prefers; ``None`` for the new sides of
            ``OLD_NEW_PAIRS`` (pass e.g. the new sides of :func:`japanese_old_new` for a wider preference).
        japanese_pairs: Old -> new pairs stored as relation :data:`JAPANESE_KIND` (pass :func:`japanese_old_new`
            for the wider set).

    Returns:
        The table.

    Raises:
        FileNotFoundError: If the file is missing (names the package to install).
        ValueError: On a malformed line (names the file and line number).
    """
    source, text = _read_unihan("Unihan_Variants.txt", path)
    entries = parse_unihan_variants(text, source)
    japanese: dict[str, tuple[str, ...]] = {}
    for old, new in japanese_pairs:
        if old != new and new not in japanese.get(old, ()):
            japanese[old] = (*japanese.get(old, ()), new)
    entries[JAPANESE_KIND] = japanese
    if preferred is None:
        return VariantTable(entries=entries, source=source)
    return VariantTable(entries=entries, preferred=frozenset(preferred), source=source)


# --------------------------------------------------------------------------------------------------------------------
# Japanese old/new forms


def in_jis_x_0213(ch: str) -> bool:
    """Whether ``ch`` is in the JIS X 0208/0213 repertoire, i.e. encodes with the ``shift_jis_2004`` codec.

    Args:
        ch: One character.

    Returns:
        True when it encodes (ASCII and kana encode too; callers pass ideographs).
    """
    try:
        ch.encode("shift_jis_2004")
    except UnicodeEncodeError:
        return False
    return True


@dataclass(frozen=True)
class JapaneseKanjiLists:
    """The official Japanese character lists as Unihan records them (``Unihan_OtherMappings.txt``).

    Attributes:
        joyo: 常用漢字 (kJoyoKanji with a year value; the 4 kJoyoKanji ``U+XXXX`` values are 許容字体 of a
            常用漢字, e.g. 剥 for 剝, and are left out).
        jinmeiyo: 人名用漢字 in their own right (kJinmeiyoKanji with a year value only).
        jinmeiyo_old: Old form -> 常用漢字 new form, from kJinmeiyoKanji ``2010:U+XXXX`` values (國 -> 国).
        source: Where they were read from.
    """

    joyo: frozenset[str]
    jinmeiyo: frozenset[str]
    jinmeiyo_old: Mapping[str, str]
    source: str = ""


@lru_cache(maxsize=4)
def load_japanese_lists(path: str | Path | None = None) -> JapaneseKanjiLists:
    """Load the 常用漢字/人名用漢字 fields of ``Unihan_OtherMappings.txt`` (cached).

    Args:
        path: As for :func:`load_unihan_variants` (a directory, ``Unihan.zip`` or the file).

    Returns:
        The lists.

    Raises:
        FileNotFoundError: If the file is missing (names the package to install).
        ValueError: On a malformed kJoyoKanji/kJinmeiyoKanji line (names the file and line number).
    """
    source, text = _read_unihan("Unihan_OtherMappings.txt", path)
    joyo: set[str] = set()
    jinmeiyo: set[str] = set()
    old: dict[str, str] = {}
    wanted = ("\tkJoyoKanji\t", "\tkJinmeiyoKanji\t")
    lines = [line if any(w in line for w in wanted) else "" for line in text.split("\n")]
    for number, ch, kind, value in _records(source, "\n".join(lines)):
        pattern = _JOYO if kind == "kJoyoKanji" else _JINMEIYO
        match = pattern.fullmatch(value)
        if match is None:
            raise ValueError(f"{source} line {number}: bad {kind} value {value!r}")
        if kind == "kJoyoKanji":
            if match.group(1):
                joyo.add(ch)
        elif match.group(2):
            old[ch] = chr(int(match.group(2), 16))
        else:
            jinmeiyo.add(ch)
    return JapaneseKanjiLists(frozenset(joyo), frozenset(jinmeiyo), dict(sorted(old.items())), source)


@lru_cache(maxsize=4)
def japanese_old_new_sources(
    path: str | Path | None = None,
    kinds: tuple[str, ...] = DERIVED_KINDS,
    *,
    include_hand: bool = True,
) -> dict[str, tuple[str, str]]:
    """Old form -> (new form, where the pair comes from); see :func:`japanese_old_new`.

    Sources, most trusted first: ``hand`` (``OLD_NEW_PAIRS``), ``jinmeiyo`` (kJinmeiyoKanji old forms), then one
    per Unihan relation in ``kinds``. A derived pair (old, new) needs: both characters in JIS X 0208/0213
    (:func:`in_jis_x_0213`); new a 常用漢字; old neither 常用漢字 nor 人名用漢字 in its own right; an edge between
    them of that kind, and for kSimplifiedVariant/kTraditionalVariant the right direction (new is the simplified
    form of old), so a Chinese simplification that happens to be in JIS (几 for 幾) is never taken as a 新字体.
    An old form already paired by a more trusted source keeps that pair; an old form with two candidate new forms
    over all of ``kinds`` (并 -> 並/併, 麵 -> 面 (Chinese) / 麺) is left out. Derived pairs are noisier than the
    first two sources: besides true 旧字体 they hold 異体字 (窻 -> 窓), 大字 (貳 -> 二), 書きかえ (煖 -> 暖) and some
    Chinese mergers of distinct Japanese characters (鬆 -> 松); pass ``kinds=()`` for the curated pairs only.

    Args:
        path: As for :func:`load_unihan_variants` (a directory or ``Unihan.zip``; both files are read).
        kinds: Relations to derive pairs from, in trust order (some of :data:`VARIANT_KINDS`).
        include_hand: Start from the hand list. ``False`` gives what the Unicode data alone yields (the label-free
            training uses that, since the hand list is the list the project's corpus generator prints).

    Returns:
        Old -> (new, source), ordered as the sources, then by the old form's code point.
    """
    unknown = sorted(set(kinds) - set(VARIANT_KINDS))
    if unknown:
        raise ValueError(f"unknown Unihan variant kind(s) {unknown}; expected some of {list(VARIANT_KINDS)}")
    table = load_unihan_variants(path)
    lists = load_japanese_lists(path)
    standard = lists.joyo | lists.jinmeiyo
    out: dict[str, tuple[str, str]] = {old: (new, "hand") for old, new in OLD_NEW_PAIRS} if include_hand else {}
    for old, new in lists.jinmeiyo_old.items():
        # Only old forms of 常用漢字; kJinmeiyoKanji also links pairs of 人名用漢字 variants (萌/萠, 遥/遙).
        if old not in out and new in lists.joyo and in_jis_x_0213(old) and in_jis_x_0213(new):
            out[old] = (new, "jinmeiyo")
    candidates: dict[str, dict[str, str]] = {}  # old -> new -> most trusted kind giving the pair
    for kind in kinds:
        for ch, values in table.entries.get(kind, {}).items():
            for other in values:
                if kind == "kSimplifiedVariant":
                    pairs = [(ch, other)]
                elif kind == "kTraditionalVariant":
                    pairs = [(other, ch)]
                else:
                    pairs = [(ch, other), (other, ch)]
                for old, new in pairs:
                    if new in lists.joyo and old not in standard and in_jis_x_0213(old) and in_jis_x_0213(new):
                        candidates.setdefault(old, {}).setdefault(new, kind)
    new_forms = {new for new, _ in out.values()}
    derived: list[tuple[int, str, str, str]] = []
    for old, news in candidates.items():
        if old in out or old in new_forms or len(news) != 1:
            continue  # decided by a more trusted source, a new form itself, or ambiguous (麵 -> 面 or 麺)
        (new, kind), = news.items()
        derived.append((kinds.index(kind), old, new, kind))
    for _, old, new, kind in sorted(derived, key=lambda d: (d[0], ord(d[1]))):
        out[old] = (new, kind)
    return out


def japanese_old_new(
    path: str | Path | None = None,
    kinds: tuple[str, ...] = DERIVED_KINDS,
) -> tuple[tuple[str, str], ...]:
    """Japanese 旧字体 -> 新字体 pairs: ``OLD_NEW_PAIRS`` plus pairs from Unihan (see
    :func:`japanese_old_new_sources` for the rules).

    Unihan relates many old forms only to Chinese forms (會's kSimplifiedVariant is 会, which is also the
    Japanese form, but 發's is 发, which is not Japanese), so derived pairs keep only characters in JIS X
    0208/0213 whose new side is a 常用漢字; 澤 -> 沢 has no Unihan relation at all and comes from the hand list.

    Args:
        path: As for :func:`load_unihan_variants` (a directory or ``Unihan.zip``).
        kinds: Relations to derive pairs from, in trust order.

    Returns:
        (old, new) pairs, one per old form, ``OLD_NEW_PAIRS`` first in its order, then by source and code point.
    """
    return tuple((old, new) for old, (new, _) in japanese_old_new_sources(path, kinds).items())
