"""A LinkTransformer-style dataframe API: merge, merge_knn, dedup_rows, cluster_rows, aggregate_rows, train_model.

Tables in, tables out. Every function takes pandas DataFrames and the columns to compare (``on``, or
``left_on``/``right_on`` when the names differ), and a ``method``:

- ``"embedding"``: texts embedded by a local sentence-transformers-compatible directory (``model``), mean (or
  CLS) pooled as its ``1_Pooling/config.json`` says, L2-normalised; nearest neighbours by inner product
  (cosine) in a FAISS ``IndexFlatIP``. Scores are cosine similarities in [-1, 1].
- ``"jaro_winkler"``, ``"levenshtein"``, ``"ngram"``: the string baselines of :mod:`linkage_pipeline.linking.strings`
  on the case-folded texts (which also drops whitespace, see :func:`linkage_pipeline.linking.strings.normalize`);
  scores in [0, 1].
- ``"fellegi_sunter"``: the Fellegi-Sunter engine of :mod:`linkage_pipeline.probabilistic`, fitted by EM on
  all pairs of the two tables and comparing the case-folded columns field by field (Jaro-Winkler levels, or
  per column ``fs_options={"comparisons": ["jaro_winkler", "exact", ...]}``); scores are
  posterior match probabilities in (0, 1), and only pairs at or above ``threshold`` (default
  :data:`~linkage_pipeline.probabilistic.DEFAULT_MATCH_THRESHOLD`) are candidates.
- ``"auto"`` (default): ``"fellegi_sunter"`` with two or more columns per side, else ``"embedding"`` when a
  ``model`` is given, else ``"jaro_winkler"``.

Several columns per side are joined into one text for the embedding and string methods, deterministically:
the values in the order the columns were given (``on=["name", "city"]`` reads ``"<name> <city>"``), each
written with ``str``, missing values (None, NaN, NA, empty) left out, joined by ``sep`` (default one space).
See :func:`row_texts`.

Missing values are missing, never equal: a row whose compared values are all missing (an empty text) is linked
to nothing and nothing is linked to it, by every method, so :func:`merge` leaves it unmatched and
:func:`dedup_rows` keeps it. Fellegi-Sunter compares field by field: a field missing on either side contributes no
evidence, and a pair missing every field is never linked.

Where this API differs from LinkTransformer on purpose: :func:`merge` takes a ``threshold`` below which a left
row keeps NaN for the right side (a left join); :func:`dedup_rows` keeps every singleton row (LinkTransformer
collapses all singletons into one); the column order of the joined text is the user's, not a set's.

Example:
    >>> import pandas as pd
    >>> from linkage_pipeline import api
    >>> left = pd.DataFrame({"firm": ["Acme Corp", "Globex Inc", "Zeta Ltd"]})
    >>> right = pd.DataFrame({"firm": ["ACME Corporation", "Globex Incorporated"], "id": [1, 2]})
    >>> out = api.merge(left, right, on="firm", method="jaro_winkler", threshold=0.8)
    >>> out["id"].tolist()
    [1.0, 2.0, nan]
"""

from __future__ import annotations

from linkage_pipeline.api.frames import (
    CLUSTER_COLUMN,
    DEFAULT_CLUSTER_THRESHOLDS,
    METHODS,
    aggregate_rows,
    cluster_rows,
    dedup_rows,
    merge,
    merge_knn,
)
from linkage_pipeline.api.text import (
    DEFAULT_BATCH_SIZE,
    TextEncoder,
    load_text_encoder,
    pool,
    row_texts,
)
from linkage_pipeline.api.train import train_model

__all__ = [
    "CLUSTER_COLUMN",
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_CLUSTER_THRESHOLDS",
    "METHODS",
    "TextEncoder",
    "TrainResult",
    "aggregate_rows",
    "cluster_rows",
    "dedup_rows",
    "load_text_encoder",
    "merge",
    "merge_knn",
    "pool",
    "row_texts",
    "train_model",
]


def __getattr__(name: str) -> object:
    # TrainResult lives with the one training loop (multimodal.training.trainer), which imports torch; importing
    # it lazily keeps `from linkage_pipeline import api` free of torch for the string methods.
    if name == "TrainResult":
        from linkage_pipeline.multimodal.training.trainer import TrainResult

        return TrainResult
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
