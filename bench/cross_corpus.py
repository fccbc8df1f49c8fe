"""Table 1 of one or more models on corpora that have been run once: the demo, our held-out family, others.

Usage:
    .venv/bin/python bench/cross_corpus.py --corpus demo=/tmp/demo --corpus heldout=/tmp/heldout
    .venv/bin/python bench/cross_corpus.py --corpus demo=/tmp/demo --model new=/path/to/model --json out.json
    .venv/bin/python bench/cross_corpus.py --corpus B=/tmp/heldout_b --ensemble three=DIR1+DIR2+DIR3

A corpus is a data directory that ``linkage-pipeline run`` (or ``demo``) has processed: its crops, OCR texts and
labels are read from ``_pipeline/linkage.duckdb``; the models are run here, so any model folder can be scored on
the same crops and readings without re-running the pipeline. String methods come from the corpus's
``string_links`` table.

For each model, corpus and OCR condition the table gives top-1 accuracy on the **test** firms (n queries whose
firm is in the target source) of vision, language and multimodal embeddings of the self-supervised model (the
model's ``pretrained/`` folder) and of the supervised model; a label-free model folder (a ``pretrained/`` folder, or
a model of ``bench/label_free_ablation.py``) gives its self-supervised rows only. The pooling weight of the multimodal rows is chosen
per OCR condition on the **validation** firms of that corpus, as the pipeline's ``faiss_index`` does when a
source has labels (ties on top-1 go to the higher mean reciprocal rank, then to the model card's weight); ``--weight`` fixes it instead. The last columns give the best string
method and the error ratio ``(1 - multimodal) / (1 - best string)`` (<= 0.5: the model makes at most half the
errors), and the same for the ``hybrid`` links (the multimodal and n-gram candidates under one score, the string
weight chosen on the validation firms as ``embedding_links`` chooses it). ``--hide-labels`` chooses both weights as
for a corpus without labels (the mutual-neighbour rule and the image tower's votes); labels then only score.

``--ensemble NAME=DIR+DIR[+...]`` adds the supervised rows of a score-level ensemble of model folders (e.g. the same
recipe trained with other seeds): every crop is embedded by each member and the members' similarities are averaged
(:func:`ensemble_embeddings`); it costs one embedding per member, so it measures what an ensemble would gain, not a
model the pipeline ships.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from linkage_pipeline.evaluation import report
from linkage_pipeline.linking import hybrid
from linkage_pipeline.linking.by_embeddings import (
    choose_pooling_weights,
    embedding_links,
)
from linkage_pipeline.multimodal import registry
from linkage_pipeline.multimodal.checkpoints import shipped_model_dir
from linkage_pipeline.multimodal.embed import embed_crops, embedding_inputs
from linkage_pipeline.multimodal.encoder import MultimodalEncoder


def load_corpus(data_dir: str | Path) -> dict[str, Any]:
    """Regions (truth), embedding inputs, string links and linkages of a processed data directory."""
    db = Path(data_dir) / "_pipeline" / "linkage.duckdb"
    if not db.is_file():
        raise SystemExit(f"{db} does not exist; run `linkage-pipeline run --data-dir {data_dir}` first")
    con = duckdb.connect(str(db), read_only=True)
    try:
        regions = con.execute("select * from stg_regions").df()
        inputs = embedding_inputs(
            con.execute("select * from layout_regions").df(),
            con.execute("select * from region_crops").df(),
            con.execute("select * from ocr_texts").df(),
            con.execute("select * from labelled_regions").df(),
        )
        strings = con.execute("select * from string_links").df()
        linkages = [tuple(r) for r in con.execute("select query, target from source_linkages").fetchall()]
    finally:
        con.close()
    return {"regions": regions, "inputs": inputs, "strings": strings, "linkages": linkages}


def _table(links: pd.DataFrame, regions: pd.DataFrame, training: str, splits: tuple[str, ...]) -> pd.DataFrame:
    return report.linkage_evaluation_table(links, regions, training=training, report_splits=splits)


def score_model(
    encoder: MultimodalEncoder, corpus: dict[str, Any], training: str, weight: float | None, default: float = 0.5,
    hide_labels: bool = False,
) -> pd.DataFrame:
    """Test-split rows of vision, language and multimodal; the weight per condition is chosen on the corpus's
    validation firms as the pipeline chooses it (:func:`choose_pooling_weights`, ties to ``default``), or fixed."""
    emb, _ = embed_crops(encoder, corpus["inputs"])
    return score_embeddings(emb, corpus, training, weight, default, hide_labels)


def ensemble_embeddings(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """One embedding frame of a score-level ensemble of models, from each member's :func:`embed_crops` frame.

    Each member's image and text embeddings are L2-normalised and concatenated, so the inner product of two crops'
    ensemble image (or text) embeddings, normalised, is the mean of the members' cosine similarities; the pooled
    (multimodal) embedding is built from the concatenations at one weight for all members.

    Raises:
        ValueError: Without members, or if the members' frames do not hold the same (ocr, crop_id) rows.
    """
    if not frames:
        raise ValueError("an ensemble needs at least one member's embeddings")
    keys = ["ocr", "crop_id"]
    members = [f.sort_values(keys).reset_index(drop=True) for f in frames]
    for i, f in enumerate(members[1:], start=2):
        if not f[keys].equals(members[0][keys]):
            raise ValueError(f"ensemble member {i} embedded other (ocr, crop_id) rows than member 1")
    out = members[0].copy()
    for col in ("image_embedding", "text_embedding"):
        parts = []
        for f in members:
            m = np.stack(f[col].to_numpy()).astype(np.float32)
            parts.append(m / np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-12))
        out[col] = list(np.concatenate(parts, axis=1))
    out["model_id"] = "ensemble:" + "+".join(str(f["model_id"].iloc[0]) for f in members if len(f))
    return out


def score_embeddings(
    emb: pd.DataFrame, corpus: dict[str, Any], training: str, weight: float | None, default: float = 0.5,
    hide_labels: bool = False,
) -> pd.DataFrame:
    """:func:`score_model` on embeddings already made (one model's, or :func:`ensemble_embeddings`), plus the
    ``hybrid`` rows (:mod:`linkage_pipeline.linking.hybrid`; their ``weight`` is the string weight). With
    ``hide_labels`` both weights are chosen as for a corpus without labels (the mutual-neighbour rule, the image
    tower's votes); the labels only score the test firms."""
    tuning = None if hide_labels else corpus["regions"]
    uni = embedding_links(emb, corpus["linkages"], methods=("vision", "language"), training=training)
    rows = [_table(uni, corpus["regions"], training, ("test",)).assign(weight=np.nan)]
    if weight is None:
        weights, _ = choose_pooling_weights(emb, tuning, corpus["linkages"], default=default,
                                            unlabelled="mutual" if hide_labels else "default")
    else:
        weights = {c: weight for c in set(emb["ocr"])}
    links = embedding_links(emb, corpus["linkages"], methods=("multimodal",), weight=weights, training=training)
    mm = _table(links, corpus["regions"], training, ("test",))
    rows.append(mm.assign(weight=mm["ocr"].map(weights)))
    both, betas, _ = hybrid.with_hybrid_links(pd.concat([uni, links], ignore_index=True), corpus["strings"], emb,
                                              corpus["linkages"], weights, tuning, model_id="", training=training)
    fused = _table(both[both["method"] == hybrid.HYBRID_METHOD], corpus["regions"], training, ("test",))
    rows.append(fused.assign(weight=fused["ocr"].map(betas)))
    return pd.concat(rows, ignore_index=True)


def label_free_only(folder: Path) -> bool:
    """Whether a model folder holds a label-free model alone: its card records the label-free (``clip``) stage and
    no supervised one, or it is a model of ``bench/label_free_ablation.py``."""
    card = registry.read_card(folder)
    return "ablation" in card or set(card.get("training", {})) == {"clip"}


def corpus_table(
    models: dict[str, Path],
    corpus: dict[str, Any],
    weight: float | None,
    ensembles: dict[str, list[Path]] | None = None,
    hide_labels: bool = False,
) -> pd.DataFrame:
    """Every row of one corpus: strings, then each model's self-supervised and supervised rows (a label-free model
    folder gives self-supervised rows only), then the supervised rows of each ensemble of model folders."""
    frames = [_table(corpus["strings"], corpus["regions"], "none", ("test",)).assign(model="", weight=np.nan)]
    for name, folder in models.items():
        default, _ = registry.card_defaults(folder)
        pairs = (("self_supervised", folder / "pretrained"), ("supervised", folder))
        for training, path in (("self_supervised", folder),) if label_free_only(folder) else pairs:
            if not (path / "config.json").is_file():
                continue
            encoder = MultimodalEncoder.load(path, device="cpu")
            frames.append(score_model(encoder, corpus, training, weight, default, hide_labels).assign(model=name))
    for name, folders in (ensembles or {}).items():
        embs = [embed_crops(MultimodalEncoder.load(f, device="cpu"), corpus["inputs"])[0] for f in folders]
        default = float(np.mean([registry.card_defaults(f)[0] for f in folders]))
        frames.append(score_embeddings(ensemble_embeddings(embs), corpus, "supervised", weight, default, hide_labels)
                      .assign(model=name))
    out = pd.concat(frames, ignore_index=True)
    return out[["model", "training", "method", "ocr", "top1_accuracy", "n", "weight"]]


def summary(table: pd.DataFrame) -> pd.DataFrame:
    """One row per model, training and condition: vision, language, multimodal, best string, error ratio."""
    strings = table[table["training"] == "none"]
    best = strings.groupby("ocr")["top1_accuracy"].max()
    best_name = strings.loc[strings.groupby("ocr")["top1_accuracy"].idxmax()].set_index("ocr")["method"]
    rows = []
    for (model, training, ocr), g in table[table["training"] != "none"].groupby(["model", "training", "ocr"]):
        acc = g.set_index("method")["top1_accuracy"]
        mm, fused = float(acc.get("multimodal", np.nan)), float(acc.get("hybrid", np.nan))
        used = g.set_index("method")["weight"]
        rows.append({
            "model": model, "training": training, "ocr": ocr,
            "vision": float(acc.get("vision", np.nan)), "language": float(acc.get("language", np.nan)),
            "multimodal": mm, "weight": float(used.get("multimodal", np.nan)),
            "hybrid": fused, "string_weight": float(used.get("hybrid", np.nan)),
            "best_string": float(best.get(ocr, np.nan)), "string_method": best_name.get(ocr, ""),
            "error_ratio": (1 - mm) / max(1 - float(best.get(ocr, np.nan)), 1e-9),
            "hybrid_error_ratio": (1 - fused) / max(1 - float(best.get(ocr, np.nan)), 1e-9),
            "n": int(g["n"].iloc[0]),
        })
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", action="append", required=True, help="NAME=DATA_DIR of a processed corpus")
    parser.add_argument("--model", action="append", default=[], help="NAME=MODEL_DIR (default: the shipped model)")
    parser.add_argument("--ensemble", action="append", default=[],
                        help="NAME=DIR+DIR[+...]: supervised rows of a score-level ensemble of model folders")
    parser.add_argument("--weight", type=float, default=None, help="fixed pooling weight (default: per condition on val)")
    parser.add_argument("--hide-labels", action="store_true",
                        help="choose the pooling and string weights without labels (mutual neighbours, image votes)")
    parser.add_argument("--json", default=None, help="also write every row here")
    args = parser.parse_args(argv)
    ensembles = {e.split("=", 1)[0]: [Path(p) for p in e.split("=", 1)[1].split("+")] for e in args.ensemble}
    models = {m.split("=", 1)[0]: Path(m.split("=", 1)[1]) for m in args.model}
    if not models and not ensembles:
        models = {"shipped": shipped_model_dir()}
    for name, folder in [*models.items(), *((n, p) for n, ps in ensembles.items() for p in ps)]:
        if not (folder / "config.json").is_file():
            raise SystemExit(f"model {name!r}: {folder} has no config.json; expected a saved model folder")
    all_rows = []
    for spec in args.corpus:
        name, path = spec.split("=", 1)
        start = time.perf_counter()
        corpus = load_corpus(path)
        table = corpus_table(models, corpus, args.weight, ensembles, args.hide_labels).assign(corpus=name)
        all_rows.append(table)
        print(f"\n## {name} ({path}), {time.perf_counter() - start:.0f} s")
        print(summary(table).to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    if args.json:
        Path(args.json).write_text(json.dumps(pd.concat(all_rows).to_dict("records"), default=str, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
