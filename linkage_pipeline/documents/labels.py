"""Ground-truth labels of a source (``labels.csv`` or PASCAL VOC XML files) and detected regions matched to them."""

from __future__ import annotations

import csv
import io
import logging
import math
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import pandas as pd

from linkage_pipeline.config import Rejection, SourceConfig
from linkage_pipeline.documents.pages import (
    SUPPORTED_SUFFIXES,
    InputRejected,
)
from linkage_pipeline.evaluation import metrics
from linkage_pipeline.paths import atomic_write_bytes, safe_child
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
    """Reads a source's ground truth ``labels.csv`` (or, without one, its PASCAL VOC files), keeping good rows
    and rejecting bad ones.

    A source without ``labels.csv`` falls back to :func:`read_voc_labels` (``<source>/labels/*.xml`` or
    ``*.xml`` beside the images in ``pages/``); when both exist, ``labels.csv`` wins and the XML files are not read.

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
        ``(labels, rejections)``. ``labels`` is None when the source has neither ``labels.csv`` nor VOC files,
        or ``labels.csv`` is unusable as a whole (then one rejection says why); otherwise a frame with columns ``page,
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
        return read_voc_labels(source, page_files)
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


# -- PASCAL VOC labels (layout only) ------------------------------------------------------------------------

#: NDL-DocL (NDL layout dataset v1.0) classes that are printed text, and the label role each becomes.
NDL_DOCL_CLASS_ROLES: dict[str, str] = {"8_textline": "body", "7_caption": "body", "6_headline": "heading"}
#: NDL-DocL classes that are not lines of printed text (the printed area, pictures, stamps, tables, handwriting):
#: their boxes are ignored and counted at ``info``; a class in neither this list nor the role map is ignored too,
#: with a warning.
NDL_DOCL_IGNORED_CLASSES: tuple[str, ...] = (
    "1_overall", "2_handwritten", "3_typography", "4_illustration", "5_stamp", "9_table",
)
#: Folder of a source holding VOC files (``<source>/labels/``); ``*.xml`` beside the images in ``pages/`` count too.
VOC_LABELS_FOLDER = "labels"
VOC_SUFFIX = ".xml"
#: Largest VOC file read; a page of a few hundred boxes is tens of kilobytes.
MAX_VOC_BYTES = 20_000_000
_BOX_FIELDS = ("xmin", "ymin", "xmax", "ymax")


@dataclass
class _VocFile:
    """What one VOC file holds: the page it names, its boxes (exclusive ends) and what was left out."""

    filename: str
    size: tuple[int, int] | None
    boxes: list[dict[str, object]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    ignored: Counter = field(default_factory=Counter)
    unknown: Counter = field(default_factory=Counter)


def _element_text(parent: ET.Element, tag: str) -> str | None:
    child = parent.find(tag)
    return None if child is None or child.text is None else child.text.strip()


def _voc_size(root: ET.Element) -> tuple[int, int] | None:
    """``(width, height)`` from ``<size>``; None when absent or zero (some tools write 0), an error when garbage."""
    size = root.find("size")
    if size is None:
        return None
    values = []
    for tag in ("width", "height"):
        raw = _element_text(size, tag)
        if not raw:
            return None
        try:
            number = float(raw)
        except ValueError:
            raise InputRejected(f"<size>: <{tag}> {raw!r} is not a number; expected the image size in pixels") from None
        if not math.isfinite(number) or number < 0:
            raise InputRejected(f"<size>: <{tag}> {raw!r} is not a size; expected a number of pixels >= 0")
        values.append(round(number))
    return None if 0 in values else (values[0], values[1])


def _voc_box(obj: ET.Element, size: tuple[int, int] | None) -> tuple[int, int, int, int]:
    """``(x0, y0, x1, y1)`` with exclusive ends from an ``<object>``'s inclusive ``<bndbox>``."""
    bndbox = obj.find("bndbox")
    if bndbox is None:
        raise InputRejected("has no <bndbox>; expected <bndbox> with xmin, ymin, xmax, ymax")
    values = {}
    for tag in _BOX_FIELDS:
        raw = _element_text(bndbox, tag)
        if not raw:
            raise InputRejected(f"<bndbox> has no <{tag}>; expected xmin, ymin, xmax, ymax in pixels")
        values[tag] = _parse_coordinate(raw, tag)
    for lo, hi in (("xmin", "xmax"), ("ymin", "ymax")):
        if values[lo] >= values[hi]:
            raise InputRejected(
                f"inverted or empty box: {hi} ({values[hi]}) must be greater than {lo} ({values[lo]})"
            )
    x0, y0, x1, y1 = values["xmin"], values["ymin"], values["xmax"] + 1, values["ymax"] + 1
    if size is not None:
        width, height = size
        for tag, end, limit, what in (("xmax", x1, width, "width"), ("ymax", y1, height, "height")):
            # An end one past the last pixel (xmax == width) is a common off-by-one of annotation tools: clipped.
            if end > limit + 1:
                raise InputRejected(
                    f"box outside the image: {tag} {values[tag]} is beyond the {what} {limit} given in <size>; "
                    f"expected at most {limit - 1}"
                )
        x1, y1 = min(x1, width), min(y1, height)
    return x0, y0, x1, y1


