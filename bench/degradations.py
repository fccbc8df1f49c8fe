"""Which scan degradation the image tower does not hold up against: image-only linking, one operation at a time.

Usage:
    .venv/bin/python bench/degradations.py [--model DIR] [--firms 100] [--family heldout|train] [--json out.json]

``--firms`` firms of the ``heldout`` vocabulary (never used in training) are printed as a supplier list prints them
(horizontal) and as a directory prints them (vertical, old forms) in each of ``--faces`` (held-out typefaces by
default). Each list crop is linked to the nearest directory crop of its typeface by the image embedding alone
(top-1; every query's firm is present). The crops are linked undegraded, degraded by the whole train family, by
the whole held-out family, and by each operation of ``--family`` alone (applied to every crop, at a strength drawn
from that family's range). No OCR is run, so this takes about a minute per model.

It measures the image tower, not the linkage: the multimodal rows of ``bench/typefaces.py`` and
``bench/cross_corpus.py`` are what a user gets. The rows say where the image side loses its links, e.g. a crop that
caught a neighbouring line, shading, or a name cut short.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from linkage_pipeline.multimodal.checkpoints import shipped_model_dir
from linkage_pipeline.multimodal.encoder import MultimodalEncoder
from linkage_pipeline.multimodal.training.augment import render_crop
from linkage_pipeline.multimodal.training.degrade import (
    FAMILIES,
    OP_ORDER,
    Family,
    OpSpec,
    degrade,
)
from linkage_pipeline.synthetic import fonts as font_lists
from linkage_pipeline.synthetic.firms import generate_firms, mention

DEFAULT_FACES = ("BIZ UDMincho", "IPAexGothic")


def renders(faces: tuple[str, ...], n_firms: int, seed: int) -> dict[str, list[tuple[np.ndarray, str]]]:
    """Per face: the list crops of ``n_firms`` held-out firms, then their directory crops (row i and n + i: one firm)."""
    firms = generate_firms(n_firms, seed, vocabulary="heldout")
    out = {}
    for face in faces:
        font = font_lists.find_font(face)
        rng = np.random.default_rng([seed, 1])
        rows = []
        for style, direction in (("list", "horizontal"), ("directory", "vertical")):
            for firm in firms:
                rows.append((np.asarray(render_crop(mention(firm, rng, style), font, direction, rng)), direction))
        out[face] = rows
    return out


def conditions(family: Family) -> dict[str, Family | None]:
    """``none``, the two whole families, then each operation of ``family`` alone (probability 1, its range)."""
    out: dict[str, Family | None] = {"none": None, **{f"whole {name} family": f for name, f in FAMILIES.items()}}
    for op in OP_ORDER:
        spec = family.spec(op)
        if spec.probability > 0 and spec.high > 0:
            out[op] = Family(f"{family.name}:{op}", {op: OpSpec(1.0, spec.low, spec.high)})
    return out


def vision_top1(encoder: MultimodalEncoder, rows: list[tuple[np.ndarray, str]], family: Family | None,
                seed: int) -> float:
    """Image-only top-1 of the list crops (first half of ``rows``) among the directory crops (second half)."""
    rng = np.random.default_rng([seed, 2])
    images, directions = [], []
    for arr, direction in rows:
        out = arr if family is None else degrade(arr, rng, family, direction=direction)[0]
        images.append(Image.fromarray(out, mode="L"))
        directions.append(direction)
    emb = encoder.encode_images(images, directions=directions)
    n = len(rows) // 2
    return float(np.mean((emb[:n] @ emb[n:].T).argmax(axis=1) == np.arange(n)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="model folder (default: the shipped model)")
    parser.add_argument("--firms", type=int, default=100)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--faces", default=",".join(DEFAULT_FACES), help="comma-separated typefaces")
    parser.add_argument("--family", choices=sorted(FAMILIES), default="heldout",
                        help="the family whose operations are applied one at a time")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    folder = args.model or shipped_model_dir()
    encoder = MultimodalEncoder.load(folder, device="cpu")
    faces = tuple(f.strip() for f in args.faces.split(",") if f.strip())
    start = time.perf_counter()
    crops = renders(faces, args.firms, args.seed)
    rows = []
    for name, family in conditions(FAMILIES[args.family]).items():
        accs = {face: vision_top1(encoder, crops[face], family, args.seed) for face in faces}
        rows.append({"degradation": name, "vision_top1": float(np.mean(list(accs.values()))), **accs})
        print(f"{name:24s} {rows[-1]['vision_top1']:.3f}  " + "  ".join(f"{f}: {a:.2f}" for f, a in accs.items()),
              flush=True)
    print(f"model {folder}, {args.firms} firms x {len(faces)} faces, operations of the {args.family} family, "
          f"{time.perf_counter() - start:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
