"""Whole-directory runs for ``imlf ensemble``: workers, a resumable ledger, shards and a summary.

* With one job the detector runs in this process while threads decode the next image and write
  the previous one's outputs (:func:`imlforensics.runs.detect.detect_stream`). With ``jobs`` > 1,
  each worker process builds the detector once, with one BLAS/OpenMP/torch thread, and analyses
  the images handed to it.
* The ledger ``<out>/ledger.jsonl`` gets one line per finished image (done or failed), appended
  and flushed to disk only after all of that image's outputs were written (atomically). ``resume``
  skips images whose latest ledger line says done and whose JSON output exists; a line cut by a
  crash, or damaged, is ignored. ``summary.csv`` is made from the whole ledger, so runs and shards
  into one folder add up.
* :class:`OutputLock` keeps two runs from writing the same folder at once (shards excepted).
* ``shard`` (K, N) keeps the images whose path hash falls in share K of N, so N processes or
  machines split a corpus without coordination.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from ..errors import ImlfError, OutputError
from ..io.files import safe_resolve
from .workers import one_thread_per_library, pool_map

LEDGER = "ledger.jsonl"
SUMMARY = "summary.csv"


def in_shard(path: Path, shard: tuple[int, int] | None) -> bool:
    if shard is None:
        return True
    k, n = shard
    h = int(hashlib.sha256(str(safe_resolve(path)).encode()).hexdigest()[:12], 16)
    return h % n == k - 1


def parse_shard(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    try:
        k, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise ImlfError(f"--shard {text!r}: expected K/N, e.g. 1/4") from None
    if not 1 <= k <= n:
        raise ImlfError(f"--shard {text!r}: K must be between 1 and N")
    return k, n


def _ledger_path(out_dir: Path) -> Path:
    path = out_dir / LEDGER
    if path.exists() and not path.is_file():
        raise OutputError(f"{path} is not a file: move it away (the ledger of a run is a file)")
    return path


def ledger_key(path: str | Path) -> str:
    """The ledger's name for an input: its absolute, resolved path, the same from any folder."""
    return str(safe_resolve(path))


def read_ledger_entries(out_dir: Path) -> tuple[dict[str, dict[str, Any]], int]:
    """The latest complete ledger line per input (by :func:`ledger_key`), and how many lines could
    not be read (cut by a crash, or damaged). Lines of older ledgers, which named inputs relative to
    the folder the run was started from, are keyed as if relative to the current folder."""
    latest: dict[str, dict[str, Any]] = {}
    bad = 0
    try:
        raw = _ledger_path(out_dir).read_bytes()
    except FileNotFoundError:
        return latest, 0
    except OSError as exc:
        raise OutputError(f"cannot read {out_dir / LEDGER}: {exc.strerror or exc}") from None
    for line in raw.splitlines():
        if not line.strip():
            continue
        try:
            rec = json.loads(line.decode("utf-8"))
            key = ledger_key(rec["image"])
        except (ValueError, KeyError, TypeError):
            bad += 1
            continue
        if isinstance(rec, dict) and rec.get("status") in ("done", "failed"):
            latest[key] = rec
        else:
            bad += 1
    return latest, bad


def _json_output(out_dir: Path, rec: dict[str, Any]) -> Path | None:
    name = str(rec.get("json") or "")
    if not name:
        return None
    for candidate in (out_dir / name, Path(name), out_dir / Path(name).name):
        if candidate.is_file():
            return candidate
    return None


def read_ledger(out_dir: Path) -> dict[str, dict[str, Any]]:
    """Finished inputs by :func:`ledger_key`, from ledger lines whose JSON output still exists."""
    entries, _ = read_ledger_entries(out_dir)
    return {k: r for k, r in entries.items() if r["status"] == "done" and _json_output(out_dir, r) is not None}


def remove_stale_temporaries(out_dir: Path, stems: Iterable[str]) -> int:
    """Delete the temporary files an interrupted run left for the outputs of these ``stems``
    (``.<stem>.<kind>.<random>.tmp``, see :func:`imlforensics.io.outputs.write_atomic`); other
    files, such as those of another shard writing into the same folder, are left alone."""
    by_folder: dict[Path, list[str]] = {}
    for stem in stems:  # a stem may sit in sub-folders (io.inputs.fanout_stem)
        by_folder.setdefault((out_dir / stem).parent, []).append(f".{Path(stem).name}.")
    n = 0
    for folder, names in by_folder.items():
        prefixes = tuple(names)
        for p in folder.glob(".*.tmp"):
            if p.name.startswith(prefixes):
                try:
                    p.unlink()
                    n += 1
                except OSError:
                    pass
    return n


class Ledger:
    """``<out>/ledger.jsonl``: one JSON line per finished input (done or failed), appended and
    flushed to disk once the input's outputs are written. Inputs are named by :func:`ledger_key`
    and JSON outputs relative to the output folder, so a run resumes from any working folder and
    the folder can be moved."""

    def __init__(self, out_dir: Path):
        self.out_dir = out_dir
        path = _ledger_path(out_dir)
        try:
            self.f = open(path, "a", encoding="utf-8")
        except OSError as exc:
            raise OutputError(f"cannot open the ledger {path}: {exc.strerror or exc}") from None

    def done(self, path: str | Path, record: dict[str, Any]) -> dict[str, Any]:
        entry = {"image": ledger_key(path), "input": str(path), "status": "done",
                 "json": os.path.relpath(safe_resolve(record["outputs"]["json"]), safe_resolve(self.out_dir)),
                 "summary": {k: record.get(k) for k in ("score", "tampered_fraction", "seconds")}}
        self.add(entry)
        return entry

    def failed(self, path: str | Path, reason: str) -> dict[str, Any]:
        entry = {"image": ledger_key(path), "input": str(path), "status": "failed", "error": reason}
        self.add(entry)
        return entry

    def add(self, entry: dict[str, Any]) -> None:
        try:
            self.f.write(json.dumps(entry, ensure_ascii=False) + "\n")
            self.f.flush()
            os.fsync(self.f.fileno())
        except OSError as exc:
            raise OutputError(f"cannot write the ledger {self.out_dir / LEDGER}: {exc.strerror or exc}") from None

    def close(self) -> None:
        try:
            self.f.close()
        except OSError:
            pass