def _parse_voc(data: bytes, class_roles: Mapping[str, str], ignored_classes: Collection[str]) -> _VocFile:
    """Parses one VOC file; whole-file problems raise :class:`InputRejected`, bad objects become ``problems``."""
    head = data[:4096].lower()
    if b"<!doctype" in head or b"<!entity" in data.lower():
        raise InputRejected("holds a DOCTYPE or ENTITY declaration; expected a plain PASCAL VOC <annotation> file")
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise InputRejected(f"malformed XML: {exc}; expected a PASCAL VOC <annotation> file") from None
    if root.tag != "annotation":
        raise InputRejected(f"root element is <{root.tag}>; expected a PASCAL VOC <annotation> file")
    parsed = _VocFile(filename=_element_text(root, "filename") or "", size=_voc_size(root))
    for index, obj in enumerate(root.iter("object"), start=1):
        name = _element_text(obj, "name") or ""
        where = f"object {index}" + (f" ({name})" if name else "")
        if not name:
            parsed.problems.append(f"{where}: has no <name>; expected a class name such as 8_textline")
            continue
        role = class_roles.get(name)
        if role is None:
            (parsed.ignored if name in ignored_classes else parsed.unknown)[name] += 1
            continue
        try:
            x0, y0, x1, y1 = _voc_box(obj, parsed.size)
        except InputRejected as exc:
            parsed.problems.append(f"{where}: {exc}")
            continue
        parsed.boxes.append({"x0": x0, "y0": y0, "x1": x1, "y1": y1, "role": role})
    return parsed


def _check_class_roles(class_roles: Mapping[str, str]) -> None:
    bad = {k: v for k, v in class_roles.items() if v not in LABEL_ROLES}
    if bad:
        raise ValueError(f"class_roles maps to unknown roles {bad}; expected roles among {', '.join(LABEL_ROLES)}")


def _xml_files(folder: Path) -> list[Path]:
    """``*.xml`` files (any case) under ``folder``, recursively, in sorted order."""
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() == VOC_SUFFIX and (p.is_file() or p.is_symlink()))


class _PageIndex:
    """The page files of a source (names relative to ``pages/``), found by name or by stem."""

    def __init__(self, names: Collection[str]) -> None:
        self.names = set(names)
        self.by_stem: dict[str, list[str]] = {}
        for name in sorted(self.names):
            self.by_stem.setdefault(PurePosixPath(name).stem, []).append(name)

    def find(self, folder: PurePosixPath, filename: str, stem: str) -> str:
        """The page an annotation names: ``<filename>`` in the annotation's folder, else a page with the stem of
        ``<filename>`` or of the XML file, in that folder first, then anywhere under ``pages/``."""
        base = PurePosixPath(filename.replace("\\", "/")).name if filename else ""
        if base and (folder / base).as_posix() in self.names:
            return (folder / base).as_posix()
        stems = list(dict.fromkeys(s for s in (PurePosixPath(base).stem if base else "", stem) if s))
        for s in stems:
            found = self.by_stem.get(s, [])
            near = [n for n in found if PurePosixPath(n).parent == folder]
            for group in (near, found):
                if len(group) == 1:
                    return group[0]
                if len(group) > 1:
                    raise InputRejected(
                        f"page is ambiguous: {', '.join(repr(n) for n in group)} all have the stem {s!r}; "
                        "expected one page file per annotation (name it in <filename>)"
                    )
        shown = f"<filename> {filename!r} and the file stem {stem!r}" if filename else f"the file stem {stem!r}"
        raise InputRejected(f"no page file for this annotation: {shown} match no page under pages/")


