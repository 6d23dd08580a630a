"""Throughput of ``imlf ensemble`` over a directory against the sum of its members' own times.

    python benchmarks/ensemble_speed.py [--images 200] [--priors FILE] [--repeats 3]

Builds a folder of ``--images`` JPEGs from the project's examples (cropped, scaled and re-saved
so that no two are alike), runs ``imlf ensemble`` on it with ``--jobs 1`` and ``--jobs 2`` in
fresh processes, and prints wall time, the members' own time, the orchestration overhead of the
one-job run (its wall time beyond the members' own: process start, model loading, decoding,
fusion, writing and the ledger) and the two-job speed-up.

The members' own time is measured on its own, in a fresh process that only runs each member's
``predict`` on the decoded images (no committee, no outputs), so nothing the ensemble run does
beside them can slow them down or hide in their time (with one BLAS thread, their fastest setting
here, as in the run); the time the members took inside the
ensemble run (from its JSON reports) is printed too. Each quantity is the median of ``--repeats``
rounds, the three measurements of a round taken back to back.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def make_folder(folder: Path, n: int) -> None:
    rng = np.random.default_rng(0)
    sources = sorted((ROOT / "examples").glob("*/*.jpg"))
    for i in range(n):
        im = Image.open(sources[i % len(sources)]).convert("RGB")
        w, h = im.size
        x0, y0 = int(rng.integers(0, w // 8)), int(rng.integers(0, h // 8))
        im = im.crop((x0, y0, w - int(rng.integers(0, w // 8)), h - int(rng.integers(0, h // 8))))
        scale = float(rng.uniform(0.6, 1.0))
        im = im.resize((max(64, int(im.width * scale)), max(64, int(im.height * scale))))
        im.save(folder / f"img{i:04d}.jpg", quality=int(rng.integers(75, 96)))


def run(folder: Path, out: Path, jobs: int, priors: str | None) -> float:
    cmd = [sys.executable, "-m", "imlforensics", "ensemble", str(folder), "-o", str(out), "--jobs", str(jobs)]
    if priors:
        cmd += ["--priors", priors]
    t = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - t


def standalone_seconds(folder: Path, priors: str | None) -> float:
    """Summed time of every member's ``predict`` alone over the folder's images (run in a fresh process)."""
    out = subprocess.run([sys.executable, __file__, "--members-only", str(folder)] + (["--priors", priors] if priors else []),
                         check=True, capture_output=True, text=True)
    return float(out.stdout.strip().splitlines()[-1])


def _members_only(folder: Path, priors: str | None) -> None:
    from imlforensics import load_detector
    from imlforensics.errors import NotApplicable
    from imlforensics.io.image import load_image

    from threadpoolctl import threadpool_limits

    committee = load_detector("committee", priors=priors)
    total = 0.0
    # as in the run: one BLAS thread (idle OpenBLAS threads spin and slow the members down)
    threadpool_limits(limits=1, user_api="blas")
    for path in sorted(folder.glob("*.jpg")):
        img = load_image(path)
        for det in committee.members.values():
            t = time.perf_counter()
            try:
                det.predict(img)
            except NotApplicable:
                pass
            total += time.perf_counter() - t
    print(total)


def member_seconds(out: Path) -> float:
    total = 0.0
    for p in out.glob("*.json"):
        rec = json.loads(p.read_text())
        total += sum(m.get("seconds", 0.0) for m in rec["details"]["members"])
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--priors", default=None)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--members-only", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.members_only:
        return _members_only(args.members_only, args.priors)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "in"
        folder.mkdir()
        make_folder(folder, args.images)
        rounds = []
        for r in range(args.repeats):
            members = standalone_seconds(folder, args.priors)
            wall1 = run(folder, Path(tmp) / f"o1-{r}", 1, args.priors)
            wall2 = run(folder, Path(tmp) / f"o2-{r}", 2, args.priors)
            rounds.append((members, member_seconds(Path(tmp) / f"o1-{r}"), wall1, wall2))
            print(f"round {r + 1}: members alone {members:.1f} s, --jobs 1 {wall1:.1f} s, --jobs 2 {wall2:.1f} s",
                  file=sys.stderr)
    members, inside, wall1, wall2 = (float(np.median(x)) for x in zip(*rounds))
    overhead = float(np.median([100 * (w1 - m) / m for m, _, w1, _ in rounds]))
    speedup = float(np.median([w1 / w2 for _, _, w1, w2 in rounds]))
    print("| images | members alone (s) | members inside the run (s) | wall, --jobs 1 (s) | overhead | "
          "wall, --jobs 2 (s) | speed-up |")
    print("|---|---|---|---|---|---|---|")
    print(f"| {args.images} | {members:.1f} | {inside:.1f} | {wall1:.1f} | {overhead:.1f}% | {wall2:.1f} | {speedup:.2f}x |")
    print(f"\nmedians of {args.repeats} rounds; overhead and speed-up are medians of the per-round ratios; "
          f"{os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
