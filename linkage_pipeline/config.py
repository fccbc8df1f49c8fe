"""The source registry: which document sources exist, how to read them, and which linkages to run.

A data directory holds ``sources.yaml`` and one folder per source (``<source>/pages/`` with page images or
PDFs, optional ``<source>/labels.csv``)::

    sources:
      firm_directory: {role: target, direction: vertical, language: jpn, layout: ppocr, ocr: [tesseract, rapidocr]}
      supplier_lists: {role: query, direction: horizontal}
    linkages:
      - {query: supplier_lists, target: firm_directory}

A file that cannot be read as this structure raises ``ValueError``. A single bad source entry (unsafe name,
invalid field, missing folder) or linkage does not stop the others: it becomes a :class:`Rejection` row in
``rejected_inputs`` (stage ``sources``) and a warning in the log.

The same file may declare table sources (CSV/Parquet) under ``tables`` and ``table_linkages``; those keys are
read and validated by :func:`load_table_sources` into a :class:`TableRegistry` and ignored by :func:`load_sources`.
"""

from __future__ import annotations

import codecs
import hashlib
import logging
import re
import reprlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, Generic, Protocol, TypeVar

import pandas as pd
import pyarrow.parquet as pq
import yaml

from linkage_pipeline.paths import safe_child
from linkage_pipeline.probabilistic import (
    DEFAULT_MATCH_THRESHOLD,
    FieldSpec,
)
from linkage_pipeline.probabilistic.comparisons import COMPARISONS
from linkage_pipeline.schema import (
    RECORD_COLUMNS,
    REJECTED_INPUTS,
    SOURCE_ROLES,
    TEXT_DIRECTIONS,
)

logger = logging.getLogger(__name__)


SOURCES_FILE = "sources.yaml"
#: Layout detectors a source may ask for.
LAYOUT_DETECTORS = ("ppocr", "morphology", "tesseract")
#: OCR engines a source may list; extend here when an engine is added to ``resources/engines.py``.
OCR_ENGINES = ("tesseract", "rapidocr")
DEFAULT_OCR = ("tesseract", "rapidocr")
#: Source names become folder names and partition keys.
SOURCE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_LANGUAGE_RE = re.compile(r"^[A-Za-z0-9_]+(\+[A-Za-z0-9_]+)*$")
_SOURCE_FIELDS = ("role", "direction", "language", "layout", "ocr", "primary_ocr")
_LINKAGE_FIELDS = ("query", "target")
_TOP_LEVEL_KEYS = ("sources", "linkages", "tables", "table_linkages")
#: Top-level keys read by :func:`load_table_sources` (table sources); ignored by :func:`load_sources`.
TABLE_KEYS = ("tables", "table_linkages")

