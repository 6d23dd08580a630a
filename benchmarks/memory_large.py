"""Peak memory and wall time of ``imlf detect`` on a large photo, one fresh process per detector.

    python benchmarks/memory_large.py [--models noiseprint,noiseprint++,trufor] [--megapixels 12]
        [--source IMAGE] [--weights MODEL=FILE ...]

The image is ``--source`` (default: the project's spliced example) mirrored and tiled to a 4:3
frame of ``--megapixels`` and saved as a JPEG (quality 92) in a temporary folder; each detector
runs on it in a fresh ``imlf detect`` process (``--device cpu``), and the table gives that
process's peak resident set (``getrusage(RUSAGE_CHILDREN).ru_maxrss``: torch, the decoded image,
the model and every output included) and its wall time. ``--weights trufor=FILE`` runs a model
on a weights file instead of the cache (random weights cost what trained ones do).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def large_image(source: Path, megapixels: float, out: Path) -> tuple[int, int]:
    rgb = np.asarray(Image.open(source).convert("RGB"))
    w = int(round((megapixels * 1e6 * 4 / 3) ** 0.5))
    h = int(round(megapixels * 1e6 / w))
    row = np.concatenate([rgb, rgb[:, ::-1]], axis=1)
    tile = np.concatenate([row, row[::-1]], axis=0)
    reps = (-(-h // tile.shape[0]), -(-w // tile.shape[1]), 1)
    big = np.ascontiguousarray(np.tile(tile, reps)[:h, :w])
    Image.fromarray(big).save(out, quality=92)
    return h, w


def peak_of(cmd: list[str]) -> tuple[float, float, int]:
    """Run ``cmd`` in a fresh child (the only child measured by this one-shot wrapper)."""
    wrapper = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
               "rc = subprocess.run(sys.argv[1:], capture_output=True).returncode; "
               "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, rc)")
    out = subprocess.run([sys.executable, "-c", wrapper, *cmd], capture_output=True, text=True, check=True)
    wall, kb, rc = out.stdout.split()
    return float(wall), int(kb) / 1024 / 1024, int(rc)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="noiseprint,noiseprint++,trufor")
    ap.add_argument("--megapixels", type=float, default=12.0)
    ap.add_argument("--source", type=Path, default=ROOT / "examples" / "Tp" / "splice.jpg")
    ap.add_argument("--weights", action="append", default=[], metavar="MODEL=FILE")
    args = ap.parse_args()
    weights = dict(w.split("=", 1) for w in args.weights)
    with tempfile.TemporaryDirectory() as tmp:
        img = Path(tmp) / "large.jpg"
        h, w = large_image(args.source, args.megapixels, img)
        print(f"{w}x{h} ({h * w / 1e6:.1f} MP), CPU, one fresh `imlf detect` process per detector\n")
        print("| detector | peak resident (GB) | wall (s) | exit |")
        print("|---|---|---|---|")
        for name in args.models.split(","):
            cmd = [sys.executable, "-m", "imlforensics", "detect", str(img), "--model", name, "--device", "cpu",
                   "--out", str(Path(tmp) / name)]
            if name in weights:
                cmd += ["--weights", weights[name]]
            wall, gb, rc = peak_of(cmd)
            print(f"| {name} | {gb:.2f} | {wall:.0f} | {rc} |", flush=True)


if __name__ == "__main__":
    main()
