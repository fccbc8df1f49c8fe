"""The Japanese typefaces the synthetic corpus and the training crops are set in, found through fontconfig."""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from fontTools.ttLib import TTFont
from PIL import ImageFont

logger = logging.getLogger(__name__)


#: Typefaces of the demo corpus. BIZ UD and IPAex are kept out so a held-out corpus can use unseen faces.
DEMO_FONTS: tuple[str, ...] = ("Noto Serif CJK JP", "IPAMincho", "Ume Mincho", "IPAGothic", "VL Gothic")
#: Typefaces for a held-out corpus (none of them is in DEMO_FONTS).
HELDOUT_FONTS: tuple[str, ...] = ("BIZ UDMincho", "IPAexMincho", "BIZ UDGothic")
#: Typefaces of the dense demo corpus (``style="dense"``): Mincho and Gothic faces of many foundries and eras, so
#: a detector or reader does not learn one design. None of them is in DENSE_HELDOUT_FONTS or HELDOUT_FONTS.
DENSE_DEMO_FONTS: tuple[str, ...] = (
    "Noto Serif CJK JP", "Noto Sans CJK JP", "IPAMincho", "IPAPMincho", "IPAGothic", "IPAPGothic",
    "IPAmjMincho", "TakaoMincho", "TakaoPGothic", "Ume Mincho", "Ume Mincho S3", "Ume Gothic",
    "Ume Gothic C4", "Ume Hy Gothic", "VL Gothic", "VL PGothic", "HanaMinA", "MotoyaLCedar",
    "Sawarabi Mincho", "Sawarabi Gothic", "Dejima",
)
#: Typefaces of a held-out dense corpus: designs the dense demo never uses (BIZ UD, IPAex, a Meiji-style
#: Mincho, an M+-based Gothic).
DENSE_HELDOUT_FONTS: tuple[str, ...] = (
    "BIZ UDMincho", "BIZ UDPMincho", "BIZ UDGothic", "BIZ UDPGothic", "IPAexMincho", "IPAexGothic",
    "Oradano-mincho-GSRR", "Migu 1M",
)
#: Used, if installed, for the few characters a chosen typeface lacks (e.g. ㈴ in IPAMincho).
FALLBACK_FONTS: tuple[str, ...] = ("Noto Serif CJK JP", "Noto Sans CJK JP", "IPAexMincho", "BIZ UDMincho")

#: Debian/Ubuntu packages that provide each family (for the error message when one is missing).
FONT_PACKAGES: dict[str, str] = {
    "Noto Serif CJK JP": "fonts-noto-cjk",
    "Noto Sans CJK JP": "fonts-noto-cjk",
    "IPAMincho": "fonts-ipafont-mincho",
    "IPAGothic": "fonts-ipafont-gothic",
    "IPAexMincho": "fonts-ipaexfont-mincho",
    "IPAexGothic": "fonts-ipaexfont-gothic",
    "VL Gothic": "fonts-vlgothic",
    "Ume Mincho": "fonts-horai-umefont",
    "Ume Gothic": "fonts-horai-umefont",
    "BIZ UDMincho": "fonts-morisawa-bizud-mincho",
    "BIZ UDGothic": "fonts-morisawa-bizud-gothic",
    "BIZ UDPMincho": "fonts-morisawa-bizud-mincho",
    "BIZ UDPGothic": "fonts-morisawa-bizud-gothic",
    "IPAPMincho": "fonts-ipafont-mincho",
    "IPAPGothic": "fonts-ipafont-gothic",
    "IPAmjMincho": "fonts-ipamj-mincho",
    "TakaoMincho": "fonts-takao-mincho",
    "TakaoPGothic": "fonts-takao-gothic",
    "Ume Mincho S3": "fonts-horai-umefont",
    "Ume Gothic C4": "fonts-horai-umefont",
    "Ume Hy Gothic": "fonts-horai-umefont",
    "VL PGothic": "fonts-vlgothic",
    "HanaMinA": "fonts-hanazono",
    "MotoyaLCedar": "fonts-motoya-l-cedar",
    "Sawarabi Mincho": "fonts-sawarabi-mincho",
    "Sawarabi Gothic": "fonts-sawarabi-gothic",
    "Dejima": "fonts-dejima-mincho",
    "Oradano-mincho-GSRR": "fonts-oradano-mincho-gsrr",
    "Migu 1M": "fonts-migmix",
    "Ume P Mincho": "fonts-horai-umefont",
    "Ume Gothic O5": "fonts-horai-umefont",
    "Ume Gothic S4": "fonts-horai-umefont",
    "Ume Gothic C5": "fonts-horai-umefont",
    "TakaoGothic": "fonts-takao-gothic",
    "TakaoPMincho": "fonts-takao-mincho",
    "Noto Sans Mono CJK JP": "fonts-noto-cjk",
}


def corpus_fonts(style: str = "sparse", heldout: bool = False) -> tuple[str, ...]:
    """The typefaces a generated corpus of ``style`` is set in.

    Args:
        style: ``sparse`` or ``dense`` (see :func:`~linkage_pipeline.synthetic.corpus.generate_corpus`).
        heldout: The held-out faces (never used by the demo corpora nor in training) instead of the demo ones.

    Returns:
        Family names.

    Raises:
        ValueError: If ``style`` is unknown.
    """
    if style == "sparse":
        return HELDOUT_FONTS if heldout else DEMO_FONTS
    if style == "dense":
        return DENSE_HELDOUT_FONTS if heldout else DENSE_DEMO_FONTS
    raise ValueError(f"unknown corpus style {style!r}; expected 'sparse' or 'dense'")