_FORMAT_HINT = (
    "expected a YAML file like:\n"
    "sources:\n"
    "  firm_directory: {role: target, direction: vertical, language: jpn, layout: ppocr, ocr: [tesseract, rapidocr]}\n"
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
    layout: str = "ppocr"
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
        and ``labels.csv`` or ``labels/**/*.xml``. It changes when a page is added, replaced or removed, or the labels change, so a sensor
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
        labels_dir = self.path / "labels"  # PASCAL VOC boxes (documents.labels.read_voc_labels)
        if labels_dir.is_dir():
            for p in labels_dir.rglob("*"):
                if p.suffix.lower() == ".xml" and (p.is_symlink() or p.is_file()):
                    st = p.lstat()
                    entries.append(("../labels/" + p.relative_to(labels_dir).as_posix(), st.st_size, st.st_mtime_ns))
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


class _Named(Protocol):
    """A source entry: anything with a ``name``."""

    @property
    def name(self) -> str: ...


S = TypeVar("S", bound=_Named)
L = TypeVar("L")


@dataclass(frozen=True)
class Registry(Generic[S, L]):
    """Loaded entries of a ``sources.yaml``: usable sources and linkages in file order, and everything rejected.

    :class:`SourceRegistry` (document sources) and :class:`TableRegistry` (table sources) are this class with
    their own entry types; ``kind`` names the sources in messages.
    """

    sources: tuple[S, ...] = ()
    linkages: tuple[L, ...] = ()
    rejected: tuple[Rejection, ...] = field(default_factory=tuple)

    #: What a source is called in messages (``source``, ``table source``).
    kind: ClassVar[str] = "source"

    @property
    def names(self) -> tuple[str, ...]:
        """Names of the usable sources, in file order."""
        return tuple(s.name for s in self.sources)

    def get(self, name: str) -> S:
        """The source called ``name``.

        Raises:
            KeyError: naming the known sources when there is none of that name.
        """
        for src in self.sources:
            if src.name == name:
                return src
        raise KeyError(f"{self.kind} {short_repr(name)} is not loaded; "
                       f"known {self.kind}s: {', '.join(self.names) or 'none'}")

    def __contains__(self, name: object) -> bool:
        return any(s.name == name for s in self.sources)


class SourceRegistry(Registry[SourceConfig, Linkage]):
    """The loaded document sources and linkages of a ``sources.yaml`` (see :class:`Registry`)."""


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


def _load_named(
    raw: Mapping[Any, Any],
    load: Callable[[Any, Any], S],
    reject: Callable[[str, str], None],
    *,
    kind: str,
    taken: Collection[str] = (),
) -> list[S]:
    """Loads each ``name: settings`` entry of ``raw`` with ``load``, in order.

    An entry is rejected (through ``reject``, the others kept) when ``load`` raises ``ValueError``, when its name
    is in ``taken`` (a document source's, for tables), or when it differs from an earlier name only in letter case:
    such names share one folder on macOS and Windows file systems.
    """
    loaded: list[S] = []
    folded: dict[str, str] = {}
    for raw_name, settings in raw.items():
        try:
            item = load(raw_name, settings)
        except ValueError as exc:
            reject(source_label(raw_name), str(exc))
            continue
        if item.name in taken:
            reject(item.name, f"name {item.name!r} is also a document source; expected distinct names")
            continue
        other = folded.get(item.name.casefold())
        if other is not None:
            reject(item.name, f"name differs from {kind} {other!r} only in letter case; expected distinct names")
            continue
        folded[item.name.casefold()] = item.name
        loaded.append(item)
    return loaded


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
    # A data directory of tables only has no document sources (``tables`` is read by load_table_sources).
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

    sources = _load_named(raw_sources, lambda name, settings: _load_source(data_dir, name, settings), reject,
                          kind="source")

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

#: File suffixes a table source may have, and how each is read.
TABLE_FORMATS = {".csv": "csv", ".tsv": "csv", ".txt": "csv", ".parquet": "parquet", ".pq": "parquet"}
_TABLE_FIELDS = ("path", "id", "delimiter", "encoding")
_TABLE_LINKAGE_FIELDS = ("name", "left", "right", "dedup", "fields", "threshold", "one_to_one", "blocking")
_FIELD_SETTINGS = ("comparison", "thresholds", "right")

_TABLES_HINT = "expected e.g. tables: {firms_1930: {path: tables/firms_1930.csv, id: firm_id}}"
_LINKAGE_HINT = (
    "expected e.g. {left: firms_1930, right: firms_1950, fields: {name: jaro_winkler, city: exact}} "
    "or {dedup: firms_1930, fields: {name: jaro_winkler}}"
)


# ---------------------------------------------------------------------------------------------- configuration
@dataclass(frozen=True)
class TableSourceConfig:
    """One table source: a CSV or Parquet file in the data directory.

    Attributes:
        name: safe source name; the partition key of ``table_records``.
        path: absolute, resolved path of the file (inside the data directory).
        file: the path as written in ``sources.yaml`` (relative to the data directory); used in rejections.
        id_column: column of unique record ids.
        format: ``csv`` or ``parquet``.
        columns: the file's columns other than ``id_column``, in file order (all read as text).
        delimiter: CSV field separator.
        encoding: CSV text encoding.
    """

    name: str
    path: Path
    file: str
    id_column: str
    format: str
    columns: tuple[str, ...]
    delimiter: str = ","
    encoding: str = "utf-8"

    def fingerprint(self) -> str:
        """A hash of the file's size and modification time and of how it is read: it changes when the file is
        replaced or edited, or its entry in ``sources.yaml`` changes, so a sensor reruns exactly those sources."""
        st = self.path.stat() if self.path.is_file() else None
        entry = (self.file, st.st_size, st.st_mtime_ns) if st else (self.file, -1, -1)
        entry += (self.id_column, self.delimiter, self.encoding, self.columns)
        return hashlib.sha256(repr(entry).encode()).hexdigest()[:16]

    def to_record(self) -> dict[str, Any]:
        """One row of the ``table_sources`` table."""
        return {"name": self.name, "path": str(self.path), "format": self.format, "id_column": self.id_column,
                "columns": list(self.columns)}


@dataclass(frozen=True)
class TableLinkage:
    """One Fellegi-Sunter job: link ``left`` to ``right``, or de-duplicate ``left`` when ``right`` is None.

    Attributes:
        name: safe name; the value of the ``linkage`` column in every output table.
        left: left table source (the one de-duplicated in dedup mode).
        right: right table source, or ``None`` for dedup.
        fields: compared fields; ``FieldSpec.name`` is the left column, ``FieldSpec.right`` the right one.
        threshold: posterior match probability for a link, in (0, 1).
        one_to_one: ``"auto"`` (default): one link per entity (a record keeps a second link only when the model
            takes its two partners for the same entity); ``True``: at most one link per record on each side;
            ``False``: every pair above the threshold. Linking only (``"auto"`` for dedup, where it does nothing).
        blocking: optional blocking rules (columns that must be equal); ``None`` compares all pairs.
    """

    name: str
    left: str
    right: str | None
    fields: tuple[FieldSpec, ...]
    threshold: float = DEFAULT_MATCH_THRESHOLD
    one_to_one: bool | str = "auto"
    blocking: tuple[tuple[str, ...], ...] | None = None

    @property
    def kind(self) -> str:
        """``dedup`` or ``link``."""
        return "dedup" if self.right is None else "link"

    @property
    def right_source(self) -> str:
        """The table on the right: ``right``, or ``left`` itself in dedup mode."""
        return self.right or self.left

    def to_record(self) -> dict[str, Any]:
        """One row of the ``table_linkages`` table."""
        fields = [
            f"{f.name}:{f.comparison}" + (f"->{f.right_name}" if f.right_name else "") for f in self.fields
        ]
        return {"name": self.name, "kind": self.kind, "left_source": self.left, "right_source": self.right_source,
                "fields": fields, "threshold": self.threshold,
                "one_to_one": self.one_to_one if isinstance(self.one_to_one, str) else str(self.one_to_one).lower()}


class TableRegistry(Registry[TableSourceConfig, TableLinkage]):
    """The ``tables`` and ``table_linkages`` of a ``sources.yaml`` (see :class:`Registry`)."""

    kind: ClassVar[str] = "table source"


def _read_header(path: Path, fmt: str, delimiter: str, encoding: str) -> list[str]:
    if fmt == "parquet":
        return list(pq.read_schema(path).names)
    return [str(c) for c in pd.read_csv(path, nrows=0, sep=delimiter, encoding=encoding, dtype=str).columns]


def _load_table(data_dir: Path, raw_name: Any, settings: Any) -> TableSourceConfig:
    """One table source from its YAML entry; raises ValueError with the reason."""
    name = check_source_name(raw_name)
    if not isinstance(settings, Mapping):
        raise ValueError(f"settings {short_repr(settings)} are a {type(settings).__name__}; expected a mapping like "
                         "{path: tables/firms.csv, id: firm_id}")
    unknown = [k for k in settings if k not in _TABLE_FIELDS]
    if unknown:
        raise ValueError(f"unknown field {short_repr(unknown[0])}; expected only {', '.join(_TABLE_FIELDS)}")
    for required, example in (("path", "tables/firms.csv"), ("id", "firm_id")):
        if not isinstance(settings.get(required), str) or not settings[required]:
            raise ValueError(f"field {required!r} is {short_repr(settings.get(required))}; "
                             "expected a non-empty string like "
                             f"{example!r}")
    file, id_column = settings["path"], settings["id"]
    fmt = TABLE_FORMATS.get(Path(file).suffix.lower())
    if fmt is None:
        raise ValueError(f"path {short_repr(file)} has suffix {short_repr(Path(file).suffix)}; expected one of "
                         f"{', '.join(TABLE_FORMATS)}")
    try:
        path = safe_child(data_dir, file)
    except ValueError as exc:  # its message names the path, where it resolves and what is expected
        raise ValueError(f"field 'path': {exc}") from None
    if not path.is_file():
        raise ValueError(f"path {short_repr(file)}: file {path} not found; expected a {fmt} file there")
    delimiter = settings.get("delimiter") or ("\t" if Path(file).suffix.lower() == ".tsv" else ",")
    if not isinstance(delimiter, str) or len(delimiter) != 1:
        raise ValueError(f"delimiter {short_repr(delimiter)} is not one character; expected e.g. ',' or ';'")
    encoding = settings.get("encoding") or "utf-8"
    try:
        codecs.lookup(encoding)
    except (LookupError, TypeError):
        raise ValueError(f"encoding {short_repr(encoding)} is not a known text encoding; expected e.g. 'utf-8' or "
                         "'cp932'") from None
    if fmt == "parquet" and ("delimiter" in settings or "encoding" in settings):
        raise ValueError(f"path {short_repr(file)} is a Parquet file; "
                         "'delimiter' and 'encoding' apply to CSV files only")
    try:
        header = _read_header(path, fmt, delimiter, encoding)
    except Exception as exc:  # noqa: BLE001 - any reader error becomes the entry's rejection
        raise ValueError(f"path {short_repr(file)}: cannot read the header ({type(exc).__name__}: {exc}); expected a "
                         f"{fmt} file{' with a header row' if fmt == 'csv' else ''}") from None
    if id_column not in header:
        raise ValueError(f"id column {short_repr(id_column)} is not in {short_repr(file)}; its columns are "
                         f"{', '.join(header)}")
    columns = tuple(c for c in header if c != id_column)
    clash = [c for c in columns if c in RECORD_COLUMNS]
    if clash:
        raise ValueError(f"column {clash[0]!r} of {short_repr(file)} has the name of a column table_records adds "
                         f"({', '.join(RECORD_COLUMNS)}); expected it renamed in the file")
    return TableSourceConfig(name=name, path=path, file=file, id_column=id_column, format=fmt, columns=columns,
                             delimiter=delimiter, encoding=encoding)


def _field_spec(column: Any, setting: Any, left: TableSourceConfig, right: TableSourceConfig | None) -> FieldSpec:
    if not isinstance(column, str) or not column:
        raise ValueError(f"field name {short_repr(column)} is not a column name; expected a string")
    if isinstance(setting, str) or setting is None:
        setting = {"comparison": setting or "jaro_winkler"}
    if not isinstance(setting, Mapping):
        raise ValueError(f"field {short_repr(column)}: {short_repr(setting)} is a {type(setting).__name__}; "
                         "expected a comparison "
                         f"({', '.join(COMPARISONS)}) or a mapping with {', '.join(_FIELD_SETTINGS)}")
    unknown = [k for k in setting if k not in _FIELD_SETTINGS]
    if unknown:
        raise ValueError(f"field {short_repr(column)}: unknown setting {short_repr(unknown[0])}; expected only "
                         f"{', '.join(_FIELD_SETTINGS)}")
    comparison = setting.get("comparison", "jaro_winkler")
    if comparison not in COMPARISONS:
        raise ValueError(f"field {short_repr(column)}: comparison {short_repr(comparison)} is not one of "
                         f"{', '.join(COMPARISONS)}")
    right_column = setting.get("right")
    thresholds = setting.get("thresholds")
    try:
        spec = FieldSpec(column, comparison, tuple(thresholds) if isinstance(thresholds, list) else thresholds,
                         right_name=right_column if right_column != column else None)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"field {short_repr(column)}: {exc}") from None
    for side, table, name in (("left", left, spec.name), ("right", right, spec.right)):
        if table is None:
            continue
        if name == table.id_column:
            raise ValueError(f"field {short_repr(name)} is the id column of table {table.name!r}; "
                             "expected a data column")
        if name not in table.columns:
            raise ValueError(f"field {short_repr(name)} is not a column of {side} table {table.name!r} ({table.file}); "
                             f"its columns are {', '.join(table.columns)}")
    return spec


