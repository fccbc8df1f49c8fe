"""Data-quality measures behind the asset checks: each returns numbers, the caller decides pass/fail."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from linkage_pipeline.schema import require_columns


@dataclass(frozen=True)
class CheckOutcome:
    """One check's verdict with the numbers that justify it."""

    passed: bool
    description: str
    metadata: dict[str, object]


def pages_without_regions(pages: pd.DataFrame, regions: pd.DataFrame) -> CheckOutcome:
    """Fails when a page that reached layout (blank pages are rejected earlier) got no region at all.

    Args:
        pages: ``page_images`` rows of one source (``page_id``, ``file``).
        regions: ``layout_regions`` rows of the same source (``page_id``).
    """
    require_columns(pages, ("page_id", "file"), "pages")
    require_columns(regions, ("page_id",), "regions")
    empty = sorted(pages.loc[~pages["page_id"].isin(set(regions["page_id"])), "file"].astype(str))
    return CheckOutcome(
        passed=not empty,
        description=f"{len(empty)} of {len(pages)} inked pages have no detected region"
        + (f": {', '.join(empty[:10])}" if empty else ""),
        metadata={"pages": len(pages), "pages_without_regions": len(empty), "files": ", ".join(empty[:20])},
    )


def _weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    order = np.argsort(values, kind="stable")
    cum = np.cumsum(weights[order])
    return float(values[order][np.searchsorted(cum, 0.5 * cum[-1])])


def regions_per_page(pages: pd.DataFrame, regions: pd.DataFrame) -> CheckOutcome:
    """Fails when a page's regions are not type: more than its size allows at its type size, or too small to read.

    Each page's type size ``s`` is the area-weighted median extent of its regions across the text direction
    (height on horizontal pages, width on vertical ones): the size most of the page's region area is set in, so
    thousands of specks do not drag it down to their own size while the page's names outweigh them. The page
    fails when it holds more than :func:`linkage_pipeline.documents.layout.max_regions` (``W * H / (2.2 * s^2)``)
    regions, or when even that size is below ``layout.MIN_TYPE_SIZE`` (8 px, the smallest type OCR reads: the
    page's regions are specks, not type). The layout stage rejects such pages itself; this check catches what
    slipped through (regions kept from an older run, another detector) and reports the distribution per source.

    Args:
        pages: ``page_images`` rows of one source (``page_id``, ``file``, ``width``, ``height``).
        regions: ``layout_regions`` rows of the same source (``page_id``, ``x0``, ``y0``, ``x1``, ``y1``,
            ``direction``).

    Returns:
        The verdict; metadata: pages with regions, median / 95th percentile / largest regions per page, pages
        failing, and the largest count as a share of its page's bound.
    """
    from linkage_pipeline.documents.layout import (  # layout pulls in OpenCV: only when checked
        MIN_TYPE_SIZE,
        max_regions,
    )

    require_columns(pages, ("page_id", "file", "width", "height"), "pages")
    require_columns(regions, ("page_id", "x0", "y0", "x1", "y1", "direction"), "regions")
    if regions.empty:
        return CheckOutcome(True, "no regions: nothing to bound", {"pages_with_regions": 0, "pages_over_bound": 0})
    width = (regions["x1"] - regions["x0"]).to_numpy(np.float64)
    height = (regions["y1"] - regions["y0"]).to_numpy(np.float64)
    across = np.where(regions["direction"].astype(str).eq("vertical"), width, height)
    area = np.maximum(width * height, 1.0)
    size_of = pages.set_index("page_id")[["file", "width", "height"]]
    rows = []
    for page_id, idx in regions.groupby("page_id", sort=True).indices.items():
        file, w, h = size_of.loc[page_id] if page_id in size_of.index else (str(page_id), np.nan, np.nan)
        size = _weighted_median(across[idx], area[idx])
        bound = max_regions(int(w), int(h), max(size, 1.0)) if w == w and h == h and w > 0 and h > 0 else np.nan
        rows.append((str(file), len(idx), size, bound))
    per_page = pd.DataFrame(rows, columns=["file", "n", "size", "bound"])
    share = per_page["n"] / per_page["bound"]
    over = per_page[(share > 1.0) | (per_page["size"] < MIN_TYPE_SIZE)]
    counts = per_page["n"].to_numpy(np.float64)
    files = [
        f"{r.file} ({r.n} > {int(r.bound)})" if r.n > r.bound else f"{r.file} ({r.n} regions of {r.size:.0f} px type)"
        for r in over.itertuples(index=False)
    ]
    return CheckOutcome(
        passed=over.empty,
        description=f"{len(over)} of {len(per_page)} pages hold more regions than their size allows or regions "
        f"smaller than type (median {np.median(counts):.0f}, largest {int(counts.max())} regions per page)"
        + (f": {', '.join(files[:10])}" if files else ""),
        metadata={
            "pages_with_regions": len(per_page),
            "median_regions_per_page": float(np.median(counts)),
            "p95_regions_per_page": float(np.quantile(counts, 0.95)),
            "max_regions_per_page": int(counts.max()),
            "pages_over_bound": len(over),
            "max_share_of_bound": float(share.max()) if share.notna().any() else float("nan"),
            "files": ", ".join(files[:20]),
        },
    )


