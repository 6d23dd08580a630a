"""``runs.jsonl``: what each run of ``imlf detect`` or ``imlf ensemble`` was, beside its outputs.

Each run appends one line (JSON Lines, flushed to disk): the command, the detector (and a
committee's members, their versions and weights, the priors file), the threshold, when the run
started and finished, the counts and every failure with its reason. ``imlf report`` reads it for
the run page; folders from before it existed still work (the report then takes the failures from
``summary.csv``). The name ends in ``.jsonl`` so that ``<out>/*.json`` is still exactly the
images' records.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import time
from pathlib import Path
from typing import Any

from .._version import __version__
from ..errors import OutputError

RUN_FILE = "runs.jsonl"


def _iso(t: float) -> str:
    return _dt.datetime.fromtimestamp(t, _dt.timezone.utc).isoformat(timespec="seconds")


def detector_info(detector: Any, priors: str | None = None) -> dict[str, Any]:
    """Name, version and kind; for a committee its members (version, weight, or why it cannot run),
    voter, temperature, fusion and priors."""
    info: dict[str, Any] = {"detector": {"name": detector.name, "version": detector.version, "kind": detector.kind}}
    members = getattr(detector, "members", None)
    if isinstance(members, dict):
        info["members"] = {n: {"version": d.version, "weight": round(detector.weights.get(n, 0.0), 6)} for n, d in members.items()}
        info["members"].update({n: {"version": None, "weight": round(detector.weights.get(n, 0.0), 6), "absent": r}
                                for n, r in getattr(detector, "absent", {}).items()})
        info.update({"voter": detector.voter, "temperature": detector.temperature, "fusion": detector.fusion,
                     "priors": priors or "shipped classical priors", "priors_dataset": detector.doc.get("dataset")})
    return info


class RunLog:
    """Collects a run's outcome and appends its line to ``runs.jsonl`` at the end."""

    def __init__(self, out_dir: Path, command: str, detector: Any, threshold: float, priors: str | None = None):
        self.out_dir, self.started, self.t0 = out_dir, time.time(), time.perf_counter()
        self.doc: dict[str, Any] = {"format": 1, "command": command, "imlforensics": __version__, "threshold": threshold,
                                    **detector_info(detector, priors)}
        self.failures: list[dict[str, str]] = []
        self.done = self.flagged = 0

    def add(self, image: str, score: float | None = None, error: str | None = None) -> None:
        if error is not None:
            self.failures.append({"image": image, "error": error})
            return
        self.done += 1
        self.flagged += int(score is not None and score >= self.doc["threshold"])

    def write(self) -> Path:
        path = self.out_dir / RUN_FILE
        doc = {**self.doc, "started": _iso(self.started), "finished": _iso(time.time()),
               "wall_seconds": round(time.perf_counter() - self.t0, 3),
               "counts": {"images": self.done + len(self.failures), "done": self.done, "failed": len(self.failures),
                          "flagged": self.flagged},
               "failures": self.failures}
        line = (json.dumps(doc, ensure_ascii=False) + "\n").encode()
        existed = path.exists()
        size = path.stat().st_size if existed else 0
        try:
            with open(path, "ab") as f:
                f.write(line)
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:  # a full disk: take the partial line back, leave no new file
            try:
                if existed:
                    os.truncate(path, size)
                else:
                    path.unlink()
            except OSError:
                pass
            raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
        return path


def read_runs(out_dir: Path) -> list[dict[str, Any]]:
    """The complete lines of ``runs.jsonl``, oldest first (a line cut by a crash is left out)."""
    runs = []
    try:
        lines = (Path(out_dir) / RUN_FILE).read_text(encoding="utf-8").splitlines()
    except OSError:
        return runs
    for line in lines:
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if isinstance(doc, dict) and "command" in doc:
            runs.append(doc)
    return runs