def _disk_page_files(pages_dir: Path) -> list[str]:
    if not pages_dir.is_dir():
        return []
    return [
        p.relative_to(pages_dir).as_posix()
        for p in pages_dir.rglob("*")
        if p.suffix.lower() in SUPPORTED_SUFFIXES and p.is_file()
    ]


def read_voc_labels(
    source: SourceConfig,
    page_files: Collection[str] | None = None,
    *,
    class_roles: Mapping[str, str] = NDL_DOCL_CLASS_ROLES,
    ignored_classes: Collection[str] = NDL_DOCL_IGNORED_CLASSES,
) -> tuple[pd.DataFrame | None, list[Rejection]]:
    """Reads layout-only ground truth from PASCAL VOC XML files (one per page), e.g. the NDL-DocL dataset.

    Where the files are looked for (both places are read):

    * ``<source>/labels/**/*.xml``: a file ``labels/sub/NAME.xml`` labels the page ``pages/sub/NAME.*`` (the
      folders under ``labels/`` mirror those under ``pages/``);
    * ``<source>/pages/**/*.xml``: beside the images, as NDL-DocL ships them (``NAME.jpg`` + ``NAME.xml``);
      the page loader skips these files instead of rejecting them.

    The page a file labels is its ``<filename>`` if that file exists in the matching folder under ``pages/``,
    else the one page with the stem of ``<filename>`` or, failing that, of the XML file (in the matching folder
    first, then anywhere under ``pages/``), so a page converted from JPEG to PNG keeps its labels. Labels are
    always for ``page_number`` 0.

    Boxes are read from ``<object><name>`` and ``<bndbox>`` (``xmin, ymin, xmax, ymax`` in pixels, inclusive;
    decimals rounded) and become ``x0 = xmin``, ``x1 = xmax + 1`` (exclusive, as in ``labels.csv``), likewise
    for y. ``class_roles`` maps class names to label roles (NDL-DocL: ``8_textline`` and ``7_caption`` ->
    ``body``, ``6_headline`` -> ``heading``); boxes of ``ignored_classes`` and of unknown classes are left out
    and counted in one log line each per call (unknown ones as a warning). Labels carry no text and no entity.

    Rejections (stage ``region_labels``; ``file`` is ``labels/...`` for files under ``labels/`` and relative
    to ``pages/`` for files there): a whole file that is not well-formed VOC XML (or declares a DOCTYPE or
    entities, is larger than :data:`MAX_VOC_BYTES` or lies outside the source folder), that names no page of
    the source, or labels a page another file already labelled; and, naming the object by its 1-based index in
    the file, a box with a missing or non-numeric or negative coordinate, ``xmin >= xmax`` or ``ymin >= ymax``,
    or lying outside the image size given in ``<size>`` (an end equal to the size, one past the last pixel, is
    clipped instead). The rest is kept.

    Args:
        source: the source whose VOC files to read.
        page_files: the valid page names (e.g. ``page_images.file``); when None, the files under ``pages/``.
        class_roles: class name -> role in ``schema.LABEL_ROLES``.
        ignored_classes: class names left out without a warning.

    Returns:
        ``(labels, rejections)``. ``labels`` is None when the source has no VOC file; otherwise the frame of
        :func:`read_labels` (``text`` empty, ``entity_id`` NA), in file order then object order.

    Raises:
        ValueError: when ``class_roles`` maps a class to a role outside ``schema.LABEL_ROLES``.
    """
    _check_class_roles(class_roles)
    root = Path(source.path)
    pages_dir = root / "pages"
    found: list[tuple[str, Path, PurePosixPath]] = []  # (name in rejections, path, folder under pages/)
    labels_dir = root / VOC_LABELS_FOLDER
    if labels_dir.is_dir():
        for path in _xml_files(labels_dir):
            rel = PurePosixPath(path.relative_to(labels_dir).as_posix())
            found.append((f"{VOC_LABELS_FOLDER}/{rel.as_posix()}", path, rel.parent))
    if pages_dir.is_dir():
        for path in _xml_files(pages_dir):
            rel = PurePosixPath(path.relative_to(pages_dir).as_posix())
            found.append((rel.as_posix(), path, rel.parent))
    if not found:
        return None, []

    rejected: list[Rejection] = []

    def reject(file: str, reason: str) -> None:
        logger.warning("rejected %s/%s: %s", source.name, file, reason)
        rejected.append(Rejection(source=source.name, file=file, stage=_LABELS_STAGE, reason=reason))

    pages = _PageIndex(page_files if page_files is not None else _disk_page_files(pages_dir))
    labelled_by: dict[str, str] = {}
    ignored: Counter = Counter()
    unknown: Counter = Counter()
    rows: list[dict[str, object]] = []
    for name, path, folder in found:
        try:
            try:
                safe_child(root, path.relative_to(root).as_posix())
            except ValueError:
                raise InputRejected(f"resolves to {path.resolve()}, outside the source folder; expected a file inside it") from None
            try:
                if path.stat().st_size > MAX_VOC_BYTES:
                    raise InputRejected(f"larger than {MAX_VOC_BYTES:,} bytes; expected one page's annotation")
                data = path.read_bytes()
            except OSError as exc:
                raise InputRejected(f"could not be read: {exc.strerror or exc}") from None
            parsed = _parse_voc(data, class_roles, ignored_classes)
            page = pages.find(folder, parsed.filename, PurePosixPath(name).stem)
            if page in labelled_by:
                raise InputRejected(f"page {page!r} is already labelled by {labelled_by[page]!r}; expected one file per page")
        except InputRejected as exc:
            reject(name, str(exc))
            continue
        labelled_by[page] = name
        for problem in parsed.problems:
            reject(name, problem)
        ignored.update(parsed.ignored)
        unknown.update(parsed.unknown)
        rows += [{"page": page, "page_number": 0, **box, "text": "", "entity_id": None} for box in parsed.boxes]
    if ignored:
        logger.info("%s: left out %d VOC boxes of non-text classes %s", source.name, sum(ignored.values()), dict(sorted(ignored.items())))
    if unknown:
        logger.warning(
            "%s: left out %d VOC boxes of unknown classes %s; known text classes are %s",
            source.name, sum(unknown.values()), dict(sorted(unknown.items())), ", ".join(class_roles),
        )
    logger.info("read %d VOC labels for %s from %d files (%d rejected)", len(rows), source.name, len(found), len(rejected))
    return _labels_frame(rows), rejected


