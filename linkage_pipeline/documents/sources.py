"""The source registry: which document sources exist, how to read them, and which linkages to run.

A data directory holds ``sources.yaml`` and one folder per source (``<source>/pages/`` with page images or
PDFs, optional ``<source>/labels.csv``)::

    sources:
      firm_directory: {role: target, direction: vertical, language: jpn, layout: morphology, ocr: [tesseract, rapidocr]}
      supplier_lists: {role: query, direction: horizontal}
    linkages:
      - {query: supplier_lists, target: firm_directory}

A file that cannot be read as this structure raises ``ValueError``. A single bad source entry (unsafe name,
invalid field, missing folder) or linkage does not stop the others: it becomes a :class:`Rejection` row in
``rejected_inputs`` (stage ``sources``) and a warning in the log.

The same file may declare table sources (CSV/Parquet) under ``tables`` and ``table_linkages``; those keys are
read and validated by :func:`linkage_pipeline.tables.load_table_sources` and ignored here.
"""

from __future__ import annotations

import hashlib
import logging
import re
import reprlib
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from linkage_pipeline.paths import safe_child
from linkage_pipeline.schema import REJECTED_INPUTS, SOURCE_ROLES, TEXT_DIRECTIONS

logger = logging.getLogger(__name__)

__all__ = [
    "LAYOUT_DETECTORS",
    "MAX_REASON_CHARS",
    "OCR_ENGINES",
    "SOURCES_FILE",
    "Linkage",
    "Rejection",
    "SourceConfig",
    "SourceRegistry",
    "check_source_name",
    "load_sources",
    "log_rejections",
    "read_sources_yaml",
    "rejections_frame",
    "short_repr",
    "source_label",
]

SOURCES_FILE = "sources.yaml"
#: Layout detectors a source may ask for.
LAYOUT_DETECTORS = ("morphology", "tesseract")
#: OCR engines a source may list; extend here when an engine is added to ``resources/engines.py``.
OCR_ENGINES = ("tesseract", "rapidocr")
DEFAULT_OCR = ("tesseract", "rapidocr")
#: Source names become folder names and partition keys.
SOURCE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_LANGUAGE_RE = re.compile(r"^[A-Za-z0-9_]+(\+[A-Za-z0-9_]+)*$")
_SOURCE_FIELDS = ("role", "direction", "language", "layout", "ocr", "primary_ocr")
_LINKAGE_FIELDS = ("query", "target")
_TOP_LEVEL_KEYS = ("sources", "linkages", "tables", "table_linkages")
#: Top-level keys read by :func:`linkage_pipeline.tables.load_table_sources` (table sources); ignored here.
TABLE_KEYS = ("tables", "table_linkages")

_FORMAT_HINT = (
    "expected a YAML file like:\n"
    "sources:\n"
    "  firm_directory: {role: target, direction: vertical, language: jpn, layout: morphology, ocr: [tesseract, rapidocr]}\n"
    "  supplier_lists: {role: query, direction: horizontal}\n"
    "linkages:\n"
    "  - {query: supplier_lists, target: firm_directory}"
)


#: Longest ``reason`` a :class:`Rejection` keeps; longer ones are cut (the rest is never logged or stored).
MAX_REASON_CHARS = 600
_MAX_SOURCE_CHARS = 200
_MAX_FILE_CHARS = 300
#: Longest quoted value in a message (see :func:`short_repr`).
_MAX_REPR_CHARS = 80

_REPR = reprlib.Repr()
_REPR.maxlevel = 3
_REPR.maxdict = _REPR.maxlist = _REPR.maxtuple = _REPR.maxset = _REPR.maxfrozenset = _REPR.maxdeque = 6
_REPR.maxarray = 6
_REPR.maxstring = _REPR.maxother = _REPR.maxlong = _MAX_REPR_CHARS


