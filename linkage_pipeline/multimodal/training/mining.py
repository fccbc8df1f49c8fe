"""Offline hard-negative mining: batches of firms whose names lie closest together."""

from __future__ import annotations

import numpy as np


# ------------------------------------------------------------------------------------------------ mining
def nearest_classes(class_emb: np.ndarray, k: int) -> np.ndarray:
    """Hard-negative sets: each class with its ``k - 1`` nearest other classes (cosine).

    Args:
        class_emb: float (C, d), one embedding per class (e.g. of one random view).
        k: Set size, ``1 <= k <= C``.

    Returns:
        int64 (C, k): row ``c`` is ``c`` followed by the ``k - 1`` most similar other classes, most similar first.

    Raises:
        ValueError: If ``k`` is out of range or ``class_emb`` is not 2-D.
    """
    if class_emb.ndim != 2:
        raise ValueError(f"class_emb must be (C, d), got shape {class_emb.shape}")
    c = class_emb.shape[0]
    if not 1 <= k <= c:
        raise ValueError(f"k must be in [1, {c}] (the number of classes), got {k}")
    e = class_emb.astype(np.float32)
    e = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
    sim = e @ e.T
    np.fill_diagonal(sim, -np.inf)
    others = np.argsort(-sim, axis=1, kind="stable")[:, : k - 1]
    return np.concatenate([np.arange(c)[:, None], others], axis=1).astype(np.int64)


def hard_negative_batches(
    neighbours: np.ndarray, labels: np.ndarray, *, m: int, batch_size: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """One epoch of batches: shuffled hard-negative sets, ``batch_size // (k * m)`` sets per batch.

    Each class of a batch contributes ``m`` views (rows of ``labels``), drawn without replacement when it has
    that many and with replacement otherwise; a class in two sets of one batch is taken once.

    Args:
        neighbours: int (C, k) from :func:`nearest_classes`.
        labels: int (n,) class of each training row.
        m: Views per class, ``>= 2`` (SupCon needs a positive).
        batch_size: Rows per batch, ``>= k * m``.
        rng: Randomness of the epoch.

    Returns:
        Row-index arrays (int64), one per batch, each at most ``batch_size`` long.

    Raises:
        ValueError: If ``m`` or ``batch_size`` are out of range.
    """
    c, k = neighbours.shape
    if m < 2:
        raise ValueError(f"m must be >= 2 views per class, got {m}")
    if batch_size < k * m:
        raise ValueError(f"batch_size must be >= k * m = {k * m}, got {batch_size}")
    order_rows = np.argsort(labels, kind="stable")  # one sort, not one scan of the labels per class
    classes_present, starts = np.unique(labels[order_rows], return_index=True)
    rows_of: dict[int, np.ndarray] = {
        int(cls): rows for cls, rows in zip(classes_present, np.split(order_rows, starts[1:]), strict=True)
    }
    sets_per_batch = batch_size // (k * m)
    order = rng.permutation(c)
    batches = []
    for start in range(0, c, sets_per_batch):
        classes = list(dict.fromkeys(int(x) for x in neighbours[order[start : start + sets_per_batch]].ravel()))
        rows = []
        for cls in classes:
            pool = rows_of.get(cls)
            if pool is None or len(pool) == 0:
                continue
            rows.append(rng.choice(pool, size=m, replace=len(pool) < m))
        if rows:
            batches.append(np.concatenate(rows).astype(np.int64))
    return batches
