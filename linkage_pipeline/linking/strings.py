"""String-matching baselines: the methods the CLIPPINGS paper compares against (its Table 1, Panel A).

Every method scores a query string against every target string with a similarity in ``[0, 1]`` and keeps the
``k`` best targets per query. Texts are normalised with :func:`normalize` (NFKC, whitespace removed) and
nothing more: old and new character forms (會社/会社, 販賣/販売) are deliberately *not* folded, because that
variation is exactly what string matching on historical Japanese fails at and what the learned encoders are
meant to absorb.

Methods (:data:`STRING_METHODS`):

- ``levenshtein``: ``1 - d / max(len(a), len(b))`` with ``d`` the Levenshtein edit distance
  (``rapidfuzz.distance.Levenshtein.normalized_similarity``); the paper's string baseline.
- ``jaro_winkler``: Jaro-Winkler similarity with prefix weight 0.1 (``rapidfuzz.distance.JaroWinkler``).
- ``ngram``: cosine similarity of character n-gram count vectors, 1- and 2-grams by default (firm names are
  3-10 characters, so unigrams carry most of the signal and bigrams add order). The paper uses *stroke*
  n-grams, which need a character-to-stroke table we do not ship; character n-grams are the closest stand-in.
"""

from __future__ import annotations

import logging
import math
import unicodedata
from collections import Counter
from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
from rapidfuzz import process
from rapidfuzz.distance import JaroWinkler, Levenshtein

logger = logging.getLogger(__name__)


#: Names accepted by ``method`` in :func:`topk_string_matches` and :func:`string_similarity_matrix`.
STRING_METHODS = ("levenshtein", "jaro_winkler", "ngram")

#: Default character n-gram orders (inclusive) of the ``ngram`` method.
DEFAULT_NGRAM_RANGE = (1, 2)

# Upper bound on the number of cells in one dense block of the similarity matrix (64 MiB as float32): queries are
# scored in row blocks of at most this size so that memory stays flat for large target sources.
_MAX_BLOCK_CELLS = 1 << 24


def normalize(text: str | None) -> str:
    """Normalise a text for string matching: Unicode NFKC, then all whitespace removed.

    NFKC unifies full-width/half-width forms and enclosed abbreviations (``㈱`` becomes ``(株)``). Whitespace
    carries no meaning inside Japanese firm names and OCR engines insert it at random, so it is removed
    everywhere, not only at the ends. Old and new character forms are *not* folded.

    Args:
        text: The text; ``None`` (missing OCR), float NaN and ``pd.NA`` (pandas' missing values) read as ``""``.

    Returns:
        The normalised text.

    Raises:
        ValueError: If ``text`` is neither a string nor missing.
    """
    if isinstance(text, str):
        return "".join(unicodedata.normalize("NFKC", text).split())
    if text is None or text is pd.NA or (isinstance(text, float) and math.isnan(text)):
        return ""
    raise ValueError(f"normalize expects a str (or None for missing text), got {type(text).__name__}: {text!r}")


def _normalize_all(texts: Sequence[str], name: str) -> list[str]:
    if isinstance(texts, str):
        raise ValueError(f"{name} must be a sequence of strings, got a single str {texts!r}")
    try:
        items = list(texts)
    except TypeError as exc:
        raise ValueError(f"{name} must be a sequence of strings, got {type(texts).__name__}") from exc
    out = []
    for i, t in enumerate(items):
        try:
            out.append(normalize(t))
        except ValueError as exc:
            raise ValueError(f"{name}[{i}]: {exc}") from exc
    return out


def _check_method(method: str) -> None:
    if method not in STRING_METHODS:
        raise ValueError(f"unknown string method {method!r}; expected one of {', '.join(STRING_METHODS)}")


