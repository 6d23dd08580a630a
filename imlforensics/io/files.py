"""Safe file handling shared by every command: checking an input before it is read, resolving
paths that may hold symlink loops, and keeping paths built from untrusted names inside their folder.

* :func:`check_input` looks at a path with ``stat`` before anything opens it: a FIFO, a device
  (``/dev/zero``), a socket, a folder, a dangling link or a symlink loop is refused in one line, so
  nothing hangs on a pipe or reads an endless device.
* :func:`read_input` reads a checked file whole, refusing one larger than a bound.
* :func:`safe_resolve` is ``Path.resolve`` without its ``RuntimeError`` on symlink loops.
* :func:`child_path` joins a folder and a name taken from a file (a model card, a CSV) and refuses
  a name that would leave the folder (``..``, an absolute path, a separator).
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from ..errors import ImlfError


class UnsafePath(ImlfError):
    """A path built from an untrusted name would leave the folder it belongs in."""


def safe_resolve(path: str | Path) -> Path:
    """``Path(path).resolve()``, or the absolute path unresolved when links loop (Python < 3.13
    raises RuntimeError there, newer ones OSError)."""
    p = Path(path)
    try:
        return p.resolve()
    except (RuntimeError, OSError):
        return Path(os.path.abspath(p))


def describe_problem(path: Path) -> str | None:
    """Why ``path`` cannot be read as a regular file, or None when it can."""
    try:
        st = path.stat()
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "symlink loop"
        if path.is_symlink():
            return "broken symbolic link (its target does not exist)"
        if exc.errno == errno.ENOENT:
            return "no such file"
        if exc.errno == errno.EACCES:
            return "permission denied"
        return f"cannot read file: {exc.strerror or exc}"
    mode = st.st_mode
    if stat.S_ISDIR(mode):
        return "is a directory"
    if stat.S_ISFIFO(mode):
        return "is a named pipe (FIFO), not a file"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "is a device, not a file"
    if stat.S_ISSOCK(mode):
        return "is a socket, not a file"
    if not stat.S_ISREG(mode):
        return "not a regular file"
    return None


def check_input(path: str | Path, error: type[ImlfError] = ImlfError) -> os.stat_result:
    """The ``stat`` of a regular file, or ``error`` with a one-line reason (see the module docstring)."""
    path = Path(path)
    problem = describe_problem(path)
    if problem:
        raise error(problem)
    return path.stat()


def read_input(path: str | Path, max_bytes: int | None = None, error: type[ImlfError] = ImlfError) -> bytes:
    """A regular file's bytes (see :func:`check_input`); files over ``max_bytes`` are refused unread."""
    path = Path(path)
    size = check_input(path, error).st_size
    if max_bytes is not None and size > max_bytes:
        raise error(f"file is {size / 1e6:.0f} MB, larger than the {max_bytes / 1e6:.0f} MB this input may have")
    try:
        with open(path, "rb") as f:
            return f.read() if max_bytes is None else f.read(max_bytes + 1)[: max_bytes + 1]
    except OSError as exc:
        raise error(f"cannot read file: {exc.strerror or exc}") from None


def child_path(folder: Path, name: str, what: str = "name") -> Path:
    """``folder / name`` for a ``name`` that must stay a single entry inside ``folder``."""
    bad = (not name or name in (".", "..") or "/" in name or "\\" in name or "\x00" in name
           or os.path.isabs(name) or (os.altsep and os.altsep in name))
    if not bad:
        target = folder / name
        root = safe_resolve(folder)
        if safe_resolve(target).parent == root:
            return target
    raise UnsafePath(f"refusing {what} {name!r}: it would point outside {folder}")
