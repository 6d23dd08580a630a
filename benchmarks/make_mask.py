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
import contextlib
import csv
import io
import itertools
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
            rng: np.random.Generator, truth: list | None = None) -> tuple[np.ndarray | bytes, np.ndarray | bytes, np.ndarray]:
    """(original, tampered, mask) after the degradation ``kind``; the mask follows the tampered copy.
    A recompressed copy is returned as its JPEG file's bytes, as a user would have it. ``truth``, a
    list, receives the true registration (3x3, tampered pixel -> original pixel)."""
    o, t, m = original, tampered, mask
    both = kind == "combined"
    matrix = np.eye(3)
    if kind == "crop" or both:
        h, w = t.shape[:2]
        top, bottom = (int(rng.uniform(0, 0.08) * h) for _ in range(2))
        left, right = (int(rng.uniform(0, 0.08) * w) for _ in range(2))
        t, m = t[top:h - bottom, left:w - right], m[top:h - bottom, left:w - right]
        matrix = np.array([[1, 0, left], [0, 1, top], [0, 0, 1.0]])
    if kind == "rescale" or both:
        s = rng.uniform(0.5, 0.9)
        size = (max(8, round(o.shape[1] * s)), max(8, round(o.shape[0] * s)))
        fx, fy = size[0] / o.shape[1], size[1] / o.shape[0]
        matrix = np.array([[fx, 0, 0.5 * fx - 0.5], [0, fy, 0.5 * fy - 0.5], [0, 0, 1.0]]) @ matrix
        o = cv2.resize(o, size, interpolation=cv2.INTER_AREA)
    if truth is not None:
        truth.append(matrix)
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


BOUNDARY_PX = 2  # errors within this many pixels of the true outline are the outline's (halo)
REG_TOLERANCE_PX = 1.5  # a registration off by more than this (at the frame's corners) is a failure
GLOBAL_SHARE = 0.10  # spurious change over this share of the unedited frame: a tone or noise misfit


def registration_error(found: np.ndarray | None, flip: bool, truth: np.ndarray, shape: tuple[int, int]) -> float:
    """Largest distance, in tampered pixels, between where the found and the true registration put
    the tampered frame's corners in the original (inf when none was found or it is mirrored)."""
    if found is None or flip:
        return float("inf")
    h, w = shape
    corners = np.array([[0, 0, 1], [w - 1, 0, 1], [0, h - 1, 1], [w - 1, h - 1, 1]], float)
    p, q = corners @ found.T, corners @ truth.T
    d = np.linalg.norm(p[:, :2] / p[:, 2:] - q[:, :2] / q[:, 2:], axis=1).max()
    return float(d / np.sqrt(abs(np.linalg.det(truth[:2, :2]))))