def voc_to_labels_csv(
    xml_dir: Path | str,
    out_csv: Path | str,
    *,
    class_roles: Mapping[str, str] = NDL_DOCL_CLASS_ROLES,
    ignored_classes: Collection[str] = NDL_DOCL_IGNORED_CLASSES,
) -> tuple[int, list[str]]:
    """Converts a folder of PASCAL VOC files (``*.xml``, not recursive) into a ``labels.csv``.

    Boxes are converted as in :func:`read_voc_labels`; the ``page`` column is the file's ``<filename>`` (the
    file stem plus ``.jpg`` when it has none), ``page_number`` 0, ``text`` and ``entity_id`` empty. Nothing is
    checked against page files: :func:`read_labels` does that when the CSV is read.

    Args:
        xml_dir: folder holding the VOC files.
        out_csv: the CSV file to write (overwritten).
        class_roles: class name -> role in ``schema.LABEL_ROLES``.
        ignored_classes: class names left out without a warning.

    Returns:
        ``(rows written, problems)``: each problem names the file and, for a bad box, the 1-based object index.

    Raises:
        ValueError: when ``xml_dir`` holds no ``*.xml`` file or ``class_roles`` maps to an unknown role.
    """
    _check_class_roles(class_roles)
    paths = sorted(p for p in Path(xml_dir).iterdir() if p.suffix.lower() == VOC_SUFFIX and p.is_file())
    if not paths:
        raise ValueError(f"{xml_dir}: no *.xml file; expected PASCAL VOC annotation files")
    problems: list[str] = []
    rows: list[list[object]] = []
    for path in paths:
        try:
            parsed = _parse_voc(path.read_bytes(), class_roles, ignored_classes)
        except (InputRejected, OSError) as exc:
            problems.append(f"{path.name}: {exc}")
            continue
        page = PurePosixPath(parsed.filename.replace("\\", "/")).name or f"{path.stem}.jpg"
        problems += [f"{path.name}: {p}" for p in parsed.problems]
        if parsed.unknown:
            problems.append(f"{path.name}: left out boxes of unknown classes {dict(sorted(parsed.unknown.items()))}")
        rows += [[page, 0, b["x0"], b["y0"], b["x1"], b["y1"], "", "", b["role"]] for b in parsed.boxes]
    buf = io.StringIO(newline="")
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["page", "page_number", *LABEL_COLUMNS[1:]])
    writer.writerows(rows)
    atomic_write_bytes(Path(out_csv), buf.getvalue().encode("utf-8"))
    return len(rows), problems


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
