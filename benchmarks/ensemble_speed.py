"""Throughput of ``imlf ensemble`` over a directory against the sum of its members' own times.

    python benchmarks/ensemble_speed.py [--images 200] [--priors FILE]

Builds a folder of ``--images`` JPEGs from the project's examples (cropped, scaled and re-saved
so that no two are alike), runs ``imlf ensemble`` on it with ``--jobs 1`` and ``--jobs 2`` in
fresh processes, and prints wall time, the summed time the members spent on the images (from the
JSON reports), the orchestration overhead of the one-job run (wall time beyond the members' own,
process start and model loading included) and the two-job speed-up.
"""

from __future__ import annotations

import argparse
import json
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
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "in"
        folder.mkdir()
        make_folder(folder, args.images)
        wall1 = run(folder, Path(tmp) / "o1", 1, args.priors)
        wall2 = run(folder, Path(tmp) / "o2", 2, args.priors)
        members = member_seconds(Path(tmp) / "o1")
    print(f"| images | members' own time (s) | wall, --jobs 1 (s) | overhead | wall, --jobs 2 (s) | speed-up |")
    print("|---|---|---|---|---|---|")
    print(f"| {args.images} | {members:.1f} | {wall1:.1f} | {100 * (wall1 - members) / members:.1f}% | {wall2:.1f} | "
          f"{wall1 / wall2:.2f}x |")


if __name__ == "__main__":
    main()
