"""FAISS matching: exact results equal brute force, ANN recall on clustered data, stored indexes carry their model."""

from __future__ import annotations

import numpy as np
import pytest

from linkage_pipeline.linking.index import (
    IndexMeta,
    IndexSpec,
    build_index,
    exact_scores,
    faiss_gpu_available,
    knn,
    load_index,
    save_index,
    search,
)
from linkage_pipeline.linking.topk import topk_frame_arrays


def _unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_flat_index_equals_brute_force() -> None:
    rng = np.random.default_rng(0)
    q, t = _unit(rng, 50, 16), _unit(rng, 300, 16)
    scores, ids = knn(q, t, k=5)
    sims = q @ t.T
    expected = np.argsort(-sims, axis=1)[:, :5]
    np.testing.assert_array_equal(ids, expected)
    np.testing.assert_allclose(scores, np.take_along_axis(sims, expected, axis=1), rtol=1e-5, atol=1e-5)


def test_k_is_capped_at_the_number_of_targets() -> None:
    rng = np.random.default_rng(1)
    scores, ids = knn(_unit(rng, 3, 8), _unit(rng, 2, 8), k=10)
    assert ids.shape == (3, 2) and scores.shape == (3, 2)
    assert {tuple(sorted(r)) for r in ids} == {(0, 1)}


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_indexes_find_the_nearest_cluster_member(kind: str) -> None:
    rng = np.random.default_rng(2)
    centres = _unit(rng, 200, 32)
    targets = centres + 0.05 * rng.normal(size=centres.shape).astype(np.float32)
    targets /= np.linalg.norm(targets, axis=1, keepdims=True)
    queries = centres + 0.05 * rng.normal(size=centres.shape).astype(np.float32)
    _, exact = knn(queries, targets, k=1)
    spec = IndexSpec(kind=kind, nlist=4, nprobe=4) if kind == "ivf" else IndexSpec(kind=kind)
    _, approx = knn(queries, targets, k=1, spec=spec)
    assert (approx[:, 0] == exact[:, 0]).mean() >= 0.95
    assert (exact[:, 0] == np.arange(200)).mean() >= 0.95


def test_saved_index_round_trips_and_refuses_another_model(tmp_path) -> None:
    rng = np.random.default_rng(3)
    t = _unit(rng, 20, 8)
    ids = [f"c{i}" for i in range(20)]
    path = save_index(build_index(t), tmp_path / "x.faiss", IndexMeta("model-a", ids, "flat", 8, {"source": "s"}))
    index, meta = load_index(path, model_id="model-a")
    assert meta.ids == ids and meta.extra == {"source": "s"}
    _, found = search(index, t[:4], 1)
    np.testing.assert_array_equal(found[:, 0], np.arange(4))
    with pytest.raises(ValueError, match="was built with model model-a"):
        load_index(path, model_id="model-b")
    with pytest.raises(FileNotFoundError, match="rebuild the faiss_index asset"):
        load_index(tmp_path / "missing.faiss")


def test_meta_must_match_the_index() -> None:
    rng = np.random.default_rng(4)
    with pytest.raises(ValueError, match="holds 5 vectors but meta has 4 ids"):
        save_index(build_index(_unit(rng, 5, 4)), "/tmp/never.faiss", IndexMeta("m", ["a"] * 4, "flat", 4))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"kind": "lsh"}, "index kind must be one of"),
        ({"nprobe": 0}, "nprobe >= 1"),
        ({"device": "tpu"}, "device must be 'cpu' or 'cuda"),
        ({"kind": "hnsw", "device": "cuda"}, "HNSW indexes run on the CPU only"),
    ],
)
def test_bad_index_specs_are_refused(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        IndexSpec(**kwargs)


def test_bad_inputs_name_the_problem() -> None:
    rng = np.random.default_rng(5)
    t = _unit(rng, 4, 4)
    with pytest.raises(ValueError, match="targets is empty"):
        build_index(np.zeros((0, 4), np.float32))
    bad = t.copy()
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match="non-finite values \\(first in row 2\\)"):
        build_index(bad)
    with pytest.raises(ValueError, match="queries have dimension 3, the index 4"):
        search(build_index(t), np.zeros((1, 3), np.float32), 1)
    with pytest.raises(ValueError, match="an IVF index with nlist=8 needs at least 8 targets"):
        build_index(t, IndexSpec(kind="ivf", nlist=8))


@pytest.mark.skipif(faiss_gpu_available(), reason="checks the error raised without faiss-gpu")
def test_gpu_index_without_faiss_gpu_is_an_error_not_a_cpu_fallback() -> None:
    with pytest.raises(RuntimeError, match="no GPU support or sees no GPU"):
        build_index(_unit(np.random.default_rng(6), 4, 4), IndexSpec(device="cuda"))


@pytest.mark.gpu
@pytest.mark.skipif(not faiss_gpu_available(), reason="needs faiss-gpu and CUDA")
def test_gpu_flat_index_matches_cpu() -> None:
    rng = np.random.default_rng(7)
    q, t = _unit(rng, 100, 32), _unit(rng, 1000, 32)
    _, cpu = knn(q, t, 3)
    _, gpu = knn(q, t, 3, IndexSpec(device="cuda"))
    assert (cpu[:, 0] == gpu[:, 0]).mean() >= 0.99


def test_topk_frame_arrays_flattens_row_major() -> None:
    cols = topk_frame_arrays(
        np.array([[0.9, 0.5], [0.8, 0.1]], np.float32), np.array([[1, 0], [0, -1]]), ["q1", "q2"], ["t0", "t1"]
    )
    assert list(cols["query_id"]) == ["q1", "q1", "q2"]
    assert list(cols["target_id"]) == ["t1", "t0", "t0"]
    assert list(cols["rank"]) == [1, 2, 1]
    np.testing.assert_allclose(cols["score"], [0.9, 0.5, 0.8], rtol=1e-6)


def test_exact_scores_are_float64_products_of_the_pairs_alone() -> None:
    rng = np.random.default_rng(3)
    q, t = _unit(rng, 30, 128), _unit(rng, 50, 128)
    ids = np.array([[4, 0, -1]] * 30)
    scores = exact_scores(q, t, ids)
    assert scores.dtype == np.float64 and np.isneginf(scores[:, 2]).all()
    np.testing.assert_allclose(scores[:, 0], q.astype(np.float64) @ t[4].astype(np.float64), rtol=1e-12)
    # a pair scores the same bits whatever else is scored with it (FAISS's float32 scores do not: BLAS for large
    # searches, SIMD loops for small ones)
    np.testing.assert_array_equal(exact_scores(q[7:8], t, ids[:1]), scores[7:8])
    np.testing.assert_array_equal(exact_scores(q, t, ids, chunk=7), scores)
    with pytest.raises(ValueError, match="ids reach row 50"):
        exact_scores(q, t, np.full((30, 1), 50))
    with pytest.raises(ValueError, match="expected queries"):
        exact_scores(q, t, ids[:3])