def short_repr(value: object, limit: int = _MAX_REPR_CHARS) -> str:
    """``repr(value)`` cut to at most ``limit`` characters, for quoting user data in messages.

    Long strings keep their start and end (``'abc...xyz'``), containers their first few items (``[1, 2, ...]``)
    and nesting beyond three levels is elided, so the cost and the length stay bounded whatever the value (a
    100 MB string, a YAML structure of a billion items). Small values come out as ``repr`` writes them.

    Args:
        value: anything.
        limit: the longest result, at least 10 characters.

    Raises:
        ValueError: when ``limit`` is below 10.
    """
    if limit < 10:
        raise ValueError(f"limit {limit} is too small; expected at least 10 characters")
    try:
        text = _REPR.repr(value)
    except Exception:  # noqa: BLE001 - a broken __repr__ must not hide the message that quotes it
        text = f"<{type(value).__name__}>"
    if len(text) > limit:
        keep = limit - 3
        text = text[: keep - keep // 3] + "..." + text[len(text) - keep // 3 :]
    return text


def _bounded(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    note = f"... ({len(text) - limit} characters cut)"
    return text[: max(limit - len(note), 0)] + note


@dataclass(frozen=True)
class Rejection:
    """One input that a stage could not use, with the reason in words (a row of ``rejected_inputs``).

    Every field is bounded (``reason`` to :data:`MAX_REASON_CHARS` characters, the others to a few hundred), so
    a hostile input cannot blow up the log, the console or the table however much of it a message quotes.

    Attributes:
        source: the source name as written by the user (may be unsafe, e.g. ``'../evil'``).
        file: the file concerned, relative to the source's ``pages/`` folder, or ``sources.yaml``/``labels.csv``.
        stage: the stage that rejected it (``sources``, ``page_images``, ``region_labels``, ...).
        reason: what was wrong and, where useful, what was expected.
    """

    source: str
    file: str
    stage: str
    reason: str

    def __post_init__(self) -> None:
        for name, limit in (("source", _MAX_SOURCE_CHARS), ("file", _MAX_FILE_CHARS), ("stage", _MAX_SOURCE_CHARS),
                            ("reason", MAX_REASON_CHARS)):
            value = getattr(self, name)
            if isinstance(value, str) and len(value) > limit:
                object.__setattr__(self, name, _bounded(value, limit))

    def to_record(self) -> dict[str, str]:
        """The row of ``rejected_inputs`` (columns of ``schema.REJECTED_INPUTS``)."""
        return {"source": self.source, "file": self.file, "stage": self.stage, "reason": self.reason}

    def __str__(self) -> str:
        return f"{self.file}: source {self.source!r}: {self.reason}"


# Rejections already logged, per (file, stage): each load logs only those the previous load of the same file did
# not find, so a file read by every asset, sensor tick and schedule reports a problem once, not once per reader.
_REPORTED: OrderedDict[tuple[str, str], frozenset[Rejection]] = OrderedDict()
_REPORTED_LOCK = threading.Lock()
_REPORTED_MAX = 256


def log_rejections(path: Path, stage: str, rejections: Sequence[Rejection], *, repeats: bool = True) -> None:
    """Logs each rejection of one load of ``path`` as a warning, once.

    Args:
        path: the file that was loaded (``sources.yaml``).
        stage: which part of it (``sources``, ``table_sources``).
        rejections: what this load rejected.
        repeats: also warn about rejections the previous load of the same file in this process found (a caller
            that loads the file once, such as the CLI). ``False`` for callers that reload the file for every
            asset, sensor tick and schedule: those rejections go to the debug log only.
    """
    key = (str(path), stage)
    current = frozenset(rejections)
    with _REPORTED_LOCK:
        before = _REPORTED.pop(key, frozenset())
        _REPORTED[key] = current
        while len(_REPORTED) > _REPORTED_MAX:
            _REPORTED.popitem(last=False)
    for rejection in rejections:
        if repeats or rejection not in before:
            logger.warning("%s", rejection)
        else:
            logger.debug("%s (reported before)", rejection)


def rejections_frame(rejections: Iterable[Rejection]) -> pd.DataFrame:
    """Rejections as a frame with exactly the ``schema.REJECTED_INPUTS`` columns (all strings)."""
    rows = [r.to_record() for r in rejections]
    return pd.DataFrame(
        {col: pd.Series([row[col] for row in rows], dtype="str") for col in REJECTED_INPUTS}, columns=list(REJECTED_INPUTS)
    )


def check_source_name(name: object) -> str:
    """Returns ``name`` if it is safe as a folder name and partition key, else raises.

    Safe: a string of 1-64 characters from letters, digits, ``_ . -``, starting with a letter or digit, without
    ``..`` (so no path separators, no absolute paths, no hidden names).

    Raises:
        ValueError: saying what is wrong with the name and what is expected.
    """
    if not isinstance(name, str):
        raise ValueError(
            f"source name {short_repr(name)} is a {type(name).__name__}; "
            "expected a string (quote it in YAML, e.g. '007')"
        )
    expected = "expected 1-64 letters, digits, '_', '.', '-' starting with a letter or digit"
    shown = short_repr(name)
    if name == "":
        raise ValueError(f"source name is empty; {expected}")
    if "/" in name or "\\" in name:
        raise ValueError(f"source name {shown} contains a path separator; {expected}")
    if name.startswith("."):
        raise ValueError(f"source name {shown} starts with '.' (hidden or parent folder); {expected}")
    if ".." in name:
        raise ValueError(f"source name {shown} contains '..'; {expected}")
    if not SOURCE_NAME_RE.match(name):
        raise ValueError(f"source name {shown} is not a safe name; {expected}")
    return name


def _one_of(value: object, allowed: Sequence[str], what: str) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{what} {short_repr(value)} is not one of {', '.join(allowed)}")
    return value


def _check_ocr(ocr: object) -> tuple[str, ...]:
    engines: tuple[object, ...]
    if isinstance(ocr, str):
        engines = (ocr,)
    elif isinstance(ocr, (list, tuple)):
        engines = tuple(ocr)
    else:
        raise ValueError(
            f"ocr {short_repr(ocr)} is a {type(ocr).__name__}; "
            f"expected a list of engine names from {', '.join(OCR_ENGINES)}"
        )
    if not engines:
        raise ValueError(f"ocr is empty; expected at least one of {', '.join(OCR_ENGINES)}")
    for engine in engines:
        _one_of(engine, OCR_ENGINES, "ocr engine")
    duplicates = sorted({e for e in engines if engines.count(e) > 1})  # type: ignore[misc]
    if duplicates:
        raise ValueError(f"ocr lists {', '.join(duplicates)} more than once; expected each engine once")
    return engines  # type: ignore[return-value]


@dataclass(frozen=True)
class SourceConfig:
    """How to read one document source.

    Values are validated on construction, so a ``SourceConfig`` in hand is always usable.

    Attributes:
        name: safe source name; also the folder name under the data directory and the partition key.
        role: ``query`` (records to link) or ``target`` (records linked to).
        direction: text direction on the pages, ``horizontal`` or ``vertical``.
        path: absolute, resolved path of the source folder (holding ``pages/`` and optional ``labels.csv``).
        language: Tesseract-style language code(s), e.g. ``jpn`` or ``jpn+eng``.
        layout: layout detector, one of :data:`LAYOUT_DETECTORS`.
        ocr: OCR engines to run, in order, each one of :data:`OCR_ENGINES`.
        primary_ocr: the engine whose text is used downstream; defaults to ``rapidocr`` if listed, else the
            first engine in ``ocr``.
    """

    name: str
    role: str
    direction: str
    path: Path
    language: str = "jpn"
    layout: str = "morphology"
    ocr: tuple[str, ...] = DEFAULT_OCR
    primary_ocr: str | None = None

    def __post_init__(self) -> None:
        check_source_name(self.name)
        _one_of(self.role, SOURCE_ROLES, "role")
        _one_of(self.direction, TEXT_DIRECTIONS, "direction")
        if not isinstance(self.language, str) or not _LANGUAGE_RE.match(self.language):
            raise ValueError(
                f"language {short_repr(self.language)} is not a language code; expected e.g. 'jpn' or 'jpn+eng'"
            )
        _one_of(self.layout, LAYOUT_DETECTORS, "layout")
        engines = _check_ocr(self.ocr)
        object.__setattr__(self, "ocr", engines)
        primary = self.primary_ocr
        if primary is None:
            primary = "rapidocr" if "rapidocr" in engines else engines[0]
        elif not isinstance(primary, str) or primary not in engines:
            raise ValueError(
                f"primary_ocr {short_repr(primary)} is not one of the listed ocr engines {', '.join(engines)}"
            )
        object.__setattr__(self, "primary_ocr", primary)
        if not isinstance(self.path, (str, Path)):
            raise ValueError(f"path {short_repr(self.path)} is a {type(self.path).__name__}; expected a folder path")
        object.__setattr__(self, "path", Path(self.path))

    @property
    def pages_dir(self) -> Path:
        """The folder holding the source's page images and PDFs."""
        return self.path / "pages"

    @property
    def labels_path(self) -> Path:
        """Where the optional ground-truth ``labels.csv`` lives."""
        return self.path / "labels.csv"

    def fingerprint(self) -> str:
        """A hash of what is on disk for this source: every file under ``pages/`` (path, size, modification time)
        and ``labels.csv``. It changes when a page is added, replaced or removed, or the labels change, so a sensor
        can rerun exactly the sources that changed. Symlinks are hashed by their own entry, never followed.
        """
        h = hashlib.sha256()
        entries = []
        if self.pages_dir.is_dir():
            for p in self.pages_dir.rglob("*"):
                st = p.lstat()
                if p.is_symlink() or p.is_file():
                    entries.append((p.relative_to(self.pages_dir).as_posix(), st.st_size, st.st_mtime_ns))
        if self.labels_path.is_file():
            st = self.labels_path.stat()
            entries.append(("../labels.csv", st.st_size, st.st_mtime_ns))
        for entry in sorted(entries):
            h.update(repr(entry).encode())
        return h.hexdigest()[:16]

    def to_record(self) -> dict[str, Any]:
        """One row of the ``document_sources`` table (``ocr`` as a list, ``path`` as a string)."""
        return {
            "name": self.name,
            "role": self.role,
            "direction": self.direction,
            "language": self.language,
            "layout": self.layout,
            "ocr": list(self.ocr),
            "primary_ocr": self.primary_ocr,
            "path": str(self.path),
        }


@dataclass(frozen=True)
class Linkage:
    """One linkage to run: every record of ``query`` is linked to its nearest record in ``target``."""

    query: str
    target: str


@dataclass(frozen=True)
class SourceRegistry:
    """The loaded ``sources.yaml``: usable sources, usable linkages and everything rejected on the way."""

    sources: tuple[SourceConfig, ...] = ()
    linkages: tuple[Linkage, ...] = ()
    rejected: tuple[Rejection, ...] = field(default_factory=tuple)

    @property
    def names(self) -> tuple[str, ...]:
        """Names of the usable sources, in file order."""
        return tuple(s.name for s in self.sources)

    def get(self, name: str) -> SourceConfig:
        """The source called ``name``.

        Raises:
            KeyError: naming the known sources when there is none of that name.
        """
        for src in self.sources:
            if src.name == name:
                return src
        raise KeyError(f"source {short_repr(name)} is not loaded; known sources: {', '.join(self.names) or 'none'}")

    def __contains__(self, name: object) -> bool:
        return any(s.name == name for s in self.sources)


#: Largest ``sources.yaml`` read; a bigger one is refused before parsing.
MAX_CONFIG_BYTES = 8 * 2**20
#: Deepest nesting and most YAML nodes (scalars, lists, mappings) a ``sources.yaml`` may hold. A real file is
#: five levels deep and has a few nodes per source; the limits keep loading fast and in bounds.
MAX_CONFIG_DEPTH = 32
MAX_CONFIG_NODES = 200_000


class _ConfigLimitError(ValueError):
    """A configuration file goes beyond what the loader accepts (aliases, depth, size); message is one line."""


# libyaml's parser when PyYAML was built with it (about 20 times faster than the pure-Python one).
_SafeBase: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _UniqueKeyLoader(_SafeBase):  # type: ignore[valid-type, misc]
    """A safe loader (no ``!!python`` tags) that refuses duplicate mapping keys (PyYAML keeps the last one)."""


def _check_events(text: str) -> None:
    """Walks the YAML events of ``text`` (no values are built) and refuses what a configuration file never needs.

    Anchors and aliases (``&a`` / ``*a``) are refused: nested aliases expand a file of a few hundred bytes into
    billions of values (the "billion laughs" attack), and every message that quotes them with it. Nesting deeper
    than :data:`MAX_CONFIG_DEPTH` and more than :data:`MAX_CONFIG_NODES` values are refused too.

    Raises:
        _ConfigLimitError: with a one-line reason and the line and column.
        yaml.YAMLError: when the text is not valid YAML.
    """
    depth = nodes = 0
    for event in yaml.parse(text, Loader=_UniqueKeyLoader):
        if not isinstance(event, yaml.NodeEvent):
            if isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
            continue
        mark = event.start_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}"
        if isinstance(event, yaml.AliasEvent):
            raise _ConfigLimitError(f"YAML aliases are not allowed (alias *{short_repr(event.anchor, 40)[1:-1]} at "
                                    f"{where}); expected every entry written out in full")
        if event.anchor is not None:
            raise _ConfigLimitError(f"YAML anchors and aliases are not allowed (anchor "
                                    f"&{short_repr(event.anchor, 40)[1:-1]} at {where}); expected every entry "
                                    "written out in full")
        nodes += 1
        if nodes > MAX_CONFIG_NODES:
            raise _ConfigLimitError(f"more than {MAX_CONFIG_NODES} values (at {where}); expected a smaller file")
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_CONFIG_DEPTH:
                raise _ConfigLimitError(f"values nested deeper than {MAX_CONFIG_DEPTH} levels (at {where})")


def _construct_unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: dict[Any, yaml.Node] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            duplicate = key in seen
        except TypeError:  # unhashable key; the base constructor reports it properly
            continue
        if duplicate:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping",
                node.start_mark,
                f"found duplicate key {short_repr(key)} (first at line {seen[key].start_mark.line + 1})",
                key_node.start_mark,
            )
        seen[key] = key_node
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)


