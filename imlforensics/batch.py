"""Whole-directory runs for ``imlf ensemble``: workers, a resumable ledger, shards and a summary.

* Each worker process builds the detector once and analyses images handed to it (``jobs`` > 1);
  with one job, the next image's decode is not overlapped (the detector reads the file itself).
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
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterator

from .errors import ImlfError

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
    import torch

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    _WORKER["detector"], _WORKER["job"] = factory(), job


def _one(item: tuple[str, str]) -> dict[str, Any]:
    from .pipeline import detect_file

    path, stem = item
    job = _WORKER["job"]
    try:
        rec = detect_file(_WORKER["detector"], Path(path), Path(job["out_dir"]), stem, job["threshold"], job["overwrite"],
                          job["save_raw"], job["max_pixels"], frozenset(Path(p) for p in job["protected"]))
        return {"image": path, "status": "done", "record": rec}
    except ImlfError as exc:
        return {"image": path, "status": "failed", "error": str(exc)}
    except MemoryError:
        return {"image": path, "status": "failed", "error": "out of memory"}
    except Exception as exc:  # a bug: one line, the batch goes on
        if os.environ.get("IMLF_DEBUG"):
            raise
        return {"image": path, "status": "failed", "error": f"internal error: {type(exc).__name__}: {exc}"}


def run_batch(items: list[tuple[str, str]], factory: Callable[[], Any], job: dict[str, Any], jobs: int) -> Iterator[dict[str, Any]]:
    """Yield one result per (image, stem) as images finish."""
    if jobs <= 1:
        _init(factory, job)
        for it in items:
            yield _one(it)
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
