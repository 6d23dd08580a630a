"""Our classical detectors side by side with pyIFD's versions of the same algorithms.

    python benchmarks/compare_pyifd.py [--dataset ../shared/data/casia1] [--jobs 2]
        [--pyifd-python /path/to/pyifd-venv/bin/python] [--cache DIR] [--skip-ours]

pyIFD (PyPI ``pyifd``, a Python port of the MATLAB image-forensics toolbox of Zampoglou et al.)
needs ``numpy<2``, so it runs in its own virtual environment (benchmarks/PYIFD.md says how to make
it): this script calls ``benchmarks/_pyifd_worker.py`` with that interpreter to cache pyIFD's raw
maps (incrementally), then scores them and our detectors with the same metrics in this process.

How pyIFD's maps are scored:
* each map is resized (bilinear) to the image size, as the toolbox's own evaluation does;
* best-threshold F1 and AUC do not depend on the map's scale; the fixed-threshold F1 uses the map
  min-max normalised per image (labelled so), since pyIFD's maps are not probabilities;
* maps without a built-in polarity (NOI1: a noise level) and CAGI's two maps are scored both ways
  up and the better direction over the whole dataset is kept (labelled), which favours pyIFD;
* the image score is the map's maximum.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from functools import partial
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PAIRS = [  # (ours, pyIFD algorithms it must match)
    ("ela", ["ELA"]),
    ("noise", ["NOI1"]),
    ("jpeg-grid", ["BLK", "CAGI"]),
    ("dq", ["ADQ1", "ADQ2"]),
]
PYIFD_ALGOS = ["ELA", "NOI1", "BLK", "CAGI", "CAGI_inv", "ADQ1", "ADQ2"]
# maps scored both ways up (the better direction over the dataset is kept)
VARIANTS = {"NOI1": [("NOI1", False), ("NOI1", True)], "CAGI": [("CAGI", False), ("CAGI_inv", True)]}


def run_pyifd(python: str, dataset: Path, cache: Path, jobs: int) -> None:
    cmd = [python, str(ROOT / "benchmarks" / "_pyifd_worker.py"), "--dataset", str(dataset),
           "--out", str(cache), "--algos", ",".join(PYIFD_ALGOS), "--jobs", str(jobs)]
    print("running pyIFD (cached maps are reused):", " ".join(cmd), file=sys.stderr)
    subprocess.run(cmd, check=True)


def score_pyifd(algo: str, samples, cache: Path, invert: bool):
    from imlforensics.evaluation.datasets import read_mask
    from imlforensics.evaluation.evaluate import ImageRecord
    from imlforensics.evaluation.metrics import pixel_scores

    records = []
    for s in samples:
        rec = ImageRecord(image=str(s.image), authentic=s.authentic)
        path = cache / algo / f"{s.image.stem}.npy"
        if not path.is_file():
            rec.error = "pyIFD gave no map"
            records.append(rec)
            continue
        raw = np.nan_to_num(np.load(path).astype(np.float32))
        if invert:
            raw = -raw
        h, w = _size(s.image)
        heat = cv2.resize(raw, (w, h), interpolation=cv2.INTER_LINEAR)
        lo, hi = float(heat.min()), float(heat.max())
        norm = (heat - lo) / (hi - lo) if hi > lo else np.zeros_like(heat)
        gt = np.zeros((h, w), bool) if s.mask is None else read_mask(s.mask, (h, w))
        ps = pixel_scores(heat, gt, threshold=0.5)
        fixed = pixel_scores(norm, gt, threshold=0.5)
        rec.score = hi
        rec.f1, rec.iou, rec.flagged = fixed.f1, fixed.iou, fixed.flagged
        rec.f1_best, rec.iou_best, rec.auc = ps.f1_best, ps.iou_best, ps.auc
        records.append(rec)
    return records


def _size(path: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as im:
        return im.height, im.width


def row(name: str, s: dict) -> str:
    px, img = s["pixel"], s.get("image", {})
    f = lambda x: "-" if x is None else f"{x:.3f}"  # noqa: E731
    flagged = s.get("authentic_pixels", {}).get("flagged_fixed")
    return (f"| {name} | {f(px['f1_fixed'])} | {f(px['iou_fixed'])} | {f(px['f1_best'])} | {f(px['iou_best'])} | "
            f"{f(px['auc'])} | {f(img.get('auc'))} | {f(img.get('balanced_accuracy'))} | {f(flagged)} | "
            f"{s['failed']} |")


HEADER = ("| detector | F1 fixed | IoU fixed | F1 best | IoU best | pixel AUC | image AUC | image bal. acc. | "
          "authentic flagged | failed |\n|---|---|---|---|---|---|---|---|---|---|")


def main() -> None:
    from imlforensics.evaluation.datasets import load_dataset
    from imlforensics.evaluation.evaluate import DetectorSource, run, summarize

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", type=Path, default=ROOT.parent / "shared" / "data" / "casia1")
    ap.add_argument("--pyifd-python", default=os.environ.get("PYIFD_PYTHON", str(ROOT.parent / "venv-pyifd" / "bin" / "python")))
    ap.add_argument("--cache", type=Path, default=None, help="pyIFD map cache (default: ~/.cache/imlforensics/pyifd/<dataset>)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--ours", default="ela,noise,jpeg-grid,dq,copymove")
    ap.add_argument("--skip-ours", action="store_true", help="only score pyIFD")
    ap.add_argument("--out", type=Path, default=None, help="also write all summaries as JSON here")
    ap.add_argument("--ours-from", type=Path, default=None, help="reuse our summaries from an earlier --out file")
    ap.add_argument("--pyifd-from", type=Path, default=None,
                    help="reuse pyIFD summaries from an earlier --out file, except the algorithms in --rescore")
    ap.add_argument("--rescore", default="", help="with --pyifd-from: pyIFD algorithms to score again (e.g. CAGI)")
    args = ap.parse_args()

    cache = args.cache or Path.home() / ".cache" / "imlforensics" / "pyifd" / args.dataset.name
    samples = load_dataset(args.dataset)
    if Path(args.pyifd_python).is_file():
        run_pyifd(args.pyifd_python, args.dataset, cache, args.jobs)
    else:
        print(f"no pyIFD interpreter at {args.pyifd_python}: using cached maps in {cache} only", file=sys.stderr)

    theirs: dict[str, dict] = json.loads(args.pyifd_from.read_text())["pyifd"] if args.pyifd_from else {}
    rescore = set(filter(None, args.rescore.split(",")))
    for algo in ["ELA", "NOI1", "BLK", "CAGI", "ADQ1", "ADQ2"]:
        if algo in theirs and algo not in rescore:
            continue
        scored = []
        for src, invert in VARIANTS.get(algo, [(algo, False)]):
            s = summarize(score_pyifd(src, samples, cache, invert), 0.5)
            s["variant"] = src + (" inverted" if invert else "")
            scored.append(s)
        theirs[algo] = max(scored, key=lambda v: (v["pixel"]["f1_best"] or 0) + (v["pixel"]["auc"] or 0))

    ours: dict[str, dict] = {}
    if args.ours_from:
        ours = json.loads(args.ours_from.read_text())["ours"]
    elif not args.skip_ours:
        for name in args.ours.split(","):
            print(f"running {name} ...", file=sys.stderr)
            recs = list(run(samples, partial(DetectorSource, name), 0.5, args.jobs))
            ours[name] = summarize(recs, 0.5)

    n_t = sum(not s.authentic for s in samples)
    print(f"\n## {args.dataset.name}: {n_t} tampered + {len(samples) - n_t} authentic images\n")
    print("### imlforensics (maps in [0, 1]; fixed threshold 0.5)\n")
    print(HEADER)
    for name, s in ours.items():
        print(row(name, s))
    print("\n### pyIFD 0.0.3 (fixed threshold on per-image min-max normalised maps)\n")
    print(HEADER)
    for algo, s in theirs.items():
        print(row(s["variant"], s))
    if ours:
        print("\n### Each of ours against pyIFD's version of the same algorithm (best-threshold F1, pixel AUC)\n")
        print("| ours | pyIFD | F1 best ours / theirs | AUC ours / theirs | reached |\n|---|---|---|---|---|")
        for name, algos in PAIRS:
            if name not in ours:
                continue
            o = ours[name]["pixel"]
            for algo in algos:
                t = theirs[algo]["pixel"]
                ok = o["f1_best"] >= t["f1_best"] and o["auc"] >= t["auc"]
                print(f"| {name} | {theirs[algo]['variant']} | {o['f1_best']:.3f} / {t['f1_best']:.3f} "
                      f"({o['f1_best'] / t['f1_best']:.2f}x) | {o['auc']:.3f} / {t['auc']:.3f} | {'yes' if ok else 'NO'} |")
        best_ours = max(ours.items(), key=lambda kv: kv[1]["pixel"]["f1_best"])
        best_theirs = max(theirs.items(), key=lambda kv: kv[1]["pixel"]["f1_best"])
        bo, bt = best_ours[1]["pixel"], best_theirs[1]["pixel"]
        print(f"\nbest of ours: {best_ours[0]} (F1 best {bo['f1_best']:.3f}, AUC {bo['auc']:.3f}); best of pyIFD: "
              f"{best_theirs[0]} (F1 best {bt['f1_best']:.3f}, AUC {bt['auc']:.3f}): "
              f"{'beaten' if bo['f1_best'] > bt['f1_best'] and bo['auc'] > bt['auc'] else 'NOT beaten'}")
    if args.out:
        args.out.write_text(json.dumps({"ours": ours, "pyifd": theirs}, indent=1))


if __name__ == "__main__":
    main()