def _read_yaml(path: Path) -> Any:
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ValueError(f"{path}: cannot be read ({exc.strerror or exc}); expected a readable YAML file") from None
    if size > MAX_CONFIG_BYTES:
        raise ValueError(
            f"{path}: the file is {size / 2**20:.1f} MiB; expected at most {MAX_CONFIG_BYTES // 2**20} MiB of YAML"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not valid UTF-8 text ({exc}); expected a UTF-8 YAML file") from None
    try:
        _check_events(text)  # before any value is built
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except _ConfigLimitError as exc:
        raise ValueError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())  # one line
        raise ValueError(f"{path}: malformed YAML{where}: {_bounded(problem, MAX_REASON_CHARS)}") from None
    except (ValueError, OverflowError, RecursionError) as exc:  # a scalar Python cannot hold, e.g. a 5000-digit int
        raise ValueError(
            f"{path}: cannot read a value ({_bounded(str(exc), 200)}); expected plain YAML values"
        ) from None


def read_sources_yaml(path: Path) -> Any:
    """The parsed content of a ``sources.yaml``.

    The loader is safe (no ``!!python`` tags) and refuses duplicate keys, anchors and aliases, nesting deeper
    than :data:`MAX_CONFIG_DEPTH`, more than :data:`MAX_CONFIG_NODES` values and files over
    :data:`MAX_CONFIG_BYTES`, each quickly and with a one-line message.

    Raises:
        ValueError: naming the file (and the line) when it is too large, not UTF-8, not valid YAML or beyond those
            limits.
    """
    return _read_yaml(Path(path))