def _load_linkage(item: Any, tables: Mapping[str, TableSourceConfig], rejected_names: set[str]) -> TableLinkage:
    """One table linkage from its YAML entry; raises ValueError with the reason (without the entry's position,
    which the caller adds where the rejection's source does not already name it)."""
    if not isinstance(item, Mapping):
        raise ValueError(f"entry {short_repr(item)} is a {type(item).__name__}; {_LINKAGE_HINT}")
    unknown = [k for k in item if k not in _TABLE_LINKAGE_FIELDS]
    if unknown:
        raise ValueError(f"unknown field {short_repr(unknown[0])}; expected only {', '.join(_TABLE_LINKAGE_FIELDS)}")
    dedup = "dedup" in item
    if dedup == ("left" in item or "right" in item) or (not dedup and not ("left" in item and "right" in item)):
        raise ValueError(f"expected either 'dedup: <table>' or both 'left' and 'right'; {_LINKAGE_HINT}")

    def table(place: str) -> TableSourceConfig:
        name = item[place]
        if isinstance(name, str) and name in tables:
            return tables[name]
        rejected_before = source_label(name) in rejected_names
        why = "was rejected (see its own rejection)" if rejected_before else "is not defined under 'tables'"
        raise ValueError(f"{place} table {short_repr(name)} {why}; expected one of the loaded tables: "
                         f"{', '.join(tables) or 'none'}")

    left = table("dedup" if dedup else "left")
    right = None if dedup else table("right")
    name = item.get("name") or (f"{left.name}__dedup" if dedup else f"{left.name}__{right.name}")  # type: ignore[union-attr]
    if not isinstance(name, str) or not SOURCE_NAME_RE.match(name) or ".." in name:
        raise ValueError(f"name {short_repr(name)} is not a safe name; expected 1-64 letters, digits, '_', '.', '-' "
                         "starting with a letter or digit")
    fields = item.get("fields")
    if not isinstance(fields, Mapping) or not fields:
        raise ValueError(f"fields {short_repr(fields)} is not a non-empty mapping; expected column: comparison, "
                         "e.g. {name: jaro_winkler, city: exact}")
    specs = tuple(_field_spec(col, setting, left, right) for col, setting in fields.items())
    threshold = item.get("threshold", DEFAULT_MATCH_THRESHOLD)
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 < float(threshold) < 1.0:
        raise ValueError(f"threshold {short_repr(threshold)} is not a probability; expected a number in (0, 1)")
    one_to_one = item.get("one_to_one", "auto")
    if not isinstance(one_to_one, bool) and one_to_one != "auto":
        raise ValueError(f"one_to_one {short_repr(one_to_one)} is not auto, true or false")
    if one_to_one is True and dedup:
        raise ValueError("one_to_one applies to linking two tables; expected it left out for dedup")
    blocking = item.get("blocking")
    if blocking is not None:
        if not isinstance(blocking, list) or not blocking or not all(
            isinstance(r, list) and r and all(isinstance(c, str) for c in r) for r in blocking
        ):
            raise ValueError(f"blocking {short_repr(blocking)}; expected a list of rules, each a list of column "
                             "names, e.g. [[city], [founded, name]]")
        for rule in blocking:
            for col in rule:
                for tbl in (left, right or left):
                    if col not in tbl.columns:
                        raise ValueError(f"blocking column {short_repr(col)} is not a column of table {tbl.name!r}; "
                                         f"its columns are {', '.join(tbl.columns)}")
        blocking = tuple(tuple(r) for r in blocking)
    return TableLinkage(name=name, left=left.name, right=None if right is None else right.name, fields=specs,
                        threshold=float(threshold), one_to_one=one_to_one, blocking=blocking)


