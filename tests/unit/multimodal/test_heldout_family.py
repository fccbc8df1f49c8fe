"""The shipped model on crops it never saw: held-out firm names in held-out typefaces, scanned, read by rapidocr.

A small version of ``bench/typefaces.py`` (which also reads with tesseract and covers every held-out face and the
held-out scan family): 200 firms of the ``heldout`` vocabulary, each printed as a list prints it (horizontal) and
as a directory prints it (vertical) in one of two typefaces no training ever used, degraded by the train family of
scan operations; every list crop is linked among all 200 directory crops. The pooling weight of each text
condition is chosen on the first 100 firms (validation), as the pipeline does, and the checks are the project's
bar for a model it ships, on the other 100 (test):

- the supervised multimodal model makes at most half the top-1 errors of the best string method, on the true text
  and on rapidocr's readings (the shipped model: 1.00 against 0.86 and 0.93 against 0.73, 26 % of the errors; an
  earlier model made 63 % on rapidocr's readings, a gap this file kept as a strict xfail);
- it is at least as good as each of its single modalities (0.93 against 0.88 language and 0.78 vision on rapidocr's);
- the label-free (self-supervised) model beats the best string method;
- without labels (the weight chosen by mutual nearest neighbours between list and directory crops, as
  ``faiss_index`` chooses it for a source without labels), the supervised model beats the strings and is within one
  query of each modality, on both conditions.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from linkage_pipeline.documents.ocr import make_engine
from linkage_pipeline.linking.by_embeddings import (
    mutual_neighbour_choice,
    mutual_neighbours,
)
from linkage_pipeline.linking.strings import STRING_METHODS, string_similarity_matrix
from linkage_pipeline.multimodal.checkpoints import shipped_model_dir
from linkage_pipeline.multimodal.encoder import MultimodalEncoder, pool_embeddings
from linkage_pipeline.multimodal.training.augment import render_crop
from linkage_pipeline.multimodal.training.degrade import TRAIN_FAMILY, degrade
from linkage_pipeline.synthetic.firms import generate_firms, mention
from linkage_pipeline.synthetic.fonts import DENSE_HELDOUT_FONTS, TRAIN_FONTS, find_font

FACES = ("BIZ UDMincho", "IPAexGothic")
N_FIRMS = 200  # firm i is printed in FACES[i % 2]; queries of firms 0-99 choose the weight, of 100-199 are scored
WEIGHTS = tuple(float(w) for w in np.round(np.linspace(0, 1, 11), 1))


def _crops(seed: int) -> tuple[list[Image.Image], list[str], list[str]]:
    """List crops of N_FIRMS firms, then directory crops of the same firms (row i and N_FIRMS + i: one firm)."""
    fonts = [find_font(face) for face in FACES]
    firms = generate_firms(N_FIRMS, seed, vocabulary="heldout")
    rng = np.random.default_rng([seed, 0x4846])
    images, directions, texts = [], [], []
    for style, direction in (("list", "horizontal"), ("directory", "vertical")):
        for i, firm in enumerate(firms):
            text = mention(firm, rng, style)
            crop = render_crop(text, fonts[i % len(fonts)], direction, rng)
            arr, _ = degrade(np.asarray(crop), rng, TRAIN_FAMILY, direction=direction)
            images.append(Image.fromarray(arr, mode="L"))
            directions.append(direction)
            texts.append(text)
    return images, directions, texts


def _top1(sim: np.ndarray, rows: slice) -> float:
    """Top-1 accuracy of query rows ``rows`` of a (queries x targets) similarity matrix (query i's firm: target i)."""
    idx = np.arange(N_FIRMS)[rows]
    return float(np.mean(np.argmax(sim[rows], axis=1) == idx))


@pytest.fixture(scope="module")
def scored() -> dict[str, dict[str, float]]:
    torch.set_num_threads(2)
    engine = make_engine("rapidocr")
    models = {"supervised": MultimodalEncoder.load(shipped_model_dir()),
              "self_supervised": MultimodalEncoder.load(shipped_model_dir() / "pretrained")}
    val, test = slice(0, N_FIRMS // 2), slice(N_FIRMS // 2, N_FIRMS)
    q, t = slice(0, N_FIRMS), slice(N_FIRMS, 2 * N_FIRMS)
    images, directions, truth = _crops(seed=100)
    readings = {"ground_truth": truth, "rapidocr": [""] * len(images)}
    for direction in ("horizontal", "vertical"):
        rows = [j for j, d in enumerate(directions) if d == direction]
        for j, r in zip(rows, engine.read([images[j] for j in rows], direction=direction), strict=True):
            readings["rapidocr"][j] = r.text
    out: dict[str, dict[str, float]] = {}
    for condition, texts in readings.items():
        acc = out.setdefault(condition, {})
        for m in STRING_METHODS:
            acc[m] = _top1(string_similarity_matrix(texts[q], texts[t], method=m), test)
        for name, encoder in models.items():
            img = encoder.encode_images(images, directions=directions)
            txt = encoder.encode_texts(list(texts))

            def sim(w: float, img=img, txt=txt) -> np.ndarray:
                pooled = pool_embeddings(img, txt, w)
                return pooled[q] @ pooled[t].T

            best_w = max(WEIGHTS, key=lambda w: (_top1(sim(w), val), -abs(w - 0.5)))
            acc[f"{name}_vision"] = _top1(img[q] @ img[t].T, test)
            acc[f"{name}_language"] = _top1(txt[q] @ txt[t].T, test)
            acc[f"{name}_multimodal"] = _top1(sim(best_w), test)
            card = float(encoder.card.get("linking", {}).get("pooling_weight", 0.5))
            mutual = {w: mutual_neighbours(pool_embeddings(img[q], txt[q], w), pool_embeddings(img[t], txt[t], w))
                      for w in sorted({*WEIGHTS, card})}
            label_free_w = mutual_neighbour_choice(mutual, card)[0]
            acc[f"{name}_multimodal_unlabelled"] = _top1(sim(label_free_w), test)
    return out


def test_the_faces_are_held_out() -> None:
    assert set(FACES) <= set(DENSE_HELDOUT_FONTS) and not set(FACES) & set(TRAIN_FONTS)


def _best_string(acc: dict[str, float]) -> float:
    return max(acc[m] for m in STRING_METHODS)


@pytest.mark.parametrize("condition", ["rapidocr", "ground_truth"])
def test_supervised_multimodal_beats_string_matching(scored, condition) -> None:
    acc = scored[condition]
    assert acc["supervised_multimodal"] > _best_string(acc), acc


def test_supervised_multimodal_halves_the_errors_of_strings_on_the_true_text(scored) -> None:
    acc = scored["ground_truth"]
    assert 1 - acc["supervised_multimodal"] <= 0.5 * (1 - _best_string(acc)), acc


def test_supervised_multimodal_is_at_least_both_modalities_on_the_true_text(scored) -> None:
    acc = scored["ground_truth"]
    assert acc["supervised_multimodal"] >= max(acc["supervised_vision"], acc["supervised_language"]), acc


def test_supervised_multimodal_meets_the_whole_bar_on_rapidocr_readings(scored) -> None:
    acc = scored["rapidocr"]
    assert 1 - acc["supervised_multimodal"] <= 0.5 * (1 - _best_string(acc)), acc
    assert acc["supervised_multimodal"] >= max(acc["supervised_vision"], acc["supervised_language"]), acc


@pytest.mark.parametrize("condition", ["rapidocr", "ground_truth"])
def test_label_free_model_beats_string_matching(scored, condition) -> None:
    acc = scored[condition]
    assert acc["self_supervised_multimodal"] > _best_string(acc), acc


@pytest.mark.parametrize("condition", ["rapidocr", "ground_truth"])
def test_without_labels_the_mutual_neighbour_weight_pools_without_losing_to_either_modality(scored, condition) -> None:
    acc = scored[condition]
    pooled = acc["supervised_multimodal_unlabelled"]
    assert pooled > _best_string(acc), acc
    # one query of 100 of slack: a near-tie of two weights' mutual rates may fall either way on another CPU
    assert pooled >= max(acc["supervised_vision"], acc["supervised_language"]) - 0.01, acc
