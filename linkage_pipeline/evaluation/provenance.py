"""A contact sheet of record links for reviewers: both crops side by side with their texts, score and method."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFont

from linkage_pipeline.schema import require_columns

logger = logging.getLogger(__name__)


_ROW_HEIGHT = 72
_CROP_BOX = (260, 60)
_WIDTH = 1100


def sample_links(provenance: pd.DataFrame, n: int = 12) -> pd.DataFrame:
    """``n`` rank-1 links spread evenly over the score range (accepted and no-match), lowest score first.

    Deterministic: the same table gives the same sample.
    """
    require_columns(provenance, ("query_crop_id", "rank", "score"), "provenance")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    top = provenance[provenance["rank"] == 1].sort_values(["score", "query_crop_id"]).reset_index(drop=True)
    if len(top) <= n:
        return top
    idx = np.unique(np.round(np.linspace(0, len(top) - 1, n)).astype(int))
    return top.iloc[idx].reset_index(drop=True)


def _font(size: int) -> ImageFont.ImageFont:
    from linkage_pipeline.synthetic.fonts import MissingFontError, find_font

    for family in ("Noto Sans CJK JP", "IPAGothic", "VL Gothic"):
        try:
            f = find_font(family)
            return ImageFont.truetype(f.path, size, index=f.index)
        except (MissingFontError, OSError):
            continue
    logger.warning("no Japanese font found for the contact sheet; texts may show as boxes")
    return ImageFont.load_default()


def _fit(path: object, box: tuple[int, int]) -> Image.Image | None:
    if not isinstance(path, str) or not path:
        return None
    try:
        with Image.open(path) as im:
            img = im.convert("L")
    except OSError:
        return None
    if img.height > img.width * 1.5:  # a vertical column: re-flow its characters into one upright line
        from linkage_pipeline.documents.crops import reflow_vertical

        try:
            img = reflow_vertical(img)
        except ValueError:
            img = img.rotate(90, expand=True)
    img.thumbnail(box)
    return img


def contact_sheet(links: pd.DataFrame, out_path: str | Path) -> Path:
    """Draw one row per link: query crop, target crop, their texts, score, method and whether it was accepted.

    Args:
        links: ``mart_link_provenance`` rows (e.g. from :func:`sample_links`).
        out_path: PNG to write (parent created).

    Returns:
        ``out_path``.
    """
    require_columns(
        links,
        ("query_crop_path", "target_crop_path", "query_text", "target_text", "score", "matched", "method", "ocr"),
        "links",
    )
    font, small = _font(18), _font(14)
    sheet = Image.new("RGB", (_WIDTH, _ROW_HEIGHT * max(len(links), 1) + 8), "white")
    draw = ImageDraw.Draw(sheet)
    for i, row in enumerate(links.itertuples(index=False)):
        y = 4 + i * _ROW_HEIGHT
        for x, path in ((8, row.query_crop_path), (8 + _CROP_BOX[0] + 16, row.target_crop_path)):
            crop = _fit(path, _CROP_BOX)
            if crop is not None:
                sheet.paste(crop.convert("RGB"), (x, y + (_CROP_BOX[1] - crop.height) // 2))
            else:
                draw.rectangle((x, y, x + _CROP_BOX[0], y + _CROP_BOX[1]), outline="grey")
        tx = 8 + 2 * (_CROP_BOX[0] + 16)
        status = "linked" if bool(row.matched) else "no match"
        colour = (0, 110, 0) if bool(row.matched) else (170, 0, 0)
        draw.text((tx, y + 2), f"{row.query_text or ''}  →  {row.target_text or ''}", fill="black", font=font)
        draw.text((tx, y + 30), f"{status}   score {float(row.score):.3f}   {row.method} / {row.ocr}", fill=colour,
                  font=small)
        draw.line((0, y + _ROW_HEIGHT - 4, _WIDTH, y + _ROW_HEIGHT - 4), fill=(225, 225, 225))
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    sheet.save(tmp, format="PNG")
    tmp.replace(out)
    return out
