"""Speed and peak memory of each detector on one CPU core, at 0.1, 1 and 12 megapixels.

    python benchmarks/speed.py [--detectors ela,noise] [--repeats 5] [--sizes 0.1,1,12]

Each (detector, size) runs in a fresh process pinned to one core with every thread pool set to
one thread. The test image is examples/Tp/splice.jpg scaled to the size (with a little noise so
that upscaling does not leave it unnaturally smooth) and saved as a quality-90 JPEG. After one
warm-up call the process resets its peak-RSS counter, then times ``repeats`` calls; the table gives
the median seconds per megapixel and the peak memory above the process's resident size before the
timed calls (image and detector already loaded).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET_S_PER_MP = {"copymove": 3.0}
DEFAULT_TARGET = 1.0


def make_image(megapixels: float, folder: Path) -> Path:
    import numpy as np
    from PIL import Image

    src = Image.open(ROOT / "examples" / "Tp" / "splice.jpg").convert("RGB")
    aspect = src.width / src.height
    h = int(round((megapixels * 1e6 / aspect) ** 0.5))
    w = int(round(h * aspect))
    big = np.asarray(src.resize((w, h), Image.LANCZOS)).astype(np.float32)
    big += np.random.default_rng(0).normal(0, 2.0, big.shape).astype(np.float32)
    path = folder / f"bench_{megapixels:g}mp.jpg"
    Image.fromarray(np.clip(big, 0, 255).astype(np.uint8)).save(path, quality=90)
    return path


CHILD = r"""
import json, os, sys, time
os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
import cv2, numpy as np
cv2.setNumThreads(1)
try:
    import torch; torch.set_num_threads(1)
except ImportError:
    pass
from imlforensics import load_detector, load_image

def rss(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) / 1024.0
name, path, repeats = sys.argv[1], sys.argv[2], int(sys.argv[3])
det = load_detector(name)
img = load_image(path)
det.predict(img)  # warm-up
base = rss("VmRSS:")
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset the peak-RSS counter
times = []
for _ in range(repeats):
    t = time.perf_counter()
    det.predict(img)
    times.append(time.perf_counter() - t)
print(json.dumps({"times": times, "peak_mb": rss("VmHWM:") - base, "mp": img.width * img.height / 1e6}))
"""


def measure(name: str, image: Path, repeats: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-c", CHILD, name, str(image), str(repeats)],
                       capture_output=True, text=True, env=env)
    if r.returncode != 0:
        return {"error": (r.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    from statistics import median

    from imlforensics import list_detectors

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--detectors", default=",".join(c.name for c in list_detectors() if c.kind == "classical"))
    ap.add_argument("--sizes", default="0.1,1,12")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    sizes = [float(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        images = {mp: make_image(mp, Path(tmp)) for mp in sizes}
        rows = []
        for name in args.detectors.split(","):
            row = {"detector": name}
            for mp in sizes:
                reps = args.repeats if mp < 5 else max(1, min(args.repeats, 3))
                m = measure(name, images[mp], reps)
                if "error" in m:
                    row[mp] = ("error: " + m["error"], None)
                else:
                    row[mp] = (median(m["times"]) / m["mp"], m["peak_mb"])
            rows.append(row)
            print(f"  measured {name}", file=sys.stderr)
    header = "| detector | " + " | ".join(f"s/MP @ {mp:g} MP | peak MB @ {mp:g} MP" for mp in sizes) + " | target s/MP | met |"
    print(header)
    print("|" + "---|" * (2 + 2 * len(sizes) + 1))
    for row in rows:
        target = TARGET_S_PER_MP.get(row["detector"], DEFAULT_TARGET)
        cells, ok = [], True
        for mp in sizes:
            spm, peak = row[mp]
            if peak is None:
                cells += [str(spm), "-"]
                ok = False
            else:
                cells += [f"{spm:.3f}", f"{peak:.0f}"]
                ok &= spm < target
        print(f"| {row['detector']} | " + " | ".join(cells) + f" | < {target:g} | {'yes' if ok else 'NO'} |")
    print(f"\nmedian of {args.repeats} runs (3 at 12 MP) after a warm-up, one core, one thread per pool; "
          f"python {sys.version.split()[0]}, {os.uname().machine}")


if __name__ == "__main__":
    main()