def empty_text_share(ocr: pd.DataFrame, *, max_share: float = 0.05) -> CheckOutcome:
    """Fails when more than ``max_share`` of the crops of any OCR engine came back with no text."""
    require_columns(ocr, ("ocr", "text"), "ocr")
    if not 0.0 <= max_share <= 1.0:
        raise ValueError(f"max_share must be in [0, 1], got {max_share}")
    shares = (
        ocr.assign(empty=ocr["text"].fillna("").str.strip().eq("")).groupby("ocr", sort=True)["empty"].mean().to_dict()
    )
    worst = max(shares.values(), default=0.0)
    return CheckOutcome(
        passed=worst <= max_share,
        description=f"largest empty-text share {worst:.3f} (bound {max_share})",
        metadata={f"empty_share_{e}": float(s) for e, s in shares.items()} | {"bound": max_share},
    )


def score_spread(links: pd.DataFrame, *, min_std: float = 1e-3) -> CheckOutcome:
    """Fails when the top-1 link scores have collapsed (all queries scored alike), a sign of a broken model or text.

    Args:
        links: ``record_links`` rows (``query_crop_id``, ``rank``, ``score``).
        min_std: smallest acceptable standard deviation of the top-1 scores.
    """
    require_columns(links, ("query_crop_id", "rank", "score"), "links")
    top1 = links[links["rank"] == 1]["score"].to_numpy(dtype=np.float64)
    if len(top1) < 2:
        return CheckOutcome(True, f"{len(top1)} scored queries: too few to judge", {"queries": len(top1)})
    std = float(np.std(top1))
    finite = bool(np.isfinite(top1).all())
    return CheckOutcome(
        passed=finite and std >= min_std,
        description=f"top-1 score std {std:.4f} over {len(top1)} queries (bound {min_std})"
        + ("" if finite else "; non-finite scores present"),
        metadata={"queries": len(top1), "score_std": std, "score_mean": float(np.mean(top1)), "finite": finite},
    )


def embedding_norms(frame: pd.DataFrame, *, columns: tuple[str, ...] = ("image_embedding", "text_embedding"),
                    tolerance: float = 1e-3) -> CheckOutcome:
    """Fails when an embedding is non-finite or not of unit length (a broken model, precision or input).

    Args:
        frame: ``crop_embeddings`` rows.
        columns: Embedding columns (lists or arrays of floats).
        tolerance: Largest accepted ``| ||x|| - 1 |``.
    """
    require_columns(frame, columns, "embeddings")
    bad: dict[str, int] = {}
    worst = 0.0
    for col in columns:
        if len(frame) == 0:
            bad[col] = 0
            continue
        x = np.stack([np.asarray(v, dtype=np.float64) for v in frame[col]])
        finite = np.isfinite(x).all(axis=1)
        dev = np.where(finite, np.abs(np.linalg.norm(np.where(np.isfinite(x), x, 0.0), axis=1) - 1.0), np.inf)
        bad[col] = int((dev > tolerance).sum())
        worst = max(worst, float(dev.max()))
    n_bad = sum(bad.values())
    return CheckOutcome(
        passed=n_bad == 0,
        description=f"{n_bad} embeddings non-finite or off unit norm (largest deviation {worst:.2g}, bound {tolerance})",
        metadata={"rows": len(frame), **{f"bad_{c}": n for c, n in bad.items()}, "max_deviation": worst},
    )


def accuracy_drop(
    current: float, previous: float | None, *, tolerance: float = 0.02, what: str = "validation top-1"
) -> CheckOutcome:
    """Fails when the validation accuracy fell by more than ``tolerance`` against the last accepted run.

    Args:
        current: Validation accuracy of this run (NaN when the corpus has no validation labels).
        previous: That of the last run whose check passed (``None`` when there is none).
        tolerance: Largest accepted drop, in accuracy points (0.02 = 2 points).
        what: The accuracy's name in the description.
    """
    if not 0.0 <= tolerance <= 1.0:
        raise ValueError(f"tolerance must be in [0, 1], got {tolerance}")
    if current != current:  # NaN: no labels, nothing to compare
        return CheckOutcome(True, "no validation labels: accuracy not compared", {"current": None})
    if previous is None or previous != previous:
        return CheckOutcome(True, f"{what} {current:.3f}; no earlier accepted run", {"current": current})
    drop = previous - current
    return CheckOutcome(
        passed=drop <= tolerance,
        description=f"{what} {current:.3f} against {previous:.3f} in the last accepted run "
        f"(drop {drop:+.3f}, bound {tolerance})",
        metadata={"current": current, "previous": previous, "drop": drop, "tolerance": tolerance},
    )
