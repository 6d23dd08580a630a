"""Build a copy-move test set (IMDL-BenCo layout) from authentic pictures, with known masks.

We have no copy-move benchmark of our own (CASIA v1's ``Sp_S`` images are copy-moves saved as
JPEG; the copy-move sets in the field, such as COVERAGE or CASIA v2's ``Tp_S`` TIFFs, are
lossless). This script makes one from any folder of authentic pictures, the way those sets were
made: a region of irregular shape is copied and pasted elsewhere in the same picture, moved only
(half of the forgeries) or also rotated or scaled, with a hard or slightly feathered edge, and the
result saved losslessly (TIFF by default, or PNG). As in those sets, the ground truth marks the
pasted region only, not its source. Each source picture is copied beside them (``Orig/``, with a
``pairs.csv`` of original, tampered and mask), so the set also serves ``imlf make-mask``'s
benchmark (``benchmarks/make_mask.py --sets``).

    python benchmarks/make_copymove_set.py ../shared/data/casia1/Au OUT_DIR [--n 60] [--format tif]

Deterministic: one seed per picture (its name), so reruns rewrite identical files. The output
folder must be new or empty; the inputs are only read.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

SUFFIXES = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp"}


def blob(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """An irregular, connected shape filling most of an ``h`` x ``w`` box (smoothed noise, thresholded)."""
    noise = rng.standard_normal((max(h // 8, 3), max(w // 8, 3))).astype(np.float32)
    noise = cv2.resize(noise, (w, h), interpolation=cv2.INTER_CUBIC)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ell = ((yy - (h - 1) / 2) / (h / 2)) ** 2 + ((xx - (w - 1) / 2) / (w / 2)) ** 2
    field = noise * 0.6 + (1.0 - ell) * 2.0
    mask = (field > 0.8).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if n <= 1:
        return ell < 0.8
    keep = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return labels == keep


def forge(rgb: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, dict] | None:
    """One copy-move forgery of ``rgb``: the tampered picture, the target mask and what was done."""
    h, w = rgb.shape[:2]
    area = rng.uniform(0.03, 0.12) * h * w
    aspect = rng.uniform(0.6, 1.6)
    bh = int(np.clip(np.sqrt(area / aspect), 16, h // 2 - 2))
    bw = int(np.clip(np.sqrt(area * aspect), 16, w // 2 - 2))
    shape = blob(rng, bh, bw)
    kind = rng.choice(["move", "move", "rotate", "scale"])
    angle = float(rng.uniform(8, 40) * rng.choice([-1, 1])) if kind == "rotate" else 0.0
    scale = float(rng.uniform(0.75, 1.3)) if kind == "scale" else 1.0
    feather = float(rng.choice([0.0, 0.0, 1.0]))
    for _ in range(200):
        sy, sx = int(rng.integers(0, h - bh)), int(rng.integers(0, w - bw))
        # the patch, transformed about its centre, lands with its centre at (ty, tx)
        ty, tx = float(rng.uniform(bh * scale / 2 + 2, h - bh * scale / 2 - 2)), float(rng.uniform(bw * scale / 2 + 2, w - bw * scale / 2 - 2))
        m = cv2.getRotationMatrix2D(((sx + bw / 2 - 0.5), (sy + bh / 2 - 0.5)), angle, scale)
        m[0, 2] += tx - (sx + bw / 2 - 0.5)
        m[1, 2] += ty - (sy + bh / 2 - 0.5)
        src = np.zeros((h, w), np.float32)
        src[sy : sy + bh, sx : sx + bw] = shape
        tgt = cv2.warpAffine(src, m, (w, h), flags=cv2.INTER_LINEAR)
        target = tgt > 0.5
        if target.sum() < 0.6 * shape.sum() * scale**2:
            continue  # fell off the picture
        gap = cv2.dilate(src.astype(np.uint8), np.ones((9, 9), np.uint8)) > 0
        if (gap & target).any():
            continue  # overlaps its source
        moved = cv2.warpAffine(rgb, m, (w, h), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
        alpha = target.astype(np.float32)
        if feather:
            alpha = cv2.GaussianBlur(alpha, (0, 0), feather)
            alpha = np.where(target, np.maximum(alpha, 0.5), 0.0).astype(np.float32)
        out = rgb.astype(np.float32) * (1 - alpha[..., None]) + moved.astype(np.float32) * alpha[..., None]
        how = {"kind": str(kind), "angle": round(angle, 2), "scale": round(scale, 3), "feather": feather,
               "source_box": [sx, sy, bw, bh], "target_share": round(float(target.mean()), 4)}
        return np.clip(np.rint(out), 0, 255).astype(np.uint8), target, how
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("source", type=Path, help="folder of authentic pictures (or a JSON list of paths)")
    ap.add_argument("out", type=Path, help="new or empty folder for Tp/, Gt/ and dataset.json")
    ap.add_argument("--n", type=int, default=60, help="number of forgeries (every k-th picture, in name order)")
    ap.add_argument("--format", choices=["tif", "png"], default="tif")
    args = ap.parse_args(argv)

    if args.source.suffix == ".json":
        base = args.source.parent
        files = [base / p for p in json.loads(args.source.read_text())]
    else:
        files = sorted(p for p in args.source.iterdir() if p.suffix.lower() in SUFFIXES)
    if not files:
        print(f"error: no pictures in {args.source}", file=sys.stderr)
        return 2
    if args.out.exists() and any(args.out.iterdir()):
        print(f"error: {args.out} is not empty; name a new folder", file=sys.stderr)
        return 2
    step = max(len(files) // args.n, 1)
    picked = files[::step][: args.n]
    (args.out / "Tp").mkdir(parents=True, exist_ok=True)
    (args.out / "Gt").mkdir(exist_ok=True)
    (args.out / "Orig").mkdir(exist_ok=True)
    records, log, pair_rows = [], {}, []
    for path in picked:
        try:
            rgb = np.asarray(Image.open(path).convert("RGB"))
        except (OSError, ValueError) as exc:  # one line per unreadable picture; the others go on
            print(f"skipped {path.name}: not a readable picture ({exc})", file=sys.stderr)
            continue
        rng = np.random.default_rng(zlib.crc32(path.name.encode()))
        made = forge(rgb, rng)
        if made is None:
            print(f"skipped {path.name}: no room for a copy-move", file=sys.stderr)
            continue
        fake, target, how = made
        name = f"cm_{path.stem}"
        tp = args.out / "Tp" / f"{name}.{args.format}"
        gt = args.out / "Gt" / f"{name}_gt.png"
        Image.fromarray(fake).save(tp)
        Image.fromarray(target.astype(np.uint8) * 255).save(gt)
        records.append([f"Tp/{tp.name}", f"Gt/{gt.name}"])
        shutil.copyfile(path, args.out / "Orig" / path.name)
        pair_rows.append({"original": f"Orig/{path.name}", "tampered": f"Tp/{tp.name}", "mask": f"Gt/{gt.name}"})
        log[tp.name] = {"from": path.name, **how}
    (args.out / "dataset.json").write_text(json.dumps(records, indent=1))
    (args.out / "forgeries.json").write_text(json.dumps(log, indent=1))
    with open(args.out / "pairs.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["original", "tampered", "mask"])
        w.writeheader()
        w.writerows(pair_rows)
    print(f"{len(records)} copy-move forgeries in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