def _check_ngram_range(ngram_range: tuple[int, int]) -> tuple[int, int]:
    try:
        lo, hi = (int(v) for v in ngram_range)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"ngram_range must be a pair of ints (min_n, max_n), got {ngram_range!r}") from exc
    if not 1 <= lo <= hi:
        raise ValueError(f"ngram_range must satisfy 1 <= min_n <= max_n, got {ngram_range!r}")
    return lo, hi


def _ngrams(text: str, lo: int, hi: int) -> Counter[str]:
    return Counter(text[i : i + n] for n in range(lo, hi + 1) for i in range(len(text) - n + 1))


def _ngram_matrices(
    queries: list[str], targets: list[str], ngram_range: tuple[int, int]
) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """L2-normalised n-gram count matrices over a shared vocabulary: (n_q, V) and (n_t, V) float64 CSR.

    float64 so that a string compared with itself scores exactly 1.0 after the cast to float32.
    """
    lo, hi = ngram_range
    vocab: dict[str, int] = {}

    def build(texts: list[str]) -> tuple[list[int], list[int], list[float]]:
        indptr: list[int] = [0]
        indices: list[int] = []
        data: list[float] = []
        for text in texts:
            counts = _ngrams(text, lo, hi)
            norm = math.sqrt(sum(c * c for c in counts.values())) or 1.0
            # sorted() makes the vocabulary (and therefore float summation order) independent of hash seeds
            for gram in sorted(counts):
                indices.append(vocab.setdefault(gram, len(vocab)))
                data.append(counts[gram] / norm)
            indptr.append(len(indices))
        return indptr, indices, data

    q_parts = build(queries)
    t_parts = build(targets)
    size = max(len(vocab), 1)
    q = sp.csr_matrix((np.asarray(q_parts[2], np.float64), q_parts[1], q_parts[0]), shape=(len(queries), size))
    t = sp.csr_matrix((np.asarray(t_parts[2], np.float64), t_parts[1], t_parts[0]), shape=(len(targets), size))
    return q, t


def _edit_scorer(method: str):
    """The rapidfuzz similarity of ``levenshtein`` or ``jaro_winkler``, normalised to [0, 1]."""
    return Levenshtein.normalized_similarity if method == "levenshtein" else JaroWinkler.normalized_similarity


def _score_block(
    queries: list[str],
    targets: list[str],
    method: str,
    workers: int,
    q_ngrams: sp.csr_matrix | None,
    t_ngrams_T: sp.csc_matrix | None,
) -> np.ndarray:
    """Dense (len(queries), len(targets)) float32 similarities in [0, 1] for one block of queries."""
    if method == "ngram":
        assert q_ngrams is not None and t_ngrams_T is not None
        block = (q_ngrams @ t_ngrams_T).toarray().astype(np.float32)
    else:
        scorer = _edit_scorer(method)
        block = process.cdist(queries, targets, scorer=scorer, dtype=np.float32, workers=workers)
    # rapidfuzz scores two empty strings 1.0; an empty OCR result must never look like a perfect match
    empty_q = np.fromiter((not q for q in queries), dtype=bool, count=len(queries))
    empty_t = np.fromiter((not t for t in targets), dtype=bool, count=len(targets))
    block[empty_q, :] = 0.0
    block[:, empty_t] = 0.0
    np.clip(block, 0.0, 1.0, out=block)  # float32 cosine can land a hair above 1
    return block