def source_label(value: object) -> str:
    """A user-written name as a rejection's ``source``: itself when a string of up to 200 characters, else a
    bounded repr (see :func:`short_repr`)."""
    return value if isinstance(value, str) and len(value) <= _MAX_SOURCE_CHARS else short_repr(value)


def _load_source(data_dir: Path, raw_name: Any, settings: Any) -> SourceConfig:
    """Builds one source from its YAML entry; raises ValueError with the reason (without file/source prefix)."""
    name = check_source_name(raw_name)
    if settings is None:
        settings = {}
    if not isinstance(settings, Mapping):
        raise ValueError(
            f"settings {short_repr(settings)} are a {type(settings).__name__}; expected a mapping like "
            "{role: query, direction: horizontal}"
        )
    unknown = [k for k in settings if k not in _SOURCE_FIELDS]
    if unknown:
        raise ValueError(f"unknown field {short_repr(unknown[0])}; expected only {', '.join(_SOURCE_FIELDS)}")
    for required in ("role", "direction"):
        if required not in settings:
            allowed = SOURCE_ROLES if required == "role" else TEXT_DIRECTIONS
            raise ValueError(f"missing field {required!r}; expected one of {', '.join(allowed)}")
    kwargs: dict[str, Any] = {k: settings[k] for k in _SOURCE_FIELDS if k in settings and settings[k] is not None}
    # Fields first (they are the user's to fix in the file), then the folder on disk.
    src = SourceConfig(name=name, path=data_dir / name, **kwargs)
    try:
        folder = safe_child(data_dir, name)
    except ValueError:
        raise ValueError(
            f"folder {data_dir / name} resolves outside the data directory {data_dir} (symlink?); "
            "expected a folder inside it"
        ) from None
    if not folder.is_dir():
        raise ValueError(f"source folder {data_dir / name} not found; expected a folder with pages/ inside")
    if not (folder / "pages").is_dir():
        raise ValueError(f"folder {folder / 'pages'} not found; expected the source's page images and PDFs there")
    return replace(src, path=folder)


