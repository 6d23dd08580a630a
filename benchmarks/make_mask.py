"""``imlf make-mask`` on degraded before/after pairs, against the naive baseline, in one run.

    python benchmarks/make_mask.py [--data ../shared/data] [--per-set 100] [--jobs 2] [--seed 0]

From the pixel-aligned pairs (original, tampered, mask) of CASIA v1 and CocoGlide (``pairs.csv``),
a deterministic sample of ``--per-set`` pairs from each set goes through every degradation, with
the mask carried through each transform:

* ``clean``: the pair as it is;
* ``jpeg``: both copies recompressed independently, quality 60-95 each;
* ``rescale``: the original shrunk by 0.5-0.9;
* ``crop``: the tampered copy cropped by up to 8% on each side (the mask with it);
* ``tone``: gamma 0.7-1.4 and gain 0.85-1.15 (per channel within 5% of it) on the original;
* ``combined``: all of the above at once.

For each, the mean IoU and F1 of our mask and of the naive baseline (the original resized to the
tampered copy, absolute difference averaged over channels, fixed threshold 25 of 255) against the
carried ground truth, per set and over both sets, and the median seconds per megapixel of ours
(on these small images, fixed costs dominate). Then the speed on megapixel-sized pairs: the
project's own splice pair enlarged to 1 and 4 MP, combined degradation, one thread.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
DEGRADATIONS = ("clean", "jpeg", "rescale", "crop", "tone", "combined")
NAIVE_THRESHOLD = 25


def _jpeg(rgb: np.ndarray, quality: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=int(quality))
    return buf.getvalue()


def _decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def degrade(kind: str, original: np.ndarray, tampered: np.ndarray, mask: np.ndarray,
            rng: np.random.Generator) -> tuple[np.ndarray | bytes, np.ndarray | bytes, np.ndarray]:
    """(original, tampered, mask) after the degradation ``kind``; the mask follows the tampered copy.
    A recompressed copy is returned as its JPEG file's bytes, as a user would have it."""
    o, t, m = original, tampered, mask
    both = kind == "combined"
    if kind == "crop" or both:
        h, w = t.shape[:2]
        top, bottom = (int(rng.uniform(0, 0.08) * h) for _ in range(2))
        left, right = (int(rng.uniform(0, 0.08) * w) for _ in range(2))
        t, m = t[top:h - bottom, left:w - right], m[top:h - bottom, left:w - right]
    if kind == "rescale" or both:
        s = rng.uniform(0.5, 0.9)
        o = cv2.resize(o, (max(8, round(o.shape[1] * s)), max(8, round(o.shape[0] * s))), interpolation=cv2.INTER_AREA)
    if kind == "tone" or both:
        gamma, gain = rng.uniform(0.7, 1.4), rng.uniform(0.85, 1.15)
        gains = gain * rng.uniform(0.95, 1.05, 3)
        o = np.clip(255.0 * gains * (o / 255.0) ** gamma, 0, 255).round().astype(np.uint8)
    if kind == "jpeg" or both:
        return _jpeg(o, rng.integers(60, 96)), _jpeg(t, rng.integers(60, 96)), np.ascontiguousarray(m)
    return np.ascontiguousarray(o), np.ascontiguousarray(t), np.ascontiguousarray(m)


def naive(original: np.ndarray, tampered: np.ndarray) -> np.ndarray:
    o = cv2.resize(original, (tampered.shape[1], tampered.shape[0]), interpolation=cv2.INTER_LINEAR)
    return np.abs(o.astype(np.float32) - tampered.astype(np.float32)).mean(axis=2) >= NAIVE_THRESHOLD


def scores(pred: np.ndarray, gt: np.ndarray) -> tuple[float, float]:
    inter, union = float((pred & gt).sum()), float((pred | gt).sum())
    total = float(pred.sum() + gt.sum())
    return (inter / union if union else 1.0), (2 * inter / total if total else 1.0)