def load_table_sources(data_dir: Path, *, strict: bool = False, log_repeats: bool = True) -> TableRegistry:
    """Reads and validates the ``tables`` and ``table_linkages`` of ``<data_dir>/sources.yaml``.

    A table entry is bad when its name is unsafe or already used by a document source or (up to letter case)
    another table, a field is missing or unknown, its path is not a ``.csv``/``.tsv``/``.parquet`` file inside
    the data directory, its header cannot be read, or its id column is not in the header. A linkage is bad
    when it names a table that is not loaded, a column either table lacks, an unknown comparison, a threshold
    outside (0, 1), or a name already used. Bad entries become rejections (stage ``table_sources``, file
    ``sources.yaml``); the others load. A file without ``tables`` gives an empty registry. A rejected linkage's
    source is its ``name``, or ``table linkage <n>`` (its place in the list) when it has none; each rejection is
    logged as a warning once per load (see :func:`log_rejections`).

    Args:
        data_dir: the data directory holding ``sources.yaml``.
        strict: raise instead of returning rejections.
        log_repeats: ``False`` logs at debug level the rejections that the previous load of the same file in
            this process already reported (for callers that reload the file for every asset or sensor tick).

    Returns:
        The registry: usable table sources and linkages in file order, and the rejections.

    Raises:
        FileNotFoundError: when ``data_dir`` or its ``sources.yaml`` does not exist.
        ValueError: when the file is not valid YAML, ``tables``/``table_linkages`` have the wrong type, or, with
            ``strict``, when anything was rejected (all reasons listed).
    """
    data_dir = Path(data_dir).expanduser().resolve()
    path = data_dir / SOURCES_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; {_TABLES_HINT}")
    doc = read_sources_yaml(path)
    if doc is None:
        doc = {}
    if not isinstance(doc, Mapping):
        raise ValueError(f"{path}: top level is a {type(doc).__name__}; expected a mapping with 'tables'")
    raw_tables = doc.get("tables") if doc.get("tables") is not None else {}
    if not isinstance(raw_tables, Mapping):
        raise ValueError(f"{path}: 'tables' is a {type(raw_tables).__name__}; {_TABLES_HINT}")
    raw_linkages = doc.get("table_linkages") if doc.get("table_linkages") is not None else []
    if not isinstance(raw_linkages, list):
        raise ValueError(f"{path}: 'table_linkages' is a {type(raw_linkages).__name__}; expected a list like "
                         f"[{_LINKAGE_HINT.split('e.g. ')[1].split(' or ')[0]}]")
    document_sources = doc.get("sources") if isinstance(doc.get("sources"), Mapping) else {}

    rejected: list[Rejection] = []

    def reject(source: str, reason: str) -> None:
        rejected.append(Rejection(source=source, file=SOURCES_FILE, stage="table_sources", reason=reason))

    loaded = _load_named(raw_tables, lambda name, settings: _load_table(data_dir, name, settings), reject,
                         kind="table", taken=document_sources)
    tables: dict[str, TableSourceConfig] = {t.name: t for t in loaded}

    rejected_names = {r.source for r in rejected}
    linkages: list[TableLinkage] = []
    for index, item in enumerate(raw_linkages):
        position = f"table linkage {index + 1}"
        name = item.get("name") if isinstance(item, Mapping) else None
        try:
            linkage = _load_linkage(item, tables, rejected_names)
        except ValueError as exc:
            # The source names the entry; the reason adds its position only when the source is its name.
            if name:
                reject(source_label(name), f"{position}: {exc}")
            else:
                reject(position, str(exc))
            continue
        if any(other.name == linkage.name for other in linkages):
            reject(linkage.name, f"table linkage {index + 1}: name {linkage.name!r} is already used; expected "
                                 "distinct names (set 'name' on one of them)")
            continue
        linkages.append(linkage)

    if strict and rejected:
        raise ValueError(f"{path}: {len(rejected)} problem(s):\n" + "\n".join(f"- {r}" for r in rejected))
    log_rejections(path, "table_sources", rejected, repeats=log_repeats)
    logger.info("loaded %d table sources and %d table linkages from %s (%d rejected)", len(tables), len(linkages),
                path, len(rejected))
    return TableRegistry(sources=tuple(tables.values()), linkages=tuple(linkages), rejected=tuple(rejected))
