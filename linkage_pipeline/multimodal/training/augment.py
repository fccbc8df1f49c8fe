"""Training crops rendered from firm names, and simulated OCR of them."""

from __future__ import annotations

import unicodedata
from functools import lru_cache
from typing import Any

import cv2
import numpy as np
from PIL import Image

from linkage_pipeline.synthetic.firms import (
    CONFUSABLE_INDUSTRIES,
    CONFUSABLE_STEMS,
    OLD_NEW_PAIRS,
)
from linkage_pipeline.synthetic.fonts import (
    FontFile,
)


@lru_cache(maxsize=8)
def _typeset(fonts: tuple[FontFile, ...]) -> Any:
    from linkage_pipeline.synthetic import corpus

    return corpus._Typeset(fonts)


def render_crop(
    text: str,
    font: FontFile,
    direction: str,
    rng: np.random.Generator,
    *,
    size: int | None = None,
    noise: float = 1.0,
) -> Image.Image:
    """Render one firm name as a scanned crop with light augmentations.

    Args:
        text: The printed name (non-empty).
        font: Typeface.
        direction: ``horizontal`` or ``vertical`` (one column, top to bottom).
        rng: Randomness (type size, spacing, ink, paper, blur, rotation, speckle).
        size: Type size in pixels; ``None`` draws 22..40.
        noise: Augmentation strength, 0 = clean.

    Returns:
        Greyscale (mode ``L``) crop with a small paper margin, dark ink on light paper.

    Raises:
        ValueError: If ``text`` is empty or ``direction`` unknown.
    """
    from linkage_pipeline.synthetic import corpus

    if not text:
        raise ValueError("text is empty; expected a firm name to render")
    if direction not in ("horizontal", "vertical"):
        raise ValueError(f"direction must be 'horizontal' or 'vertical', got {direction!r}")
    size = int(rng.integers(22, 41)) if size is None else size
    spacing = float(rng.uniform(0.0, 0.25))
    bold = bool(rng.random() < 0.2)
    ink = corpus._render_run(_typeset((font,)), font, text, size, direction, spacing, bold, rng)
    margin = int(rng.integers(2, 9))
    ink = np.pad(ink, margin)
    h, w = ink.shape
    if noise > 0:
        angle = float(rng.uniform(-1.5, 1.5)) * noise
        m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
        ink = cv2.warpAffine(ink, m, (w, h), flags=cv2.INTER_LINEAR, borderValue=0)
        if rng.random() < 0.3:
            ink = (
                cv2.erode(ink, np.ones((2, 2), np.uint8))
                if rng.random() < 0.5
                else cv2.dilate(ink, np.ones((2, 2), np.uint8))
            )
    paper, tone = float(rng.uniform(200, 245)), float(rng.uniform(15, 70))
    img = paper * (1 - ink) + tone * ink
    if noise > 0:
        img = cv2.GaussianBlur(img.astype(np.float32), (0, 0), float(rng.uniform(0.3, 1.1)) * min(noise, 1.5))
        scale = float(rng.uniform(0.45, 1.0)) ** min(noise, 1.5)
        small = cv2.resize(img, (max(1, int(w * scale)), max(1, int(h * scale))), interpolation=cv2.INTER_AREA)
        img = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
        n_speck = int(noise * rng.uniform(0, 0.004) * h * w)
        ys, xs = rng.integers(0, h, n_speck), rng.integers(0, w, n_speck)
        img[ys, xs] = np.minimum(img[ys, xs], rng.uniform(40, 160, n_speck).astype(np.float32))
        img = img + rng.normal(0.0, 4.0 * noise, size=(h, w)).astype(np.float32)
    return Image.fromarray(np.clip(np.rint(img), 0, 255).astype(np.uint8), mode="L")


# ------------------------------------------------------------------------------------------ OCR noise
def _confusion_table() -> dict[str, tuple[str, ...]]:
    """Characters an OCR engine plausibly reads for each other: old/new forms and confusable name parts."""
    table: dict[str, set[str]] = {}

    def link(a: str, b: str) -> None:
        if len(a) == len(b):
            for x, y in zip(a, b, strict=True):
                if x != y:
                    table.setdefault(x, set()).add(y)
                    table.setdefault(y, set()).add(x)

    for a, b in (*OLD_NEW_PAIRS, *CONFUSABLE_STEMS, *CONFUSABLE_INDUSTRIES):
        link(a, b)
    return {k: tuple(sorted(v)) for k, v in table.items()}


_CONFUSIONS = _confusion_table()


def simulate_ocr(text: str, rng: np.random.Generator, *, error_rate: float = 0.08) -> str:
    """A cheap stand-in for OCR: NFKC text with character substitutions, drops and insertions.

    Args:
        text: The true printed text.
        rng: Randomness.
        error_rate: Probability of an error at each character, in [0, 1].

    Returns:
        The noisy reading (NFKC, as the OCR engines return it); may be empty for very short texts.

    Raises:
        ValueError: If ``error_rate`` is outside [0, 1].
    """
    if not 0.0 <= error_rate <= 1.0:
        raise ValueError(f"error_rate must be in [0, 1], got {error_rate}")
    out: list[str] = []
    for ch in unicodedata.normalize("NFKC", text):
        if rng.random() >= error_rate:
            out.append(ch)
            continue
        kind = rng.random()
        if kind < 0.6:
            options = _CONFUSIONS.get(ch)
            out.append(options[int(rng.integers(len(options)))] if options else "〓")
        elif kind < 0.85:
            continue  # dropped
        else:
            out.extend((ch, ch if rng.random() < 0.5 else "・"))
    return "".join(out)