def losses(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """1 - IoU split by where the wrong pixels lie (shares of the union; they add up to 1 - IoU):
    outside or inside the true outline within BOUNDARY_PX of it (``halo_out``, ``halo_in``), or
    farther (``spurious``, ``missed``)."""
    k = np.ones((2 * BOUNDARY_PX + 1,) * 2, np.uint8)
    g8 = gt.astype(np.uint8)
    near = (cv2.dilate(g8, k) > 0) & ~(cv2.erode(g8, k, borderType=cv2.BORDER_REPLICATE) > 0)
    union = max(float((pred | gt).sum()), 1.0)
    fp, fn = pred & ~gt, gt & ~pred
    return {"halo_out": float((fp & near).sum()) / union, "halo_in": float((fn & near).sum()) / union,
            "spurious": float((fp & ~near).sum()) / union, "missed": float((fn & ~near).sum()) / union}


def reason(row: dict) -> str:
    """Why a pair lost IoU: registration, halo, tone, missed region or spurious region."""
    if row["error"] or row["reg_err_px"] > REG_TOLERANCE_PX:
        return "registration"
    if row["spurious_frame"] >= GLOBAL_SHARE:
        return "tone"
    parts = {"halo": row["halo_out"] + row["halo_in"], "missed region": row["missed"], "spurious region": row["spurious"]}
    return max(parts, key=parts.get)


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
        truth: list = []
        o, t, m = degrade(kind, original, tampered, gt, rng, truth)
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
            res = make_mask(o_in, t_in)
            ours, error, found, flip = res.mask, "", res.registration.matrix, res.registration.flip
        except ImlfError as exc:
            ours, error, found, flip = np.zeros(m.shape, bool), str(exc), None, False
        seconds = time.perf_counter() - start
        row = {"set": name, "index": index, "degradation": kind, **dict(zip(("iou", "f1"), scores(ours, m))),
               **dict(zip(("iou_naive", "f1_naive"), scores(naive(o, t), m))),
               "s_per_mp": seconds / (t.shape[0] * t.shape[1] / 1e6), "error": error,
               "reg_err_px": registration_error(found, flip, truth[0], m.shape), **losses(ours, m),
               "spurious_frame": float((ours & ~m).sum()) / max(float((~m).sum()), 1.0), "gt_share": float(m.mean())}
        row["reason"] = reason(row) if row["iou"] < 1.0 else ""
        rows.append(row)
    shutil.rmtree(folder, ignore_errors=True)
    return rows


def report(rows: list[dict], kinds: list[str], worst: int = 0) -> None:
    """The tables: IoU by degradation and set; where the IoU went (mean share of the union lost to
    each cause, and how many pairs each cause dominated); the worst pairs with their reason."""
    sets = sorted({r["set"] for r in rows})
    mean = lambda sel, k: float(np.mean([r[k] for r in sel])) if sel else float("nan")  # noqa: E731
    print("| degradation | " + " | ".join(f"{s} IoU" for s in sets) + " | IoU ours | IoU naive | F1 ours | F1 naive "
          "| failed | s/MP ours (median) |")
    print("|---" * (len(sets) + 7) + "|")
    for kind in kinds:
        sel = [r for r in rows if r["degradation"] == kind]
        per = " | ".join(f"{mean([r for r in sel if r['set'] == s], 'iou'):.3f}" for s in sets)
        print(f"| {kind} | {per} | **{mean(sel, 'iou'):.3f}** | {mean(sel, 'iou_naive'):.3f} | {mean(sel, 'f1'):.3f} | "
              f"{mean(sel, 'f1_naive'):.3f} | {sum(1 for r in sel if r['error'])} | "
              f"{np.median([r['s_per_mp'] for r in sel]):.2f} |")
    causes = ("registration", "tone", "halo", "missed region", "spurious region")
    print("\nIoU lost, by cause (mean share of the union over the pairs; in brackets, pairs where it is the main cause):\n")
    print("| degradation | set | 1 - IoU | " + " | ".join(causes) + " | halo out / in (px band) |")
    print("|---" * (len(causes) + 4) + "|")
    for kind in kinds:
        for s in sets:
            sel = [r for r in rows if r["degradation"] == kind and r["set"] == s]
            lost = {c: 0.0 for c in causes}
            for r in sel:
                part = 1.0 - r["iou"]
                if r["reason"] in ("registration", "tone"):
                    lost[r["reason"]] += part
                else:
                    lost["halo"] += r["halo_out"] + r["halo_in"]
                    lost["missed region"] += r["missed"]
                    lost["spurious region"] += r["spurious"]
            n = max(len(sel), 1)
            count = {c: sum(1 for r in sel if r["reason"] == c) for c in causes}
            print(f"| {kind} | {s} | {1 - mean(sel, 'iou'):.3f} | " + " | ".join(f"{lost[c] / n:.3f} ({count[c]})" for c in causes)
                  + f" | {mean(sel, 'halo_out'):.3f} / {mean(sel, 'halo_in'):.3f} |")
    for kind in kinds if worst else ():
        for r in sorted((r for r in rows if r["degradation"] == kind), key=lambda r: r["iou"])[:worst]:
            why = r["error"] or (f"registration off by {r['reg_err_px']:.1f} px" if r["reason"] == "registration" else "")
            print(f"worst {kind}: {r['set']} #{r['index']} IoU {r['iou']:.3f} (naive {r['iou_naive']:.3f}) {r['reason']}: "
                  f"halo {r['halo_out']:.3f}+{r['halo_in']:.3f} missed {r['missed']:.3f} spurious {r['spurious']:.3f} "
                  f"(frame {r['spurious_frame']:.3f}) reg {r['reg_err_px']:.2f}px {why}")


def read_rows(path: Path) -> list[dict]:
    """The rows a --csv file holds, numbers as numbers."""
    rows = []
    with open(path, newline="") as fh:
        records = list(csv.DictReader(fh))
    for r in records:
        rows.append({k: (v if k in ("set", "degradation", "error", "reason") else
                         int(v) if k == "index" else float(v)) for k, v in r.items()})
    return rows


def pairs(data: Path, per_set: int, seed: int,
          names: tuple[str, ...] = ("casia1", "cocoglide")) -> list[tuple[str, str, str, str, int, int]]:
    """The sampled pairs, the sets taking turns (a run stopped early holds as many of each)."""
    sets = []
    for name in names:
        out: list = []
        sets.append(out)
        rows = list(csv.DictReader(open(data / name / "pairs.csv", newline="")))
        rng = np.random.default_rng(seed)
        pick = sorted(rng.choice(len(rows), size=min(per_set, len(rows)), replace=False))
        for i in pick:
            r = rows[i]
            out.append((name, str(data / name / r["original"]), str(data / name / r["tampered"]),
                        str(data / name / r["mask"]), int(seed * 100003 + i), int(i)))
    return [p for turn in itertools.zip_longest(*sets) for p in turn if p is not None]


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
    ap.add_argument("--sets", default="casia1,cocoglide",
                    help="comma-separated sets under --data, each with a pairs.csv (original,tampered,mask), e.g. one "
                         "made by benchmarks/make_copymove_set.py")
    ap.add_argument("--per-set", type=int, default=100)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--worst", type=int, default=5, help="list the N worst pairs of each degradation, with the reason")
    ap.add_argument("--no-speed", dest="speed", action="store_false", help="skip the seconds-per-megapixel table")
    ap.add_argument("--kinds", default=",".join(DEGRADATIONS), help="comma-separated degradations to run")
    ap.add_argument("--csv", type=Path, help="also write every pair's scores to this CSV file (as they come)")
    ap.add_argument("--from-csv", type=Path, help="print the tables from such a file (of a run, finished or not)")
    args = ap.parse_args()
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    kinds = [k for k in args.kinds.split(",") if k]
    if args.from_csv:
        rows = read_rows(args.from_csv)
    else:
        sets = tuple(n for n in args.sets.split(",") if n)
        missing = [n for n in sets if not (args.data / n / "pairs.csv").is_file()]
        if missing:
            sys.exit(f"error: no {', '.join(str(args.data / n / 'pairs.csv') for n in missing)}")
        work = [w + (tuple(kinds),) for w in pairs(args.data, args.per_set, args.seed, sets)]
        rows = []
        with (open(args.csv, "w", newline="") if args.csv else contextlib.nullcontext()) as fh, \
                ProcessPoolExecutor(args.jobs) as pool:
            for chunk in pool.map(_job, work, chunksize=1):  # (in order; each pair's rows written as they come)
                rows += chunk
                if fh is not None:
                    out = csv.DictWriter(fh, fieldnames=list(chunk[0]))
                    if fh.tell() == 0:
                        out.writeheader()
                    out.writerows({k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()} for r in chunk)
                    fh.flush()
    report(rows, [k for k in DEGRADATIONS if k in kinds], args.worst)
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