class OutputLock:
    """An advisory lock on an output folder for the length of a run (``<out>/.imlf.lock``).

    A run without ``--shard`` holds it alone; shards of one corpus share it (they write disjoint
    files) and each holds its own share's lock, so two runs that would write the same files never
    run at once, while N shards can run side by side. Released when the process ends, however it ends.
    """

    def __init__(self, out_dir: Path, shard: tuple[int, int] | None = None, command: str = "imlf"):
        self.files: list[Any] = []
        try:
            import fcntl
        except ImportError:  # no advisory locks on this platform
            return
        try:
            self._take(fcntl, out_dir / ".imlf.lock", fcntl.LOCK_SH if shard else fcntl.LOCK_EX, command, shard)
            if shard:
                self._take(fcntl, out_dir / f".imlf.shard-{shard[0]}-of-{shard[1]}.lock", fcntl.LOCK_EX, command, shard)
        except BaseException:
            self.release()
            raise

    def _take(self, fcntl: Any, path: Path, how: int, command: str, shard: tuple[int, int] | None) -> None:
        try:
            f = open(path, "a+")
        except OSError as exc:
            raise OutputError(f"cannot create the lock file {path}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(f.fileno(), how | fcntl.LOCK_NB)
        except OSError:
            f.close()
            what = f"share {shard[0]}/{shard[1]} of " if shard and "shard" in path.name else ""
            raise OutputError(f"another {command} run is writing {what}{path.parent} now: wait for it to end, or "
                              "give another --out (shards of one corpus, --shard K/N, may share a folder)") from None
        self.files.append(f)

    def release(self) -> None:
        for f in self.files:
            f.close()
        self.files = []

    def __enter__(self) -> "OutputLock":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


_WORKER: dict[str, Any] = {}


def _init(factory: Callable[[], Any], job: dict[str, Any]) -> None:
    _WORKER["detector"], _WORKER["job"] = factory(), job
    one_thread_per_library()


def _outcome(path: str, record: dict[str, Any] | None, error: BaseException | None) -> dict[str, Any]:
    """The result of one image, with a failure as one line."""
    if error is None:
        return {"image": path, "status": "done", "record": record}
    if isinstance(error, ImlfError):
        reason = str(error)
    elif isinstance(error, MemoryError):
        reason = "out of memory"
    else:  # a bug: one line, the batch goes on
        if os.environ.get("IMLF_DEBUG"):
            raise error
        reason = f"internal error: {type(error).__name__}: {error}"
    return {"image": path, "status": "failed", "error": reason}


def _stream_args(job: dict[str, Any]) -> dict[str, Any]:
    return {"threshold": job["threshold"], "overwrite": job["overwrite"], "save_raw": job["save_raw"],
            "max_pixels": job["max_pixels"], "protected": frozenset(Path(p) for p in job["protected"])}


def _one(item: tuple[str, str]) -> dict[str, Any]:
    from .detect import detect_file

    path, stem = item
    job = _WORKER["job"]
    try:
        rec = detect_file(_WORKER["detector"], Path(path), Path(job["out_dir"]), stem, **_stream_args(job))
    except Exception as exc:  # noqa: BLE001  (MemoryError included)
        return _outcome(path, None, exc)
    return _outcome(path, rec, None)


def run_batch(items: list[tuple[str, str]], factory: Callable[[], Any], job: dict[str, Any], jobs: int,
              detector: Any = None) -> Iterator[dict[str, Any]]:
    """Yield one result per (image, stem) as images finish. ``factory`` builds the detector (in
    each worker); with one job, an already built ``detector`` is used as it is."""
    if jobs <= 1:
        from .detect import detect_stream

        pairs = [(Path(p), stem) for p, stem in items]
        det = detector if detector is not None else factory()
        for path, rec, error in detect_stream(det, pairs, Path(job["out_dir"]), **_stream_args(job)):
            yield _outcome(str(path), rec, error)
        return
    # fresh interpreters whose BLAS/OpenMP pools start with one thread each (runs.workers)
    yield from pool_map(_one, items, jobs, _init, (factory, job))


def summary_rows(out_dir: Path) -> list[dict[str, Any]]:
    """One row per input the ledger knows (its latest line), in the order they were first recorded:
    this run's images, earlier runs' and other shards' alike."""
    entries, _ = read_ledger_entries(out_dir)
    return [{"image": r.get("input") or r["image"], "status": r["status"], "record": r.get("summary") or {},
             "error": r.get("error", "")} for r in entries.values()]


def summary_csv(rows: list[dict[str, Any]], threshold: float) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["image", "status", "score", "flagged", "tampered_fraction", "seconds", "error"])
    for r in rows:
        rec = r.get("record") or {}
        score = rec.get("score")
        w.writerow([r["image"], r["status"], "" if score is None else score,
                    "" if score is None else int(score >= threshold), rec.get("tampered_fraction", ""),
                    rec.get("seconds", ""), r.get("error", "")])
    return buf.getvalue()
