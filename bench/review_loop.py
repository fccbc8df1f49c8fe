"""What N reviewed links buy on a corpus where the model errs: accuracy on the remaining test firms before and after.

Usage:
    .venv/bin/python bench/review_loop.py --corpus /tmp/heldoutB --reviews 50 --work /tmp/review_loop

The corpus is a data directory that ``linkage-pipeline run`` has processed (read only; nothing is written there).
The bench takes the first N links of the review queue (``linkage_pipeline.review.queue``: the order the review
page shows them) and answers each as a careful reviewer would, from the corpus's labels: the candidate of the
query's firm (``accept`` when it is the top one, else ``pick``), or ``none`` when no candidate shown is. Queries
without a label are passed over (a reviewer would decide them; the bench cannot). Then it does what the next run
does with those verdicts:

- ``reviews_as_labels``: the pooling weight per OCR condition is chosen with the reviews as validation labels
  where the corpus has no labelled validation firms (``faiss_index``), the model unchanged;
- ``fine_tuned``: ``reviewed_model`` fine-tunes the linkage model on the *fit* half of the reviews (reviewed
  pairs, rejected candidates as hard negatives), and its weight is chosen on the other (*check*) half, which it
  never learnt from (choosing it on its own training pairs favours whatever memorised them).

Every figure is top-1 accuracy on the **test** firms that were *not* reviewed (n given), for the multimodal
embedding of the linkage model before and after, on every OCR condition, with the best string method beside it.
Two settings: ``labelled`` (the corpus's validation labels choose the weight, as the pipeline does on a labelled
corpus: the reviews decide only their own links there) and ``reviews only`` (every query label hidden: the reviews
are the only labels, as on a user's own scans).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cross_corpus import load_corpus

from linkage_pipeline.evaluation import report
from linkage_pipeline.linking.by_embeddings import (
    UNLABELLED_WEIGHT_CONFIG,
    choose_pooling_weights,
    embedding_links,
)
from linkage_pipeline.multimodal import registry
from linkage_pipeline.multimodal.embed import embed_crops
from linkage_pipeline.multimodal.encoder import MultimodalEncoder
from linkage_pipeline.review import queue as review_queue
from linkage_pipeline.review import training as review_training
from linkage_pipeline.review import verdicts


def oracle_reviews(queue: pd.DataFrame, candidates: pd.DataFrame, regions: pd.DataFrame, n: int) -> pd.DataFrame:
    """Verdicts on the first ``n`` labelled queries of ``queue``, answered from the labels."""
    truth = regions.dropna(subset=["crop_id"]).drop_duplicates("crop_id").set_index("crop_id")["true_entity_id"]
    rows = []
    for q in queue.itertuples(index=False):
        entity = truth.get(q.query_crop_id)
        if not isinstance(entity, str) or not entity:
            continue
        options = candidates[candidates["query_crop_id"] == q.query_crop_id].sort_values("rank")
        hit = options[options["target_crop_id"].map(truth) == entity]
        if len(hit):
            target = str(hit["target_crop_id"].iloc[0])
            verdict = "accept" if target == str(options["target_crop_id"].iloc[0]) else "pick"
        else:
            target, verdict = None, "none"
        rows.append(verdicts.review_row(
            query_crop_id=q.query_crop_id, verdict=verdict, reviewer="oracle (labels)", query_source=q.query_source,
            target_crop_id=target, target_source=str(hit["target_source"].iloc[0]) if len(hit) else None,
            model_target_crop_id=q.model_target_crop_id))
        if len(rows) == n:
            break
    return verdicts.in_force(pd.concat(rows, ignore_index=True))


def multimodal_test(encoder: MultimodalEncoder, corpus: dict, tuning: pd.DataFrame | None, scoring: pd.DataFrame,
                    default: float, unlabelled: str = "mutual") -> pd.DataFrame:
    """Test top-1 of the multimodal embedding per OCR condition, weight chosen on ``tuning`` labels (without enough
    of them: by ``unlabelled``, the pipeline's mutual-neighbour rule or ``"default"``, the model card's weight)."""
    emb, _ = embed_crops(encoder, corpus["inputs"])
    weights, _ = choose_pooling_weights(emb, tuning, corpus["linkages"], default=default, unlabelled=unlabelled)
    links = embedding_links(emb, corpus["linkages"], methods=("multimodal",), weight=weights, training="supervised")
    table = report.linkage_evaluation_table(links, scoring, training="supervised", report_splits=("test",))
    return table.assign(weight=table["ocr"].map(weights))[["ocr", "top1_accuracy", "n", "weight"]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, required=True)
    parser.add_argument("--reviews", type=int, default=50)
    parser.add_argument("--work", type=Path, required=True, help="where the fine-tuned model is written")
    parser.add_argument("--steps", type=int, default=review_training.FineTuneConfig().max_steps)
    parser.add_argument("--lr", type=float, default=review_training.FineTuneConfig().lr)
    parser.add_argument("--unlabelled", choices=("mutual", "card"), default="mutual",
                        help="weight without enough labels: mutual nearest neighbours (the pipeline's) or the card's")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    corpus = load_corpus(args.corpus)
    regions = corpus["regions"]
    con = duckdb.connect(str(args.corpus / "_pipeline" / "linkage.duckdb"), read_only=True)
    try:
        links = con.execute("select * from record_links").df()
        model = con.execute("select * from linkage_model").df().iloc[0]
        method, ocr = str(links["method"].iloc[0]), str(links["ocr"].iloc[0])
        shown = method if method in ("vision", "language", "multimodal") else "multimodal"
        candidates = con.execute(
            "select * from embedding_links where model_id = ? and training = 'supervised' and method = ? and ocr = ?",
            [str(model["model_id"]), shown, ocr]).df()
        texts = con.execute("select crop_id, text from stg_crop_texts where ocr = ?", [ocr]).df()
        crop_texts = con.execute("select * from stg_crop_texts").df()
    finally:
        con.close()
    threshold = float(links["threshold"].iloc[0])
    queue = review_queue.review_queue(links, candidates, texts, threshold=threshold)
    reviews = oracle_reviews(queue, candidates, regions, args.reviews)
    reviewed = set(reviews["query_crop_id"])  # both halves: none of them is scored
    counts = reviews["verdict"].value_counts().to_dict()
    print(f"{len(reviews)} reviews of the queue's first links ({method}, {ocr}): {counts}")
    # scoring: test firms only, reviewed queries left out
    scoring = regions.copy()
    scoring.loc[scoring["crop_id"].isin(reviewed) & (scoring["source_role"] == "query"), "true_entity_id"] = None
    check = verdicts.reviews_for_tuning(reviews, fine_tuned=True)
    fit = verdicts.reviews_for_fitting(reviews)
    start = Path(str(model["path"]))
    default, _ = registry.card_defaults(start)
    before = MultimodalEncoder.load(start, device="cpu")
    data, sizes = review_training.review_training_set(fit, candidates, regions, crop_texts)
    settings = review_training.FineTuneConfig(max_steps=args.steps, lr=args.lr, min_pairs=1)
    t1 = time.perf_counter()
    folder = review_training.fine_tune_on_reviews(start, data, args.work, config=settings)
    print(f"fine-tuned on the fit half {sizes} in {time.perf_counter() - t1:.0f}s: {folder}; "
          f"{len(check)} reviews (check half) choose its weight")
    after = MultimodalEncoder.load(folder, device="cpu")
    strings = report.linkage_evaluation_table(corpus["strings"], scoring, report_splits=("test",))
    best = strings.groupby("ocr")["top1_accuracy"].max()
    rows = []
    hidden = regions.assign(true_entity_id=regions["true_entity_id"].where(regions["source_role"] != "query"))
    for setting, base in (("labelled", regions), ("reviews only", hidden)):
        # the labels the pipeline tunes on (verdicts.tuning_labels): the corpus's own validation firms when it has
        # any, else the reviews (all of them for the model as it is, the check half for the fine-tuned one)
        rule = UNLABELLED_WEIGHT_CONFIG[args.unlabelled]
        b = multimodal_test(before, corpus, base, scoring, default, rule)
        w = multimodal_test(before, corpus, verdicts.tuning_labels(base, reviews)[0], scoring, default, rule)
        a = multimodal_test(after, corpus, verdicts.tuning_labels(base, check)[0], scoring, default, rule)
        for ocr_name in sorted(set(b["ocr"])):
            rows.append({
                "setting": setting, "ocr": ocr_name, "n": int(b.set_index("ocr").loc[ocr_name, "n"]),
                "best_string": float(best.get(ocr_name, np.nan)),
                "before": float(b.set_index("ocr").loc[ocr_name, "top1_accuracy"]),
                "reviews_as_labels": float(w.set_index("ocr").loc[ocr_name, "top1_accuracy"]),
                "fine_tuned": float(a.set_index("ocr").loc[ocr_name, "top1_accuracy"]),
                "w_before": float(b.set_index("ocr").loc[ocr_name, "weight"]),
                "w_labels": float(w.set_index("ocr").loc[ocr_name, "weight"]),
                "w_fine_tuned": float(a.set_index("ocr").loc[ocr_name, "weight"]),
            })
    table = pd.DataFrame(rows)
    print(table.to_markdown(index=False, floatfmt=".3f"))
    print(f"\n{time.perf_counter() - t0:.0f}s in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
