"""Ground-truth labels of a source (``labels.csv``) and detected regions matched to them."""

from __future__ import annotations

import csv
import io
import logging
import math
from collections.abc import Collection
from pathlib import Path

import pandas as pd

from linkage_pipeline.config import Rejection, SourceConfig
from linkage_pipeline.documents.pages import (
    SUPPORTED_SUFFIXES,
    InputRejected,
)
from linkage_pipeline.evaluation import metrics
from linkage_pipeline.paths import safe_child
from linkage_pipeline.schema import (
    LABEL_ROLES,
    LABELLED_REGIONS,
    empty_frame,
)

logger = logging.getLogger(__name__)


#: Columns of ``labels.csv``; an optional ``page_number`` column selects a page inside a PDF or TIFF.
LABEL_COLUMNS = ("page", "x0", "y0", "x1", "y1", "text", "entity_id", "role")
_LABELS_STAGE = "region_labels"


# -- labels ------------------------------------------------------------------------------------------------


def _labels_frame(rows: list[dict[str, object]]) -> pd.DataFrame:
    dtypes = {
        "page": "str",
        "page_number": "int32",
        "x0": "int32",
        "y0": "int32",
        "x1": "int32",
        "y1": "int32",
        "text": "str",
        "entity_id": "str",
        "role": "str",
    }
    return pd.DataFrame(
        {col: pd.Series([r[col] for r in rows], dtype=dt) for col, dt in dtypes.items()}, columns=list(dtypes)
    )


def _parse_coordinate(value: str, column: str) -> int:
    text = value.strip()
    try:
        number = float(text)
    except ValueError:
        raise InputRejected(f"field {column!r}: {value!r} is not a number; expected pixels, e.g. 120") from None
    if not math.isfinite(number):
        raise InputRejected(f"field {column!r}: {value!r} is not a finite number; expected pixels, e.g. 120")
    if number < 0:
        raise InputRejected(f"field {column!r}: {value!r} is negative; expected pixels >= 0")
    if number > 2**31 - 1:
        raise InputRejected(f"field {column!r}: {value!r} is too large; expected pixels inside the page")
    return int(round(number))


