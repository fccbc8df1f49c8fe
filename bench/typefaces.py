"""Linking per typeface on crops the model never saw: held-out faces, firm names and scan degradations.

Usage:
    .venv/bin/python bench/typefaces.py [--model DIR] [--firms 100] [--fonts heldout|train] [--json out.json]

For every typeface, ``--firms`` firms of the ``heldout`` vocabulary (never used in training) are printed twice, as
a supplier list prints them (horizontal, modern forms, abbreviated legal forms) and as a directory prints them
(vertical, old forms, full legal form), in that typeface, then degraded by the **held-out** scan family
(``degrade.HELDOUT_FAMILY``: heavier ink changes, JPEG and warps than training, bleed-through, shear and motion
blur that training never applies) and read by both OCR engines. Each list crop is linked to the nearest directory
crop of the same typeface (top-1 accuracy; every query's firm is present). No label of this bench is used: the
pooling weight is chosen per typeface and OCR condition by mutual nearest neighbours between the list and directory
crops, as ``faiss_index`` chooses it for a source without labels (``--unlabelled card``: the model card's weight).

Rows: best string method (of Levenshtein, Jaro-Winkler, character n-grams), the self-supervised model
(``pretrained/``) and the supervised model, vision / language / multimodal, per typeface and OCR condition. The
crops and readings are cached under ``--cache`` (OCR takes minutes), keyed by the settings.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from linkage_pipeline.documents.ocr import make_engine
from linkage_pipeline.linking.by_embeddings import (
    WEIGHT_GRID,
    mutual_neighbour_choice,
    mutual_neighbours,
)
from linkage_pipeline.linking.strings import STRING_METHODS, string_similarity_matrix
from linkage_pipeline.multimodal import registry
from linkage_pipeline.multimodal.checkpoints import shipped_model_dir
from linkage_pipeline.multimodal.encoder import MultimodalEncoder, pool_embeddings
from linkage_pipeline.multimodal.training.augment import render_crop
from linkage_pipeline.multimodal.training.data import (
    TrainingSet,
    load_training_set,
    save_training_set,
)
from linkage_pipeline.multimodal.training.degrade import (
    HELDOUT_FAMILY,
    TRAIN_FAMILY,
    degrade,
)
from linkage_pipeline.synthetic import fonts as font_lists
from linkage_pipeline.synthetic.firms import generate_firms, mention

ENGINES = ("tesseract", "rapidocr")


def build(family: str, typeface: str, n_firms: int, seed: int) -> TrainingSet:
    """Query (list) and target (directory) crops of ``n_firms`` held-out firms in one typeface, read by both engines.

    Rows ``0..n-1`` are queries, ``n..2n-1`` targets; ``labels`` index the firm. ``texts`` holds the tesseract
    reading; the rapidocr reading and the true text are in ``info["readings"]``.
    """
    family_spec = {"heldout": HELDOUT_FAMILY, "train": TRAIN_FAMILY}[family]
    font = font_lists.find_font(typeface)
    firms = generate_firms(n_firms, seed, vocabulary="heldout")
    rng = np.random.default_rng([seed, 0x5459])
    images, directions, true_texts, labels = [], [], [], []
    for style, direction in (("list", "horizontal"), ("directory", "vertical")):
        for label, firm in enumerate(firms):
            text = mention(firm, rng, style)
            arr, _ = degrade(np.asarray(render_crop(text, font, direction, rng)), rng, family_spec, direction=direction)
            images.append(Image.fromarray(arr, mode="L"))
            directions.append(direction)
            true_texts.append(text)
            labels.append(label)
    readings = {}
    for engine_name in ENGINES:
        engine = make_engine(engine_name)
        out = [""] * len(images)
        for direction in ("horizontal", "vertical"):
            rows = [i for i, d in enumerate(directions) if d == direction]
            for i, r in zip(rows, engine.read([images[i] for i in rows], direction=direction), strict=True):
                out[i] = r.text
        readings[engine_name] = out
    readings["ground_truth"] = true_texts
    return TrainingSet(images, directions, readings["tesseract"], true_texts, np.asarray(labels, np.int64), firms,
                       {"readings": readings, "typeface": typeface, "family": family})


def code_version() -> str:
    """Hash of the code that draws, degrades and reads the crops: a change there (e.g. how a vertical crop is cut
    into cells before OCR) gives new crops and readings instead of a stale cache."""
    from linkage_pipeline.documents import crops, ocr
    from linkage_pipeline.multimodal.training import augment
    from linkage_pipeline.multimodal.training import degrade as degrade_module
    from linkage_pipeline.synthetic import firms

    files = (crops, ocr, augment, degrade_module, firms, font_lists)
    return hashlib.sha256(b"".join(Path(m.__file__).read_bytes() for m in files)).hexdigest()[:12]


def cached(cache: Path, family: str, typeface: str, n_firms: int, seed: int) -> TrainingSet:
    key = hashlib.sha256(json.dumps([family, typeface, n_firms, seed, code_version()]).encode()).hexdigest()[:12]
    path = cache / f"typeface-{key}.parquet"
    if not path.is_file():
        save_training_set(build(family, typeface, n_firms, seed), path)
    return load_training_set(path)


def top1(q: np.ndarray, t: np.ndarray) -> float:
    """Top-1 accuracy of queries ``q`` (n, d) against targets ``t`` (n, d), query i's firm being target i."""
    return float(np.mean(np.argmax(q @ t.T, axis=1) == np.arange(len(q))))


