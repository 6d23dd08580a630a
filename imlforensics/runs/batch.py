"""Whole-directory runs for ``imlf ensemble``: workers, a resumable ledger, shards and a summary.

* With one job the detector runs in this process while threads decode the next image and write
  the previous one's outputs (:func:`imlforensics.runs.detect.detect_stream`). With ``jobs`` > 1,
  each worker process builds the detector once, with one BLAS/OpenMP/torch thread, and analyses
  the images handed to it.
* The ledger ``<out>/ledger.jsonl`` gets one line per finished image, appended and flushed to disk
  only after all of that image's outputs were written (atomically). ``resume`` skips images whose
  ledger line says done and whose JSON output exists; a line cut by a crash is ignored.
* ``shard`` (K, N) keeps the images whose path hash falls in share K of N, so N processes or
  machines split a corpus without coordination.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from ..errors import ImlfError

LEDGER = "ledger.jsonl"
SUMMARY = "summary.csv"


def in_shard(path: Path, shard: tuple[int, int] | None) -> bool:
    if shard is None:
        return True
    k, n = shard
    h = int(hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12], 16)
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


def read_ledger(out_dir: Path) -> dict[str, dict[str, Any]]:
    """Finished images by path, from complete ledger lines whose JSON output still exists."""
    done: dict[str, dict[str, Any]] = {}
    try:
        lines = (out_dir / LEDGER).read_text().splitlines()
    except OSError:
        return done
    for line in lines:
        try:
            rec = json.loads(line)
        except ValueError:
            continue  # a line cut by a crash
        if rec.get("status") == "done" and Path(rec.get("json", "")).is_file():
            done[rec["image"]] = rec
    return done


def remove_stale_temporaries(out_dir: Path, stems: Iterable[str]) -> int:
    """Delete the temporary files an interrupted run left for the outputs of these ``stems``
    (``.<stem>.<kind>.<random>.tmp``, see :func:`imlforensics.io.outputs.write_atomic`); other
    files, such as those of another shard writing into the same folder, are left alone."""
    prefixes = tuple(f".{stem}." for stem in stems)
    n = 0
    for p in out_dir.glob(".*.tmp"):
        if prefixes and p.name.startswith(prefixes):
            try:
                p.unlink()
                n += 1
            except OSError:
                pass
    return n


class Ledger:
    def __init__(self, out_dir: Path):
        self.f = open(out_dir / LEDGER, "a", encoding="utf-8")

    def add(self, entry: dict[str, Any]) -> None:
        self.f.write(json.dumps(entry, ensure_ascii=False) + "\n")
        self.f.flush()
        os.fsync(self.f.fileno())

    def close(self) -> None:
        self.f.close()


_WORKER: dict[str, Any] = {}


def _init(factory: Callable[[], Any], job: dict[str, Any]) -> None:
    import cv2

    cv2.setNumThreads(1)
    _WORKER["detector"], _WORKER["job"] = factory(), job
    if "torch" in sys.modules:  # only deep members import torch (its import alone takes seconds)
        sys.modules["torch"].set_num_threads(1)


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
    import multiprocessing

    # fresh interpreters whose BLAS/OpenMP pools start with one thread each: forked workers would
    # inherit the parent's pools and oversubscribe the cores
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_init, initargs=(factory, job)) as pool:
        yield from pool.map(_one, items, chunksize=1)


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
