"""Top-k rows from score matrices, as frames."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:  # training imports torch; this module must stay light
    pass

logger = logging.getLogger(__name__)


def topk_frame_arrays(
    scores: np.ndarray, ids: np.ndarray, query_ids: Sequence[str], target_ids: Sequence[str]
) -> dict[str, np.ndarray]:
    """Flatten a search result into columns query_id, target_id, rank (1-based), score (row-major)."""
    m, kk = ids.shape
    if len(query_ids) != m:
        raise ValueError(f"got {len(query_ids)} query ids for {m} result rows; expected one per row")
    t = np.asarray(target_ids, dtype=object)
    flat = ids.reshape(-1)
    valid = flat >= 0  # FAISS pads with -1 when fewer than k results exist (IVF with few probed lists)
    return {
        "query_id": np.repeat(np.asarray(query_ids, dtype=object), kk)[valid],
        "target_id": t[flat[valid]],
        "rank": np.tile(np.arange(1, kk + 1), m)[valid],
        "score": scores.reshape(-1)[valid].astype(np.float64),
    }


def topk_rows(found: pd.DataFrame, k: int) -> pd.DataFrame:
    """Best ``k`` rows per ``query_crop_id`` by ``score``, ties by ``target_crop_id`` (the order of a full search
    over targets sorted by id), ``rank`` renumbered from 1; a target listed twice for a query counts once (a run
    stopped between writing links and what they were computed from lists it again)."""
    found = found.sort_values(["query_crop_id", "score", "target_crop_id"], ascending=[True, False, True],
                              kind="stable")
    found = found.drop_duplicates(["query_crop_id", "target_crop_id"])
    found = found.groupby("query_crop_id", sort=False).head(k).copy()
    found["rank"] = found.groupby("query_crop_id", sort=False).cumcount() + 1
    return found