def _iter_blocks(
    queries: Sequence[str],
    targets: Sequence[str],
    method: str,
    workers: int,
    ngram_range: tuple[int, int],
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (row_start, dense block) over row blocks of the (n_q, n_t) similarity matrix."""
    q_norm = _normalize_all(queries, "queries")
    t_norm = _normalize_all(targets, "targets")
    q_ng = t_ng_T = None
    if method == "ngram":
        q_ng, t_ng = _ngram_matrices(q_norm, t_norm, ngram_range)
        t_ng_T = t_ng.T.tocsc()
    rows = max(1, _MAX_BLOCK_CELLS // max(len(t_norm), 1))
    for start in range(0, len(q_norm), rows):
        stop = min(start + rows, len(q_norm))
        q_block = q_ng[start:stop] if q_ng is not None else None
        yield start, _score_block(q_norm[start:stop], t_norm, method, workers, q_block, t_ng_T)


def _check_workers(workers: int) -> None:
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers == 0 or workers < -1:
        raise ValueError(f"workers must be a positive int or -1 (all cores), got {workers!r}")


def string_similarity_matrix(
    queries: Sequence[str],
    targets: Sequence[str],
    *,
    method: str,
    workers: int = -1,
    ngram_range: tuple[int, int] = DEFAULT_NGRAM_RANGE,
) -> np.ndarray:
    """All-pairs string similarity.

    Args:
        queries: ``n_q`` texts (``None`` reads as empty).
        targets: ``n_t`` texts.
        method: One of :data:`STRING_METHODS`.
        workers: CPU threads for rapidfuzz (``-1`` = all cores); unused by ``ngram``.
        ngram_range: Inclusive (min_n, max_n) character n-gram orders of the ``ngram`` method.

    Returns:
        float32 array of shape ``(n_q, n_t)`` with similarities in ``[0, 1]``; rows of empty queries and
        columns of empty targets are 0.

    Raises:
        ValueError: On an unknown method, bad ``workers``/``ngram_range``, or non-string texts.
    """
    _check_method(method)
    _check_workers(workers)
    ngram_range = _check_ngram_range(ngram_range)
    n_q, n_t = len(queries), len(targets)
    out = np.zeros((n_q, n_t), dtype=np.float32)
    if n_t == 0:
        _normalize_all(queries, "queries")  # still reject bad input
        return out
    for start, block in _iter_blocks(queries, targets, method, workers, ngram_range):
        out[start : start + block.shape[0]] = block
    return out


def pairwise_string_similarity(
    queries: Sequence[str],
    targets: Sequence[str],
    *,
    method: str,
    ngram_range: tuple[int, int] = DEFAULT_NGRAM_RANGE,
) -> np.ndarray:
    """Similarity of aligned pairs: ``out[i]`` is :func:`string_similarity_matrix`'s score of ``queries[i]`` against
    ``targets[i]`` (same normalisation, same scores), without scoring every other pair.

    Raises:
        ValueError: If the two lists differ in length, or as :func:`string_similarity_matrix`.
    """
    _check_method(method)
    ngram_range = _check_ngram_range(ngram_range)
    if len(queries) != len(targets):
        raise ValueError(f"pairwise similarity needs aligned lists; got {len(queries)} queries and "
                         f"{len(targets)} targets")
    qs, ts = _normalize_all(queries, "queries"), _normalize_all(targets, "targets")
    if not qs:
        return np.zeros(0, dtype=np.float32)
    if method == "ngram":
        # each distinct text's n-grams once (a query meets each of its candidates), then the pairs' rows
        position = {text: i for i, text in enumerate(dict.fromkeys(qs + ts))}
        vectors, _ = _ngram_matrices(list(position), [], ngram_range)
        q = vectors[np.fromiter((position[x] for x in qs), dtype=np.int64, count=len(qs))]
        t = vectors[np.fromiter((position[x] for x in ts), dtype=np.int64, count=len(ts))]
        out = np.asarray(q.multiply(t).sum(axis=1), dtype=np.float64).ravel().astype(np.float32)
    else:
        scorer = _edit_scorer(method)
        out = np.fromiter((scorer(a, b) for a, b in zip(qs, ts, strict=True)), dtype=np.float32, count=len(qs))
    empty = np.fromiter((not a or not b for a, b in zip(qs, ts, strict=True)), dtype=bool, count=len(qs))
    out[empty] = 0.0
    return np.clip(out, 0.0, 1.0)


def _topk_desc(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k per row, best first, ties broken by lowest column index.

    Args:
        scores: float32 (r, n) block, no NaN.
        k: 0 <= k <= n.

    Returns:
        int64 (r, k) indices and float32 (r, k) scores.
    """
    r, n = scores.shape
    if k == 0 or r == 0:
        return np.zeros((r, k), np.int64), np.zeros((r, k), np.float32)
    neg = -scores
    if k >= n:
        idx = np.argsort(neg, axis=1, kind="stable")
    else:
        # argpartition is O(n) but picks arbitrarily among scores tied with the k-th best; rows with such
        # boundary ties fall back to a full stable sort so the lowest target index always wins.
        part = np.argpartition(neg, k - 1, axis=1)[:, :k]
        rows = np.arange(r)[:, None]
        kth = neg[rows, part].max(axis=1)
        boundary_ties = (neg <= kth[:, None]).sum(axis=1) > k
        # sort the k candidates by (score desc, index asc): lexsort's last key is the primary one
        cand_scores = neg[rows, part]
        order = np.lexsort((part, cand_scores), axis=1)
        idx = np.take_along_axis(part, order, axis=1)
        if boundary_ties.any():
            tied = np.flatnonzero(boundary_ties)
            idx[tied] = np.argsort(neg[tied], axis=1, kind="stable")[:, :k]
    idx = idx[:, :k].astype(np.int64, copy=False)
    return idx, np.take_along_axis(scores, idx, axis=1).astype(np.float32, copy=False)


def topk_string_matches(
    queries: Sequence[str],
    targets: Sequence[str],
    *,
    method: str,
    k: int = 10,
    workers: int = -1,
    ngram_range: tuple[int, int] = DEFAULT_NGRAM_RANGE,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` most similar targets of every query by a string-matching baseline.

    The similarity matrix is computed in row blocks (at most 2**24 cells each), so memory stays bounded
    for large target sources; ``levenshtein`` and ``jaro_winkler`` run multi-threaded in
    ``rapidfuzz.process.cdist``.

    Args:
        queries: ``n_q`` query texts (e.g. OCR of supply-chain list entries); ``None`` reads as empty.
        targets: ``n_t`` target texts (e.g. OCR of directory entries).
        method: One of :data:`STRING_METHODS`.
        k: Neighbours per query; clipped to ``n_t``.
        workers: CPU threads for rapidfuzz (``-1`` = all cores); unused by ``ngram``.
        ngram_range: Inclusive (min_n, max_n) character n-gram orders of the ``ngram`` method.

    Returns:
        ``(indices, scores)``: int64 array ``(n_q, min(k, n_t))`` of target positions and float32 array of the
        same shape with similarities in ``[0, 1]``, best first; equal scores are ordered by lowest target
        index. Empty query strings score 0 against everything. With no targets both have shape ``(n_q, 0)``.

    Raises:
        ValueError: On an unknown method (the message lists :data:`STRING_METHODS`), a negative or non-int
            ``k``, bad ``workers``/``ngram_range``, or non-string texts.
    """
    _check_method(method)
    _check_workers(workers)
    ngram_range = _check_ngram_range(ngram_range)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
        raise ValueError(f"k must be a non-negative int, got {k!r}")
    n_q, n_t = len(queries), len(targets)
    k_eff = min(int(k), n_t)
    indices = np.zeros((n_q, k_eff), dtype=np.int64)
    scores = np.zeros((n_q, k_eff), dtype=np.float32)
    if n_t == 0 or k_eff == 0:
        _normalize_all(queries, "queries")
        _normalize_all(targets, "targets")
        return indices, scores
    for start, block in _iter_blocks(queries, targets, method, workers, ngram_range):
        idx, sc = _topk_desc(block, k_eff)
        indices[start : start + block.shape[0]] = idx
        scores[start : start + block.shape[0]] = sc
    logger.debug("topk_string_matches: method=%s n_q=%d n_t=%d k=%d", method, n_q, n_t, k_eff)
    return indices, scores