def load_sources(data_dir: Path, *, strict: bool = False, log_repeats: bool = True) -> SourceRegistry:
    """Reads and validates ``<data_dir>/sources.yaml``.

    Each source entry and linkage is checked on its own: a bad one is left out and recorded as a
    :class:`Rejection` (stage ``sources``, file ``sources.yaml``), and the others still load. A source is bad
    when its name is unsafe (path separators, ``..``, absolute, leading dot, not matching
    :data:`SOURCE_NAME_RE`, or its folder resolves outside ``data_dir``), a field is missing or invalid, or its
    ``pages/`` folder is missing. Without a ``linkages`` key every query source is linked to every target
    source. A linkage is bad when it names a source that is not loaded, or a source whose
    role does not match its place in the linkage.

    Each rejection is logged as a warning once per load (see :func:`log_rejections`).

    Args:
        data_dir: the data directory holding ``sources.yaml`` and the source folders.
        strict: raise instead of returning rejections.
        log_repeats: ``False`` logs at debug level the rejections that the previous load of the same file in
            this process already reported (for callers that reload the file for every asset or sensor tick).

    Returns:
        The registry: usable sources and linkages in file order, plus the rejections.

    Raises:
        FileNotFoundError: when ``data_dir`` or ``sources.yaml`` does not exist (the message shows the format).
        ValueError: when the file is not valid YAML (with the line), is not the expected structure, or, with
            ``strict``, when anything was rejected (all reasons listed).
    """
    data_dir = Path(data_dir).expanduser().resolve()
    if not data_dir.is_dir():
        raise FileNotFoundError(f"data directory {data_dir} not found; expected a folder holding {SOURCES_FILE}")
    path = data_dir / SOURCES_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; {_FORMAT_HINT}")
    doc = _read_yaml(path)
    if doc is None:
        raise ValueError(f"{path}: the file is empty; {_FORMAT_HINT}")
    if not isinstance(doc, Mapping):
        raise ValueError(f"{path}: top level is a {type(doc).__name__}; {_FORMAT_HINT}")
    unknown = [k for k in doc if k not in _TOP_LEVEL_KEYS]
    if unknown:
        raise ValueError(
            f"{path}: unknown top-level key {short_repr(unknown[0])}; expected only {', '.join(_TOP_LEVEL_KEYS)}"
        )
    if "sources" not in doc and "tables" not in doc:
        raise ValueError(f"{path}: missing 'sources'; {_FORMAT_HINT}")
    # A data directory of tables only has no document sources (``tables`` is read by linkage_pipeline.tables).
    raw_sources = doc.get("sources") if doc.get("sources") is not None else {}
    if not isinstance(raw_sources, Mapping):
        raise ValueError(
            f"{path}: 'sources' is a {type(raw_sources).__name__}; expected a mapping of source name to settings"
        )
    raw_linkages = doc.get("linkages")
    if raw_linkages is None:
        raw_linkages = []
    if not isinstance(raw_linkages, list):
        raise ValueError(
            f"{path}: 'linkages' is a {type(raw_linkages).__name__}; expected a list like "
            "[{query: supplier_lists, target: firm_directory}]"
        )

    rejected: list[Rejection] = []

    def reject(source: str, reason: str) -> None:
        rejected.append(Rejection(source=source, file=SOURCES_FILE, stage="sources", reason=reason))

    sources: list[SourceConfig] = []
    folded: dict[str, str] = {}
    for raw_name, settings in raw_sources.items():
        try:
            src = _load_source(data_dir, raw_name, settings)
        except ValueError as exc:
            reject(source_label(raw_name), str(exc))
            continue
        # Two names that differ only in case share one folder on macOS/Windows file systems.
        other = folded.get(src.name.casefold())
        if other is not None:
            reject(src.name, f"name differs from source {other!r} only in letter case; expected distinct names")
            continue
        folded[src.name.casefold()] = src.name
        sources.append(src)

    by_name = {s.name: s for s in sources}
    rejected_names = {r.source for r in rejected}
    linkages: list[Linkage] = []
    for index, item in enumerate(raw_linkages):
        label = f"linkage {index + 1}"
        if not isinstance(item, Mapping):
            reject(label, f"entry {short_repr(item)} is a {type(item).__name__}; expected a mapping like "
                          "{query: supplier_lists, target: firm_directory}")
            continue
        label = f"{source_label(item.get('query'))}->{source_label(item.get('target'))}"
        unknown = [k for k in item if k not in _LINKAGE_FIELDS]
        missing = [k for k in _LINKAGE_FIELDS if k not in item]
        if unknown or missing:
            what = f"unknown field {short_repr(unknown[0])}" if unknown else f"missing field {missing[0]!r}"
            reject(label, f"linkage {index + 1}: {what}; expected exactly query and target")
            continue
        problem = None
        for place in _LINKAGE_FIELDS:
            name = item[place]
            src = by_name.get(name) if isinstance(name, str) else None
            if src is None:
                rejected_before = source_label(name) in rejected_names
                why = "was rejected (see its own rejection)" if rejected_before else "is not defined"
                known = ", ".join(by_name) or "none"
                problem = (
                    f"linkage {index + 1}: {place} source {short_repr(name)} {why}; "
                    f"expected one of the loaded sources: {known}"
                )
                break
            if src.role != place:
                problem = (
                    f"linkage {index + 1}: {place} source {name!r} has role {src.role!r}; "
                    f"expected a source with role {place!r}"
                )
                break
        if problem is None:
            linkage = Linkage(query=item["query"], target=item["target"])
            if linkage in linkages:
                problem = f"linkage {index + 1}: duplicate of an earlier linkage; expected each pair once"
            else:
                linkages.append(linkage)
                continue
        reject(label, problem)

    if "linkages" not in doc:
        # No linkages named: link every query source against every target source.
        linkages = [
            Linkage(query=q.name, target=t.name) for q in sources if q.role == "query" for t in sources if t.role == "target"
        ]
        logger.info("%s names no linkages; linking every query source to every target source (%d)", path, len(linkages))

    if strict and rejected:
        raise ValueError(f"{path}: {len(rejected)} problem(s):\n" + "\n".join(f"- {r}" for r in rejected))
    log_rejections(path, "sources", rejected, repeats=log_repeats)
    logger.info("loaded %d sources and %d linkages from %s (%d rejected)", len(sources), len(linkages), path, len(rejected))
    return SourceRegistry(sources=tuple(sources), linkages=tuple(linkages), rejected=tuple(rejected))
