"""Turning command-line arguments (files, folders, globs) into a list of image files."""

from __future__ import annotations

import glob
import hashlib
from collections import Counter
from pathlib import Path

from .files import describe_problem, safe_resolve
from .image import IMAGE_SUFFIXES

GLOB_CHARS = set("*?[")
FANOUT_OVER = 10_000  # more images than this in one run: outputs go into two levels of sub-folders


def expand_inputs(args: list[str], recursive: bool = False) -> tuple[list[Path], list[tuple[str, str]]]:
    """Files to analyse, in order and without duplicates, plus (argument, reason) for arguments
    that gave nothing. Folders contribute their image files (by suffix; ``recursive`` descends);
    a file named explicitly is always tried, whatever its suffix."""
    files: list[Path] = []
    problems: list[tuple[str, str]] = []
    seen: set[Path] = set()

    def add(p: Path) -> None:
        key = safe_resolve(p)
        if key not in seen:
            seen.add(key)
            files.append(p)

    for arg in args:
        path = Path(arg)
        if path.is_dir():
            found, unreadable = _images_in(path, recursive)
            problems += unreadable
            if not found and not unreadable:
                problems.append((arg, "no image files in this folder" + ("" if recursive else " (try --recursive)")))
            for p in found:
                add(p)
        elif path.exists() or not (GLOB_CHARS & set(arg)):
            add(path)  # missing files are reported when they are read
        else:
            matches = sorted(glob.glob(arg, recursive=True))
            images = [Path(m) for m in matches if Path(m).is_file() and Path(m).suffix.lower() in IMAGE_SUFFIXES]
            if not images:
                problems.append((arg, "no image files match this pattern"))
            for p in images:
                add(p)
    return files, problems


def _images_in(folder: Path, recursive: bool) -> tuple[list[Path], list[tuple[str, str]]]:
    """The image files of ``folder`` (by suffix, hidden entries left out), and (path, reason) for
    entries named like images that cannot be read as files: symlink loops, dangling links, FIFOs,
    devices. Symbolic links to folders are not followed, so a link loop cannot recurse."""
    pattern = "**/*" if recursive else "*"
    found, unreadable = [], []
    for p in sorted(folder.glob(pattern)):
        if p.suffix.lower() not in IMAGE_SUFFIXES or any(part.startswith(".") for part in p.relative_to(folder).parts):
            continue
        problem = describe_problem(p)
        if problem is None:
            found.append(p)
        elif problem != "is a directory":
            unreadable.append((str(p), problem))
    return found, unreadable


def output_stems(files: list[Path], fanout: bool | None = None) -> dict[Path, str]:
    """Output name for each input: its stem, or stem-<8 hex> where two inputs share a stem.

    With ``fanout`` (default: more than :data:`FANOUT_OVER` files) the name is put in two levels
    of sub-folders named by a hash of it (:func:`fanout_stem`), so that no folder of a large run
    holds more than a few thousand files."""
    counts = Counter(p.stem for p in files)
    fanout = len(files) > FANOUT_OVER if fanout is None else fanout
    stems = {}
    for p in files:
        if counts[p.stem] == 1:
            stems[p] = p.stem
        else:
            digest = hashlib.sha256(str(safe_resolve(p)).encode()).hexdigest()[:8]
            stems[p] = f"{p.stem}-{digest}"
        if fanout:
            stems[p] = fanout_stem(stems[p])
    return stems


def fanout_stem(stem: str) -> str:
    """``ab/cd/<stem>``: ``ab`` and ``cd`` are the first four hex digits of the SHA-256 of the stem
    (65,536 folders: 10 million images put about 150 in each)."""
    h = hashlib.sha256(stem.encode("utf-8", "surrogateescape")).hexdigest()
    return f"{h[:2]}/{h[2:4]}/{stem}"


def read_input_list(path: Path) -> list[str]:
    """The entries of an ``--input-list`` file: one path per line (blank lines and lines starting
    with ``#`` skipped; relative paths are taken from the current folder, as on the command line)."""
    from ..errors import ImlfError

    try:
        text = path.read_text(encoding="utf-8", errors="surrogateescape")
    except OSError as exc:
        raise ImlfError(f"--input-list {path}: cannot read it ({exc.strerror or exc})") from None
    entries = [line.rstrip("\r") for line in text.split("\n")]
    return [e for e in entries if e.strip() and not e.lstrip().startswith("#")]