def _read(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def _job(args: tuple) -> list[tuple]:
    from imlforensics.errors import ImlfError
    from imlforensics.makemask import make_mask

    name, o_path, t_path, m_path, seed, index, kinds = args
    original, tampered = _read(Path(o_path)), _read(Path(t_path))
    gt = np.asarray(Image.open(m_path).convert("L")) > 127
    if gt.shape != tampered.shape[:2]:
        gt = cv2.resize(gt.astype(np.uint8), (tampered.shape[1], tampered.shape[0]), interpolation=cv2.INTER_NEAREST) > 0
    rows = []
    folder = Path(tempfile.mkdtemp(prefix="imlf-mm-"))
    for k, kind in enumerate(DEGRADATIONS):
        if kind not in kinds:
            continue
        rng = np.random.default_rng([seed, k])
        o, t, m = degrade(kind, original, tampered, gt, rng)
        # pixels as the user's files hold them: the pair's own files when untouched, JPEG files
        # when recompressed, arrays (as lossless files would give) otherwise
        o_in: object = o_path if o is original else o
        t_in: object = t_path if t is tampered else t
        for name_, data in (("o.jpg", o), ("t.jpg", t)):
            if isinstance(data, bytes):
                (folder / name_).write_bytes(data)
        if isinstance(o, bytes):
            o_in, o = str(folder / "o.jpg"), _decode(o)
        if isinstance(t, bytes):
            t_in, t = str(folder / "t.jpg"), _decode(t)
        start = time.perf_counter()
        try:
            ours = make_mask(o_in, t_in).mask
            error = ""
        except ImlfError as exc:
            ours, error = np.zeros(m.shape, bool), str(exc)
        seconds = time.perf_counter() - start
        rows.append((name, kind, *scores(ours, m), *scores(naive(o, t), m), seconds / (t.shape[0] * t.shape[1] / 1e6), error,
                     index))
    shutil.rmtree(folder, ignore_errors=True)
    return rows


def pairs(data: Path, per_set: int, seed: int) -> list[tuple[str, str, str, str, int, int]]:
    out = []
    for name in ("casia1", "cocoglide"):
        rows = list(csv.DictReader(open(data / name / "pairs.csv", newline="")))
        rng = np.random.default_rng(seed)
        pick = sorted(rng.choice(len(rows), size=min(per_set, len(rows)), replace=False))
        for i in pick:
            r = rows[i]
            out.append((name, str(data / name / r["original"]), str(data / name / r["tampered"]),
                        str(data / name / r["mask"]), int(seed * 100003 + i), int(i)))
    return out


def speed(sizes: tuple[float, ...] = (1.0, 4.0), repeats: int = 5) -> list[tuple[float, float, float]]:
    """(megapixels, median seconds, seconds per megapixel) of make-mask on the project's own splice
    pair enlarged to each size, with the combined degradation (so every stage runs), one thread."""
    from imlforensics.makemask import make_mask

    original, tampered = _read(ROOT / "examples" / "Au" / "coffee.jpg"), _read(ROOT / "examples" / "Tp" / "splice.jpg")
    gt = np.asarray(Image.open(ROOT / "examples" / "Gt" / "splice_gt.png").convert("L")) > 127
    out = []
    for mp in sizes:
        f = (mp * 1e6 / (tampered.shape[0] * tampered.shape[1])) ** 0.5
        big = lambda x: cv2.resize(x, None, fx=f, fy=f, interpolation=cv2.INTER_CUBIC)  # noqa: E731
        o, t, m = degrade("combined", big(original), big(tampered), big(gt.astype(np.uint8)) > 0, np.random.default_rng(0))
        o, t = _decode(o), _decode(t)
        make_mask(o, t)  # warm-up
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            make_mask(o, t)
            times.append(time.perf_counter() - start)
        sec = float(np.median(times))
        out.append((t.shape[0] * t.shape[1] / 1e6, sec, sec / (t.shape[0] * t.shape[1] / 1e6)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--per-set", type=int, default=100)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--failures", action="store_true", help="list the pairs where registration failed")
    ap.add_argument("--worst", type=int, default=0, help="list the N worst pairs of each degradation")
    ap.add_argument("--no-speed", dest="speed", action="store_false", help="skip the seconds-per-megapixel table")
    ap.add_argument("--kinds", default=",".join(DEGRADATIONS), help="comma-separated degradations to run")
    ap.add_argument("--csv", type=Path, help="also write every pair's scores to this CSV file")
    args = ap.parse_args()
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    kinds = [k for k in args.kinds.split(",") if k]
    work = [w + (tuple(kinds),) for w in pairs(args.data, args.per_set, args.seed)]
    with ProcessPoolExecutor(args.jobs) as pool:
        rows = [r for chunk in pool.map(_job, work, chunksize=1) for r in chunk]
    sets = sorted({r[0] for r in rows})
    if args.csv:
        with open(args.csv, "w", newline="") as fh:
            out = csv.writer(fh)
            out.writerow(["set", "index", "degradation", "iou", "f1", "iou_naive", "f1_naive", "s_per_mp", "error"])
            out.writerows((r[0], r[8], r[1], *(round(x, 4) for x in r[2:7]), r[7]) for r in rows)
    print(f"| degradation | set | pairs | IoU ours | IoU naive | F1 ours | F1 naive | failed | s/MP ours (median) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for kind in [k for k in DEGRADATIONS if k in kinds]:
        for s in sets + ["both"]:
            sel = [r for r in rows if r[1] == kind and (s == "both" or r[0] == s)]
            m = lambda i: float(np.mean([r[i] for r in sel]))  # noqa: E731
            failed = sum(1 for r in sel if r[7])
            print(f"| {kind} | {s} | {len(sel)} | {m(2):.3f} | {m(4):.3f} | {m(3):.3f} | {m(5):.3f} | {failed} | "
                  f"{np.median([r[6] for r in sel]):.2f} |")
    for kind in DEGRADATIONS if args.worst else ():
        for r in sorted((r for r in rows if r[1] == kind), key=lambda r: r[2])[: args.worst]:
            print(f"worst {kind}: {r[0]} #{r[8]} IoU {r[2]:.3f} naive {r[4]:.3f} {r[7]}", file=sys.stderr)
    if args.failures:
        for r in rows:
            if r[7]:
                print(r[0], r[1], r[7], file=sys.stderr)
    print(f"\n{args.per_set} pairs per set, seed {args.seed}; naive: resize, |difference| averaged over channels >= "
          f"{NAIVE_THRESHOLD}; one thread per process, {args.jobs} processes")
    if args.speed:
        from threadpoolctl import threadpool_limits

        import cv2 as _cv2

        _cv2.setNumThreads(1)
        with threadpool_limits(1):
            rows = speed()
        print("\n| tampered image (MP) | median s per pair | s per MP |\n|---|---|---|")
        for mp, sec, per in rows:
            print(f"| {mp:.2f} | {sec:.2f} | {per:.2f} |")
        print("\nthe project's splice pair enlarged, combined degradation, median of 5 after a warm-up, one thread, "
              "classical detail matching (no learned SR)")


if __name__ == "__main__":
    main()