def choose_weight(img: np.ndarray, txt: np.ndarray, n: int, card: float, rule: str) -> float:
    """The pooling weight without labels: the card's, or the one with the most mutual nearest neighbours between the
    first ``n`` rows (queries) and the rest (targets) where it wins the sign test against the card's (as
    ``faiss_index`` chooses it: :func:`mutual_neighbour_choice`)."""
    if rule == "card":
        return card
    mutual = {w: mutual_neighbours(pool_embeddings(img[:n], txt[:n], w), pool_embeddings(img[n:], txt[n:], w))
              for w in sorted({*WEIGHT_GRID, float(card)})}
    return mutual_neighbour_choice(mutual, card)[0]


def score(data: TrainingSet, models: dict[str, tuple[MultimodalEncoder, float]], rule: str = "mutual") -> list[dict]:
    n = len(data) // 2
    rows = []
    for condition, texts in data.info["readings"].items():
        q_texts, t_texts = texts[:n], texts[n:]
        best = max(
            (float(np.mean(np.argmax(string_similarity_matrix(q_texts, t_texts, method=m), axis=1) == np.arange(n))), m)
            for m in STRING_METHODS
        )
        row = {"typeface": data.info["typeface"], "ocr": condition, "best_string": best[0], "string_method": best[1]}
        for name, (encoder, weight) in models.items():
            img = encoder.encode_images(data.images, directions=data.directions)
            txt = encoder.encode_texts(list(texts))
            row[f"{name}_vision"] = top1(img[:n], img[n:])
            row[f"{name}_language"] = top1(txt[:n], txt[n:])
            chosen = choose_weight(img, txt, n, weight, rule)
            pooled = pool_embeddings(img, txt, chosen)
            row[f"{name}_multimodal"] = top1(pooled[:n], pooled[n:])
            row[f"{name}_weight"] = chosen
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="model folder (default: the shipped model)")
    parser.add_argument("--firms", type=int, default=100)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--fonts", choices=("heldout", "train"), default="heldout",
                        help="the held-out faces (default) or, for comparison, some training faces")
    parser.add_argument("--family", choices=("heldout", "train"), default="heldout", help="scan degradation family")
    parser.add_argument("--unlabelled", choices=("mutual", "card"), default="mutual",
                        help="pooling weight without labels: mutual nearest neighbours (the pipeline's) or the card's")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/linkage_typeface_bench"))
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    args.cache.mkdir(parents=True, exist_ok=True)
    folder = args.model or shipped_model_dir()
    weight, _ = registry.card_defaults(folder)
    models = {"supervised": (MultimodalEncoder.load(folder, device="cpu"), weight)}
    if (folder / "pretrained" / "config.json").is_file():
        models = {"self_supervised": (MultimodalEncoder.load(folder / "pretrained", device="cpu"), weight), **models}
    faces = font_lists.DENSE_HELDOUT_FONTS if args.fonts == "heldout" else font_lists.DENSE_DEMO_FONTS[:8]
    rows = []
    for face in faces:
        start = time.perf_counter()
        rows += score(cached(args.cache, args.family, face, args.firms, args.seed), models, args.unlabelled)
        print(f"{face}: {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    table = pd.DataFrame(rows)
    cols = ["typeface", "ocr", "best_string", "string_method"] + [c for c in table.columns if "_" in c and
                                                                  c.split("_")[0] in ("self", "supervised")]
    print(f"model {folder}, {args.firms} firms per typeface, fonts {args.fonts}, scan family {args.family}, "
          f"pooling weight without labels: {args.unlabelled}")
    print(table[cols].to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    means = table.groupby("ocr")[[c for c in cols if c not in ("typeface", "ocr", "string_method")]].mean()
    print("\nmean over typefaces\n" + means.to_string(float_format=lambda x: f"{x:.3f}"))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