def read_labels(
    source: SourceConfig, page_files: Collection[str] | None = None
) -> tuple[pd.DataFrame | None, list[Rejection]]:
    """Reads a source's ground truth ``labels.csv``, keeping good rows and rejecting bad ones.

    Columns: ``page`` (file name relative to ``pages/``), ``x0, y0, x1, y1`` (pixels; decimals are rounded),
    ``text``, ``entity_id`` (may be empty, e.g. for headings), ``role`` (one of ``schema.LABEL_ROLES``,
    case-insensitive) and, optionally, ``page_number`` (0-based page inside a PDF or TIFF; default 0). Other
    columns are ignored. The file is read as UTF-8 (a byte-order mark is allowed) and every value as text, so
    ids like ``007`` survive.

    A row is rejected, naming its row and line number and the field, when a coordinate is not a non-negative
    number, the box is inverted or empty (``x1 <= x0`` or ``y1 <= y0``), the role is unknown, the row has the
    wrong number of fields, or the page is not a file of the source (not in ``page_files`` when given, else
    not a file under ``pages/``).

    Args:
        source: the source whose ``labels.csv`` to read.
        page_files: the valid ``page`` values (e.g. ``page_images.file``); when None, checked on disk.

    Returns:
        ``(labels, rejections)``. ``labels`` is None when the source has no ``labels.csv`` or the file is
        unusable as a whole (then one rejection says why); otherwise a frame with columns ``page,
        page_number, x0, y0, x1, y1, text, entity_id, role`` (``int32`` coordinates, ``str`` text with missing
        ``entity_id`` as NA), in file order.
    """
    rejected: list[Rejection] = []

    def reject(reason: str) -> None:
        logger.warning("rejected %s/labels.csv: %s", source.name, reason)
        rejected.append(Rejection(source=source.name, file="labels.csv", stage=_LABELS_STAGE, reason=reason))

    root = Path(source.path)
    path = root / "labels.csv"
    if not path.exists() and not path.is_symlink():
        return None, rejected
    try:
        safe_child(root, "labels.csv")
    except ValueError:
        reject(f"labels.csv resolves to {path.resolve()}, outside the source folder; expected a file inside it")
        return None, rejected
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        reject(f"not valid UTF-8 ({exc}); expected a UTF-8 CSV file")
        return None, rejected
    except OSError as exc:
        reject(f"could not be read: {exc.strerror or exc}")
        return None, rejected

    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        reject(f"empty file; expected a header row {','.join(LABEL_COLUMNS)}")
        return None, rejected
    except csv.Error as exc:
        reject(f"malformed CSV header: {exc}")
        return None, rejected
    columns = [h.strip().lower() for h in header]
    missing = [c for c in LABEL_COLUMNS if c not in columns]
    if missing:
        reject(f"missing column(s) {', '.join(missing)}; expected a header with {','.join(LABEL_COLUMNS)}")
        return None, rejected
    duplicated = sorted({c for c in columns if c and columns.count(c) > 1})
    if duplicated:
        reject(f"column(s) {', '.join(duplicated)} appear more than once; expected each column once")
        return None, rejected
    index = {c: columns.index(c) for c in columns if c}
    has_page_number = "page_number" in index

    known_pages = set(page_files) if page_files is not None else None
    pages_dir = root / "pages"
    page_ok: dict[str, bool] = {}

    def page_exists(page: str) -> bool:
        if page not in page_ok:
            try:
                candidate = safe_child(pages_dir, page)
                page_ok[page] = candidate.is_file() and candidate.suffix.lower() in SUPPORTED_SUFFIXES
            except ValueError:
                page_ok[page] = False
        return page_ok[page]

    rows: list[dict[str, object]] = []
    row_number = 0
    while True:
        try:
            values = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            row_number += 1
            reject(f"row {row_number} (line {reader.line_num}): malformed CSV: {exc}")
            continue
        if not values or all(not v.strip() for v in values):
            continue
        row_number += 1
        where = f"row {row_number} (line {reader.line_num})"
        try:
            if len(values) != len(columns):
                raise InputRejected(f"has {len(values)} fields; expected {len(columns)} like the header")
            page = values[index["page"]].strip()
            if not page:
                raise InputRejected("field 'page' is empty; expected a file name under pages/")
            ok = page in known_pages if known_pages is not None else page_exists(page)
            if not ok:
                raise InputRejected(f"field 'page': {page!r} is not a page file of this source; expected a file under pages/")
            page_number = 0
            if has_page_number and values[index["page_number"]].strip():
                raw = values[index["page_number"]].strip()
                if not raw.isdigit():
                    raise InputRejected(f"field 'page_number': {raw!r} is not a non-negative integer; expected e.g. 0")
                page_number = int(raw)
            box = {c: _parse_coordinate(values[index[c]], c) for c in ("x0", "y0", "x1", "y1")}
            if box["x1"] <= box["x0"]:
                raise InputRejected(f"field 'x1': inverted or empty box, x1 ({box['x1']}) must be greater than x0 ({box['x0']})")
            if box["y1"] <= box["y0"]:
                raise InputRejected(f"field 'y1': inverted or empty box, y1 ({box['y1']}) must be greater than y0 ({box['y0']})")
            role = values[index["role"]].strip().lower()
            if role not in LABEL_ROLES:
                raise InputRejected(
                    f"field 'role': {values[index['role']]!r} is not one of {', '.join(LABEL_ROLES)}"
                )
        except InputRejected as exc:
            reject(f"{where}: {exc}")
            continue
        entity_id = values[index["entity_id"]].strip()
        rows.append(
            {
                "page": page,
                "page_number": page_number,
                **box,
                "text": values[index["text"]].strip(),
                "entity_id": entity_id if entity_id else None,
                "role": role,
            }
        )
    logger.info("read %d labels for %s (%d rejected)", len(rows), source.name, len(rejected))
    return _labels_frame(rows), rejected


def label_regions(
    regions: pd.DataFrame, pages: pd.DataFrame, labels: pd.DataFrame, *, iou_threshold: float = 0.5
) -> pd.DataFrame:
    """Matches detected regions to labelled boxes (one-to-one by IoU) so any labelled corpus can be scored."""
    if regions.empty or labels is None or labels.empty:
        return empty_frame(LABELLED_REGIONS)
    with_page = regions.merge(pages[["page_id", "file"]], on="page_id", how="left").rename(columns={"file": "page"})
    matches = metrics.match_regions_to_labels(with_page, labels, iou_threshold=iou_threshold)
    out = matches.merge(with_page[["region_id", "source", "page"]], on="region_id", how="left")
    out["entity_id"] = out["entity_id"].fillna("").astype(str)
    return out[list(LABELLED_REGIONS)].sort_values("region_id").reset_index(drop=True)
