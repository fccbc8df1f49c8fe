"""How a crop becomes model input: padding to a square, character tiles, grid layout."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass

import numpy as np
from PIL import Image

from linkage_pipeline.documents.crops import (
    border_colour,
    column_extent,
    ink_extent,
    ink_mask,
    pad_to_square,
    turned_in_vertical,
    vertical_cells,
)


@dataclass(frozen=True)
class Preprocessing:
    """How crops become pixel tensors.

    Attributes:
        image_size: Side of the square model input, pixels.
        mean: Per-channel mean subtracted after scaling to [0, 1].
        std: Per-channel standard deviation divided by.
        reflow_vertical: Re-flow vertical crops into one horizontal line before padding (DESIGN section 4).
        text_prefix_cls: Prepend ``[CLS]`` and add no other special token (rinna's tokenisation).
        max_length: Longest token sequence.
        layout: ``line`` (the crop as printed, vertical crops re-flowed into one line) or ``grid`` (the
            character cells laid out row-major in a grid of ``grid_cols`` columns, each cell padded to a square
            of side ``image_size // grid_cols``, so a character keeps that many pixels whatever the name's
            length); the line or grid is then padded to a square, never squashed.
        grid_cols: Columns of the ``grid`` layout.
        text_fold: (old, new) character pairs replaced in every text before the text tower reads it, one per old
            character (for the shipped model, the 旧字体 -> 新字体 table of
            :func:`~linkage_pipeline.multimodal.variants.japanese_old_new`): the text side then sees 會社 and
            会社 as the same string. Empty: no folding.
            Part of the model's identity (:func:`model_identity`), so embeddings made without the fold are
            never reused with it.
        text_drop: Strings the text tower also reads each text without (for the shipped model, the legal forms
            of :data:`~linkage_pipeline.multimodal.training.label_free.LEGAL_FORM_LEXICON`): a text that holds one
            is embedded as the L2-normalised mean of its own embedding and that of the text with every such
            string removed (after the fold), so that 合名会社極東造船所 and 極東造船所 meet halfway wherever the form
            is printed. A text that holds none, or holds nothing else, is embedded once, as before. Empty: off.
            Part of the model's identity.
    """

    image_size: int = 80
    # Paper maps to about 0 and ink to about -2.5: with a large constant background every crop starts
    # out nearly identical to a random ViT (cosine 0.999), and CLIP pretraining sits at the uniform loss.
    mean: tuple[float, float, float] = (0.85, 0.85, 0.85)
    std: tuple[float, float, float] = (0.3, 0.3, 0.3)
    reflow_vertical: bool = True
    text_prefix_cls: bool = False
    max_length: int = 48
    layout: str = "line"
    grid_cols: int = 4
    text_fold: tuple[tuple[str, str], ...] = ()
    text_drop: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        bad = [pair for pair in self.text_fold
               if len(pair) != 2 or not all(isinstance(c, str) and len(c) == 1 for c in pair)]
        if bad:
            raise ValueError(f"text_fold must hold (old, new) pairs of single characters, got {bad[:3]}")
        olds = [old for old, _ in self.text_fold]
        if len(set(olds)) != len(olds):
            raise ValueError("text_fold names an old character twice; expected one new form per old character")
        if not all(isinstance(x, str) and x.strip() for x in self.text_drop):
            raise ValueError(f"text_drop must hold non-empty strings, got {list(self.text_drop)[:5]}")
        if self.layout not in ("line", "grid"):
            raise ValueError(f"layout must be 'line' or 'grid', got {self.layout!r}")
        if self.grid_cols < 1 or self.image_size // self.grid_cols < 4:
            raise ValueError(f"grid_cols={self.grid_cols} leaves cells under 4 px at image_size={self.image_size}")


def text_translation(preprocessing: Preprocessing) -> dict[int, str]:
    """The ``str.translate`` table of ``preprocessing.text_fold`` (empty without a fold)."""
    return {ord(old): new for old, new in preprocessing.text_fold}


def text_without(preprocessing: Preprocessing, texts: list[str]) -> list[str | None]:
    """Each text with every string of ``preprocessing.text_drop`` (as given and as folded by ``text_fold``)
    removed, longest first, and the spaces around it trimmed; ``None`` where nothing was removed or nothing
    would remain. The result is folded later, with the text, by the encoder."""
    if not preprocessing.text_drop:
        return [None] * len(texts)
    table = text_translation(preprocessing)
    strings = set(preprocessing.text_drop) | {x.translate(table) for x in preprocessing.text_drop}
    pattern = re.compile("|".join(re.escape(x) for x in sorted(strings, key=len, reverse=True)))
    out: list[str | None] = []
    for text in texts:
        folded = text.translate(table).strip() if isinstance(text, str) else ""
        rest = pattern.sub("", folded).strip()
        out.append(rest if rest and rest != folded else None)
    return out


def preprocessing_from_json(raw: dict) -> Preprocessing:
    """A :class:`Preprocessing` from its ``preprocessing.json`` dict (lists read back as tuples)."""
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()}
    if "text_fold" in values:
        values["text_fold"] = tuple(tuple(pair) for pair in values["text_fold"])
    return Preprocessing(**values)


def model_identity(weights_sha256: str, preprocessing: Preprocessing) -> str:
    """A model's id: the SHA-256 of its weights file, or, when its preprocessing folds texts or drops strings
    from them, the SHA-256 of that hash and the fold table (and the dropped strings) together: the same weights
    read different text, so their embeddings differ."""
    if not preprocessing.text_fold and not preprocessing.text_drop:
        return weights_sha256
    key = weights_sha256
    if preprocessing.text_fold:
        table = json.dumps([list(pair) for pair in preprocessing.text_fold], ensure_ascii=False)
        key += f"\ntext_fold:{table}"
    if preprocessing.text_drop:
        key += "\ntext_drop:" + json.dumps(list(preprocessing.text_drop), ensure_ascii=False)
    return hashlib.sha256(key.encode()).hexdigest()


# ---------------------------------------------------------------------------------------------- grid layout
def character_tiles(img: Image.Image, direction: str) -> tuple[list[Image.Image], int]:
    """Cut a text crop (``L``) into one tile per character cell, in reading order, and its border colour.

    Vertical crops are cut by :func:`~linkage_pipeline.documents.crops.vertical_cells` (over the column's ink width; a
    glyph that vertical setting turns is turned back); horizontal crops by the same projection cut applied to
    the crop turned a quarter (over the line's ink height). A crop without ink is one tile.
    """
    background = border_colour(img)
    bg = int(background if isinstance(background, int) else background[0])
    mask = ink_mask(img)  # once: the cuts and the turned-glyph test both read it
    if direction == "vertical":
        cells = vertical_cells(img, mask=mask)
        if not cells:
            return [img], bg
        left, right = column_extent(mask)
        tiles = []
        for top, bottom in cells:
            tile = img.crop((left, top, right, bottom))
            if turned_in_vertical(mask[top:bottom, left:right], right - left):
                tile = tile.rotate(90, expand=True, fillcolor=bg)
            tiles.append(tile)
        return tiles, bg
    # Turned a quarter clockwise, the line reads top to bottom; cell rows there are columns here.
    # the ink mask of the turned crop is the mask turned: Otsu, the border test and 8-connected specks do not
    # depend on orientation
    cells = vertical_cells(img.transpose(Image.Transpose.ROTATE_270), mask=np.rot90(mask, k=-1))
    if not cells:
        return [img], bg
    # the line's rows, as the cuts saw them: a neighbouring line's strokes at the top or bottom edge are left out
    y0, y1 = ink_extent(mask.T)
    return [img.crop((left, y0, right, y1)) for left, right in cells], bg


def grid_layout(img: Image.Image, direction: str, size: int, cols: int) -> Image.Image:
    """The ``grid`` layout of :class:`Preprocessing`: character cells row-major in ``cols`` columns, square.

    Returns:
        ``L`` image of side ``size``: cells of side ``size // cols`` (each tile padded to a square, never
        squashed), the grid padded to a square with the border colour and resized to ``size`` (a no-op up to
        ``cols`` rows; names longer than ``cols * cols`` characters shrink).
    """
    tiles, bg = character_tiles(img, direction)
    cell = max(4, size // cols)
    n_cols = min(cols, len(tiles))
    n_rows = -(-len(tiles) // cols)
    canvas = Image.new("L", (n_cols * cell, n_rows * cell), bg)
    inner = cell - 2
    for i, tile in enumerate(tiles):
        square = pad_to_square(tile, fill=bg).resize((inner, inner), Image.Resampling.BILINEAR)
        canvas.paste(square, ((i % cols) * cell + 1, (i // cols) * cell + 1))
    return pad_to_square(canvas, fill=bg).resize((size, size), Image.Resampling.BILINEAR)
