"""Does a fine-tune on reviews raise accuracy on firms nobody reviewed, on crops where the shipped model errs?

The corpus is built so that the shipped model makes errors: firm names of the held-out vocabulary, printed in two
typefaces no training used and degraded by the held-out scan family (another parameterisation than training's),
read by rapidocr. Lists print each firm horizontally (queries), the directory vertically (targets). The first
half of the firms is reviewed by an oracle reviewer (the review page's verdicts, answered from the truth: the
candidate of the query's firm among the five shown, else ``none``); the model is fine-tuned on those verdicts
exactly as ``reviewed_model`` does (:mod:`linkage_pipeline.review.training`); the other half is scored before and
after: top-1 of its list crops among every directory crop, at the model card's pooling weight.

Not yet: the fine-tune learns from 43 pairs and 63 rejected candidates and the unreviewed firms move from 0.483 to
0.500 (one query of 60). The same holds on our held-out corpora (``bench/review_loop.py``): what raises accuracy there is the
reviews as labels for the pooling weight, not the fine-tune. The rise is kept as a strict expected failure, so a
recipe that achieves it turns this test red until the mark is removed; ``reviewed_model`` therefore adopts a
fine-tune only when it links the held-back half of the reviews better than the model it started from.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from linkage_pipeline.documents.ocr import make_engine
from linkage_pipeline.multimodal import registry
from linkage_pipeline.multimodal.checkpoints import shipped_model_dir
from linkage_pipeline.multimodal.encoder import MultimodalEncoder, pool_embeddings
from linkage_pipeline.multimodal.training.augment import render_crop
from linkage_pipeline.multimodal.training.degrade import HELDOUT_FAMILY, degrade
from linkage_pipeline.review import training, verdicts
from linkage_pipeline.synthetic.firms import generate_firms, mention
from linkage_pipeline.synthetic.fonts import DENSE_HELDOUT_FONTS, TRAIN_FONTS, find_font

pytestmark = pytest.mark.slow

FACES = ("IPAexMincho", "BIZ UDGothic")
N_FIRMS = 120  # firms 0-59 reviewed, 60-119 scored
K = 5


def _crop_id(i: int) -> str:
    return f"{i:016x}"


def _corpus(tmp: Path) -> tuple[pd.DataFrame, pd.DataFrame, list[Image.Image]]:
    fonts = [find_font(face) for face in FACES]
    firms = generate_firms(N_FIRMS, 11, vocabulary="heldout")
    rng = np.random.default_rng([11, 0x5245])
    engine = make_engine("rapidocr")
    regions, texts, images = [], [], []
    for role, (style, direction) in (("query", ("list", "horizontal")), ("target", ("directory", "vertical"))):
        crops = []
        for i, firm in enumerate(firms):
            crop = render_crop(mention(firm, rng, style), fonts[i % 2], direction, rng)
            arr, _ = degrade(np.asarray(crop), rng, HELDOUT_FAMILY, direction=direction)
            crops.append(Image.fromarray(arr, mode="L"))
        for i, (crop, read) in enumerate(zip(crops, engine.read(crops, direction=direction), strict=True)):
            cid = _crop_id(len(images))
            path = tmp / f"{cid}.png"
            crop.save(path)
            images.append(crop)
            regions.append({"crop_id": cid, "crop_path": str(path), "direction": direction, "source_role": role,
                            "true_entity_id": firms[i].entity_id, "kind": "entry"})
            texts.append({"crop_id": cid, "ocr": "rapidocr", "text": read.text})
    return pd.DataFrame(regions), pd.DataFrame(texts), images


def _similarity(encoder: MultimodalEncoder, regions: pd.DataFrame, texts: pd.DataFrame, images: list) -> np.ndarray:
    weight, _ = registry.card_defaults(shipped_model_dir())
    img = encoder.encode_images(images, directions=regions["direction"].tolist())
    txt = encoder.encode_texts(texts["text"].tolist())
    pooled = pool_embeddings(img, txt, weight)
    return pooled[:N_FIRMS] @ pooled[N_FIRMS:].T


def _top1(sim: np.ndarray, rows: range) -> float:
    return float(np.mean([int(np.argmax(sim[i])) == i for i in rows]))


def test_the_faces_are_held_out() -> None:
    assert set(FACES) <= set(DENSE_HELDOUT_FONTS) and not set(FACES) & set(TRAIN_FONTS)


@pytest.fixture(scope="module")
def measured(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp_path = tmp_path_factory.mktemp("fine_tune")
    torch.set_num_threads(2)
    regions, texts, images = _corpus(tmp_path)
    shipped = MultimodalEncoder.load(shipped_model_dir())
    sim = _similarity(shipped, regions, texts, images)
    ids = regions["crop_id"].tolist()
    candidates, reviews = [], []
    for i in range(N_FIRMS // 2):  # the oracle reviews the first half, as the page shows them: the top K
        top = np.argsort(-sim[i], kind="stable")[:K]
        candidates += [{"query_crop_id": ids[i], "target_crop_id": ids[N_FIRMS + j], "rank": r + 1,
                        "score": float(sim[i, j])} for r, j in enumerate(top)]
        verdict = "accept" if top[0] == i else "pick" if i in top else "none"
        reviews.append(verdicts.review_row(query_crop_id=ids[i], verdict=verdict, reviewer="oracle",
                                           target_crop_id=ids[N_FIRMS + i] if verdict != "none" else None))
    reviews = verdicts.in_force(pd.concat(reviews, ignore_index=True))
    data, counts = training.review_training_set(reviews, pd.DataFrame(candidates), regions, texts)
    folder = training.fine_tune_on_reviews(shipped_model_dir(), data, tmp_path / "ft")
    tuned = MultimodalEncoder.load(folder)
    scored = range(N_FIRMS // 2, N_FIRMS)
    before, after = _top1(sim, scored), _top1(_similarity(tuned, regions, texts, images), scored)
    print(f"\nreviews {counts}; unreviewed firms (n={len(scored)}) top-1 before {before:.3f}, after {after:.3f}")
    return {"counts": counts, "folder": folder, "tuned": tuned.model_id, "shipped": shipped.model_id,
            "before": before, "after": after}


def test_the_fine_tune_learns_from_the_reviews_on_a_corpus_where_the_model_errs(measured: dict) -> None:
    assert measured["before"] < 0.9  # the corpus is one where the shipped model errs
    assert measured["counts"]["pairs"] >= training.FineTuneConfig().min_pairs
    assert measured["counts"]["negatives"] > measured["counts"]["pairs"]  # every candidate shown and not chosen
    assert measured["tuned"] != measured["shipped"]
    assert (measured["folder"] / "pretrained" / "model.safetensors").is_file()


@pytest.mark.xfail(strict=True, reason="known gap (README, 'Reviewing links'): a fine-tune on 60 reviews leaves the "
                   "unreviewed firms of this corpus at 0.48 -> 0.50 top-1")
def test_a_fine_tune_on_reviews_raises_accuracy_on_firms_nobody_reviewed(measured: dict) -> None:
    assert measured["after"] >= measured["before"] + 0.05, (measured["before"], measured["after"])
