"""Safe path handling: user-given names become paths only through :func:`safe_child`.

Source names, page file names from ``labels.csv`` and partition keys are all user input. Joining them onto a
folder with ``/`` would let ``../x``, ``/etc`` or a symlink reach files outside the data directory, so every such
join goes through :func:`safe_child`, which resolves the result (following symlinks) and refuses anything that
is not inside the base folder. Files other processes may read while we write them are written with
:func:`atomic_write_bytes` (or :func:`atomic_output`): a crash leaves the old file or the new one, never half.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath, PureWindowsPath

__all__ = ["atomic_output", "atomic_write_bytes", "is_within", "safe_child"]


def is_within(path: Path, base: Path) -> bool:
    """Whether ``path`` is ``base`` or inside it, after resolving both (symlinks followed).

    Args:
        path: the path to test; it need not exist.
        base: the folder it must stay inside.

    Returns:
        True when the resolved ``path`` equals the resolved ``base`` or lies below it.
    """
    resolved = Path(path).resolve()
    root = Path(base).resolve()
    return resolved == root or resolved.is_relative_to(root)


def safe_child(base: Path, *parts: str) -> Path:
    """Joins ``parts`` onto ``base`` and returns the resolved path, refusing anything outside ``base``.

    A part may contain ``/`` (e.g. ``"scans/p1.png"`` from ``labels.csv``); ``..`` components are allowed only
    while the resolved result stays inside ``base``. Symlinks are followed, so a link inside ``base`` that
    points elsewhere is refused. The result need not exist.

    Args:
        base: the folder the result must stay inside.
        *parts: user-given path components (strings).

    Returns:
        The absolute, resolved path of ``base / parts...``.

    Raises:
        ValueError: when a part is not a non-empty string, contains a NUL byte, is absolute (POSIX or Windows
            style), or when the resolved path escapes ``base``.
    """
    root = Path(base).expanduser().resolve()
    joined = root
    for part in parts:
        if not isinstance(part, str):
            raise ValueError(f"path part {part!r} is a {type(part).__name__}; expected a string")
        if part == "":
            raise ValueError(f"empty path part under {root}; expected a file or folder name")
        if "\x00" in part:
            raise ValueError(f"path part {part!r} contains a NUL byte; expected a plain name")
        if PurePosixPath(part).is_absolute() or PureWindowsPath(part).is_absolute() or PureWindowsPath(part).drive:
            raise ValueError(f"path part {part!r} is absolute; expected a name relative to {root}")
        joined = joined / part
    resolved = joined.resolve()
    if not (resolved == root or resolved.is_relative_to(root)):
        shown = "/".join(parts)
        raise ValueError(f"path {shown!r} resolves to {resolved}, outside {root}; expected a path inside it")
    return resolved


def _fsync_dir(folder: Path) -> None:
    # Makes the rename itself durable; not possible on every platform (e.g. Windows), so best effort.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_output(path: Path, *, mode: int = 0o644) -> Iterator[Path]:
    """Yields a temporary path beside ``path``; on clean exit it is fsynced and renamed onto ``path``.

    For writers that want a file name (Parquet, PIL, FAISS). On an exception the temporary file is removed and
    ``path`` is left as it was.

    Args:
        path: the final file; its parent folder is created if missing.
        mode: permission bits of the final file (temporary files are created private).

    Yields:
        The temporary path to write to.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_bytes(path: Path, data: bytes, *, mode: int = 0o644) -> Path:
    """Writes ``data`` to ``path`` atomically: temporary file in the same folder, fsync, ``os.replace``.

    Args:
        path: the final file; its parent folder is created if missing.
        data: the complete file content.
        mode: permission bits of the final file.

    Returns:
        ``path``.

    Raises:
        ValueError: when ``data`` is not bytes-like.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ValueError(f"data is a {type(data).__name__}; expected bytes")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp_name, mode)
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    _fsync_dir(path.parent)
    return path
