"""Nearest-neighbour matching of embeddings with FAISS: exact inner product by default, GPU or ANN on request.

Embeddings are L2-normalised, so the inner product is the cosine similarity. :func:`build_index` makes an exact
``IndexFlatIP`` (the default: a few hundred thousand targets search in seconds), an ``IVF`` index (inverted
lists, ``nprobe`` lists searched) or an ``HNSW`` graph for millions of targets. On a CUDA device with faiss-gpu
installed the flat and IVF indexes run on the GPU; asking for CUDA without faiss-gpu is an error, never a silent
CPU run. :func:`save_index` writes the index with a JSON sidecar (model id, row ids, kind) so that an index built
with one model is never searched with another model's queries (:func:`load_index` checks).
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

logger = logging.getLogger(__name__)


IndexKind = Literal["flat", "ivf", "hnsw"]
INDEX_KINDS: tuple[str, ...] = ("flat", "ivf", "hnsw")


def faiss_gpu_available() -> bool:
    """Whether the installed faiss has GPU support and sees at least one GPU."""
    import faiss

    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def faiss_device(requested: str, torch_device: str) -> str:
    """The device FAISS runs on: ``requested``, or for ``auto`` the GPU when the compute device ``torch_device``
    (``"cuda"``, ``"cpu"``, ...) is CUDA and faiss-gpu is installed, else the CPU."""
    if requested != "auto":
        return requested
    return "cuda" if torch_device == "cuda" and faiss_gpu_available() else "cpu"


@dataclass(frozen=True)
class IndexSpec:
    """How to index target embeddings.

    Attributes:
        kind: ``flat`` (exact), ``ivf`` (inverted lists over a k-means coarse quantiser) or ``hnsw`` (graph).
        nlist: IVF lists (``None``: ``4 * sqrt(n)``, at most ``n // 39`` so k-means has 39 points per centroid).
        nprobe: IVF lists searched per query.
        hnsw_m: HNSW neighbours per node.
        ef_search: HNSW search breadth.
        device: ``cpu`` or ``cuda``/``cuda:N`` (flat and IVF only; needs faiss-gpu).
    """

    kind: str = "flat"
    nlist: int | None = None
    nprobe: int = 16
    hnsw_m: int = 32
    ef_search: int = 128
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.kind not in INDEX_KINDS:
            raise ValueError(f"index kind must be one of {INDEX_KINDS}, got {self.kind!r}")
        if self.nprobe < 1 or self.hnsw_m < 2 or self.ef_search < 1 or (self.nlist is not None and self.nlist < 1):
            raise ValueError(f"nprobe >= 1, hnsw_m >= 2, ef_search >= 1 and nlist >= 1 expected, got {self}")
        if not (self.device == "cpu" or self.device.startswith("cuda")):
            raise ValueError(f"device must be 'cpu' or 'cuda[:N]', got {self.device!r}")
        if self.device.startswith("cuda") and self.kind == "hnsw":
            raise ValueError("HNSW indexes run on the CPU only; use kind='flat' or 'ivf' on a GPU")


def _as_matrix(x: np.ndarray, name: str) -> np.ndarray:
    a = np.ascontiguousarray(x, dtype=np.float32)
    if a.ndim != 2:
        raise ValueError(f"{name} must be a 2-D float array (n, d), got shape {a.shape}")
    if not np.isfinite(a).all():
        bad = int(np.flatnonzero(~np.isfinite(a).all(axis=1))[0])
        raise ValueError(f"{name} has non-finite values (first in row {bad}); expected finite embeddings")
    return a


def _gpu_id(device: str) -> int:
    return int(device.split(":", 1)[1]) if ":" in device else 0


def _to_gpu(index: Any, device: str) -> Any:
    import faiss

    if not faiss_gpu_available():
        raise RuntimeError(
            f"device {device!r} asks for a GPU index, but this faiss has no GPU support or sees no GPU; "
            "install the gpu extra (pip install -e .[gpu]) or use device='cpu'"
        )
    res = faiss.StandardGpuResources()
    index = faiss.index_cpu_to_gpu(res, _gpu_id(device), index)
    index.referenced_resources = res  # keep the resources alive as long as the index
    return index


def build_index(targets: np.ndarray, spec: IndexSpec | None = None) -> Any:
    """Index ``targets`` for inner-product search.

    Args:
        targets: float32 (n, d) embeddings (L2-normalised for cosine scores), ``n >= 1``.
        spec: How to index (default: exact flat index on the CPU).

    Returns:
        A FAISS index holding the ``n`` targets in order (GPU-resident when ``spec.device`` is CUDA).

    Raises:
        ValueError: On an empty or malformed matrix, or too few targets to train an IVF index.
        RuntimeError: If a GPU is asked for and faiss-gpu or CUDA is missing.
    """
    import faiss

    spec = spec or IndexSpec()
    x = _as_matrix(targets, "targets")
    n, d = x.shape
    if n == 0:
        raise ValueError("targets is empty; expected at least one target embedding to index")
    start = time.perf_counter()
    if spec.kind == "flat":
        index = faiss.IndexFlatIP(d)
    elif spec.kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, spec.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = spec.ef_search
    else:
        nlist = spec.nlist or max(1, min(int(4 * np.sqrt(n)), n // 39))
        if n < nlist:
            raise ValueError(f"an IVF index with nlist={nlist} needs at least {nlist} targets, got {n}")
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
        index.nprobe = min(spec.nprobe, nlist)
    if spec.device.startswith("cuda"):
        index = _to_gpu(index, spec.device)
    if not index.is_trained:
        index.train(x)
    index.add(x)
    logger.info("built %s index of %d x %d on %s in %.2fs", spec.kind, n, d, spec.device, time.perf_counter() - start)
    return index


def search(index: Any, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best targets of each query.

    Args:
        index: From :func:`build_index` or :func:`load_index`.
        queries: float32 (m, d).
        k: Neighbours per query, ``>= 1``; capped at the number of targets.

    Returns:
        ``(scores, ids)``: float32 (m, k') inner products, best first, and int64 (m, k') target rows,
        ``k' = min(k, n_targets)``.

    Raises:
        ValueError: On a bad ``k`` or a dimension mismatch.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    q = _as_matrix(queries, "queries")
    if q.shape[1] != index.d:
        raise ValueError(f"queries have dimension {q.shape[1]}, the index {index.d}; embed both with one model")
    kk = min(k, int(index.ntotal))
    if len(q) == 0 or kk == 0:
        return np.zeros((len(q), kk), np.float32), np.zeros((len(q), kk), np.int64)
    scores, ids = index.search(q, kk)
    return scores, ids.astype(np.int64)


def exact_scores(queries: np.ndarray, targets: np.ndarray, ids: np.ndarray, *, chunk: int = 2048) -> np.ndarray:
    """Inner products of every query with its listed targets, in float64 from the float32 vectors.

    FAISS's float32 score of one pair depends on how it was computed: a BLAS matrix product for a large search
    (many queries times many targets), SIMD loops for a small one, another blocking for another size. So a pair
    scores differently in the last bits when a new page changes which queries are searched together (an
    incremental run searches a page's queries alone, a full run all of them), and near-ties (one firm listed
    twice) swap places. A product of two float32 numbers is exact in float64 and each sum runs over ``d`` in one fixed order,
    so these scores are a function of the two vectors alone.

    Args:
        queries: float32 (m, d).
        targets: float32 (n, d).
        ids: int64 (m, k) rows of ``targets`` per query; ``-1`` for none (FAISS's padding).

    Returns:
        float64 (m, k); ``-inf`` where ``ids`` is ``-1``.

    Raises:
        ValueError: If the shapes do not fit together or an id is out of range.
    """
    q = np.asarray(queries, dtype=np.float32)
    t = np.asarray(targets, dtype=np.float32)
    ids = np.asarray(ids, dtype=np.int64)
    shapes_fit = q.ndim == t.ndim == ids.ndim == 2 and ids.shape[0] == q.shape[0]
    if not shapes_fit or (len(q) and len(t) and q.shape[1] != t.shape[1]):
        raise ValueError(
            f"expected queries (m, d), targets (n, d) and ids (m, k); got {q.shape}, {t.shape} and {ids.shape}"
        )
    if ids.size and int(ids.max(initial=-1)) >= t.shape[0]:
        raise ValueError(f"ids reach row {int(ids.max())} but there are {t.shape[0]} targets")
    out = np.full(ids.shape, -np.inf, dtype=np.float64)
    for start in range(0, ids.shape[0], chunk):
        rows = ids[start : start + chunk]
        valid = rows >= 0
        pairs = q[start : start + chunk, None, :].astype(np.float64) * t[np.where(valid, rows, 0)].astype(np.float64)
        out[start : start + chunk] = np.where(valid, pairs.sum(axis=-1), -np.inf)
    return out


def knn(
    queries: np.ndarray, targets: np.ndarray, k: int, spec: IndexSpec | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Build an index over ``targets`` and search it (see :func:`build_index` and :func:`search`)."""
    return search(build_index(targets, spec), queries, k)


@dataclass
class IndexMeta:
    """What a stored index holds: the sidecar JSON of :func:`save_index`.

    Attributes:
        model_id: Id of the model that embedded the targets.
        ids: Row ids of the targets (crop ids), in index order.
        kind: Index kind.
        dim: Embedding dimension.
        extra: Anything else worth keeping (source, condition, method, weight).
    """

    model_id: str
    ids: list[str]
    kind: str
    dim: int
    extra: dict[str, Any] = field(default_factory=dict)


def save_index(index: Any, path: str | Path, meta: IndexMeta) -> Path:
    """Write ``index`` to ``path`` and ``meta`` to ``path + '.json'``, each atomically (temp file, rename).

    A GPU index is copied to the CPU first, so the file loads anywhere.

    Returns:
        ``path``.

    Raises:
        ValueError: If the index and ``meta.ids`` disagree on the number of targets.
    """
    import faiss

    if int(index.ntotal) != len(meta.ids):
        raise ValueError(f"index holds {index.ntotal} vectors but meta has {len(meta.ids)} ids; expected equal")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    if hasattr(faiss, "index_gpu_to_cpu") and "Gpu" in type(index).__name__:
        index = faiss.index_gpu_to_cpu(index)
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    faiss.write_index(index, str(tmp))
    os.replace(tmp, out)
    side = out.with_name(out.name + ".json")
    tmp_side = side.with_name(side.name + f".tmp{os.getpid()}")
    tmp_side.write_text(json.dumps(asdict(meta), ensure_ascii=False), encoding="utf-8")
    os.replace(tmp_side, side)
    return out


def load_index(path: str | Path, *, model_id: str | None = None, device: str = "cpu") -> tuple[Any, IndexMeta]:
    """Read an index written by :func:`save_index`.

    Args:
        path: The index file.
        model_id: When given, the index must have been built with this model.
        device: ``cpu`` or ``cuda[:N]`` (moves flat/IVF indexes to the GPU).

    Raises:
        FileNotFoundError: If the index or its sidecar is missing.
        ValueError: If it was built with another model, or the sidecar disagrees with the index.
    """
    import faiss

    src = Path(path)
    side = src.with_name(src.name + ".json")
    if not src.is_file() or not side.is_file():
        raise FileNotFoundError(f"index {src} or its metadata {side.name} is missing; rebuild the faiss_index asset")
    meta = IndexMeta(**json.loads(side.read_text(encoding="utf-8")))
    if model_id is not None and meta.model_id != model_id:
        raise ValueError(
            f"index {src} was built with model {meta.model_id[:12]}, not {model_id[:12]}; rebuild it with the "
            "current model (mixing embeddings of two models gives meaningless scores)"
        )
    index = faiss.read_index(str(src))
    if int(index.ntotal) != len(meta.ids):
        raise ValueError(f"index {src} holds {index.ntotal} vectors but its metadata lists {len(meta.ids)} ids")
    if device.startswith("cuda"):
        index = _to_gpu(index, device)
    return index, meta