class MissingFontError(FileNotFoundError):
    """A requested typeface is not installed (fontconfig does not know it)."""


@dataclass(frozen=True)
class FontFile:
    """One installed typeface: its family name, file and face index inside a collection (.ttc)."""

    family: str
    path: str
    index: int = 0


# ----------------------------------------------------------------------------------------------------- fonts
def _fc_list(family: str) -> list[tuple[str, int, str, str]]:
    """Installed faces of ``family`` as ``(path, index, families, style)``, via fontconfig's fc-list."""
    try:
        out = subprocess.run(
            ["fc-list", "--format", "%{file}|%{index}|%{family}|%{style}\n", f":family={family}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except FileNotFoundError as exc:
        raise MissingFontError(
            "fc-list (fontconfig) is not installed; install it with `apt-get install fontconfig`"
        ) from exc
    faces = []
    for line in out.splitlines():
        parts = line.split("|")
        if len(parts) != 4:
            continue
        path, index, families, style = parts
        if family in [f.strip() for f in families.split(",")]:
            faces.append((path, int(index or 0), families, style))
    return faces


@lru_cache(maxsize=64)
def find_font(family: str) -> FontFile:
    """Locate an installed typeface by family name (or accept a path to a .ttf/.otf/.ttc file).

    Args:
        family: A fontconfig family name such as ``"IPAMincho"``, or a font file path.

    Returns:
        The font file; a regular-weight face where the family has several.

    Raises:
        MissingFontError: If fontconfig knows no such family (the message names the apt package).
    """
    if family.lower().endswith((".ttf", ".otf", ".ttc")):
        if not Path(family).is_file():
            raise MissingFontError(f"font file {family!r} does not exist")
        return FontFile(Path(family).stem, family, 0)
    faces = _fc_list(family)
    if not faces:
        raise MissingFontError(_missing_message([family]))

    def rank(face: tuple[str, int, str, str]) -> tuple[int, str, int]:
        styles = face[3].lower()
        return (0 if ("regular" in styles or "book" in styles) else 1, face[0], face[1])

    path, index, _, _ = sorted(faces, key=rank)[0]
    return FontFile(family, path, index)


def _missing_message(families: Sequence[str]) -> str:
    known = sorted({FONT_PACKAGES[f] for f in families if f in FONT_PACKAGES})
    install = f"`apt-get install {' '.join(known)}`" if known else "the package that provides them"
    return (
        f"Japanese font families not installed: {', '.join(families)}. "
        f"Install {install} (Debian/Ubuntu), check with `fc-list :lang=ja family`, "
        "or pass installed families in `fonts`."
    )


def resolve_fonts(families: Sequence[str]) -> tuple[FontFile, ...]:
    """Locate every family, reporting all missing ones at once.

    Args:
        families: Family names (or font file paths), at least one.

    Returns:
        One FontFile per family, in order.

    Raises:
        ValueError: If ``families`` is empty.
        MissingFontError: If any family is not installed.
    """
    if isinstance(families, str) or len(families) == 0:
        raise ValueError(f"fonts must be a non-empty sequence of family names, got {families!r}")
    found, missing, problems = [], [], []
    for fam in families:
        try:
            found.append(find_font(fam))
        except MissingFontError as exc:
            if fam.lower().endswith((".ttf", ".otf", ".ttc")):
                problems.append(str(exc))
            else:
                missing.append(fam)
    if missing:
        problems.insert(0, _missing_message(missing))
    if problems:
        raise MissingFontError(" ".join(problems))
    return tuple(found)


@lru_cache(maxsize=32)
def font_cmap(path: str, index: int) -> frozenset[int]:
    font = TTFont(path, fontNumber=index, lazy=True)
    try:
        return frozenset(font.getBestCmap() or {})
    finally:
        font.close()


@lru_cache(maxsize=256)
def pil_font(path: str, index: int, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, size=size, index=index, layout_engine=ImageFont.Layout.BASIC)


#: Typefaces of the training renderings: every Japanese face Debian ships that no held-out corpus uses (the dense
#: demo's 21 and 7 more cuts of the Ume, Takao and Noto families), Mincho and Gothic, proportional and fixed. The
#: held-out faces (BIZ UD, IPAex, Oradano, and the M+-based Migu and MigMix families) stay unseen.
TRAIN_FONTS: tuple[str, ...] = (
    *DENSE_DEMO_FONTS,
    "Ume P Mincho", "Ume Gothic O5", "Ume Gothic S4", "Ume Gothic C5", "TakaoGothic", "TakaoPMincho",
    "Noto Sans Mono CJK JP",
)


# -------------------------------------------------------------------------------------------- rendering
def resolve_training_fonts(families: Sequence[str] | None = None) -> tuple[FontFile, ...]:
    """Installed typefaces among ``families`` (default :data:`TRAIN_FONTS`); missing ones are skipped.

    Raises:
        ValueError: If none of them is installed.
    """
    fams = TRAIN_FONTS if families is None else tuple(families)
    found = []
    for fam in fams:
        try:
            found.append(find_font(fam))
        except MissingFontError:
            logger.warning("training font %r is not installed; skipping it", fam)
    if not found:
        raise ValueError(f"none of the training fonts {list(fams)} is installed; expected at least one")
    return tuple(found)
