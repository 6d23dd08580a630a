"""Noiseprint and Noiseprint++ on the dev halves and the NIST demo image; speed and memory on CPU.

    python benchmarks/noiseprint.py [--shared ../shared] [--n 40] [--cache DIR] [--speed] [--memory]

Accuracy: every ``k``-th sample of CASIA v1 (``--n`` tampered, ``--n``/2 authentic), of CocoGlide
(``--n`` tampered) and NC2016_2564 (the Noiseprint demo image with a ground truth), with the
metrics of ``imlf eval`` (imlforensics.evaluation: per-image pixel F1 at 0.5 and at the best
threshold, pixel AUC, averaged over tampered images; image AUC over tampered + authentic). Each
image's residual is computed once per network (kept in ``--cache`` between runs when given) and
every map variant comes from it: ``em`` (the official EM map), ``energy`` (robust local energy),
``auto`` (the detector's default: energy on small images where the EM finds one population). The
table also gives how often the EM finds one population only (outlier share < 2% or > 98%, or < 50
valid windows).

Speed (``--speed``): seconds per megapixel of a 1 MP crop of NC2016_2564, network and post-
processing, median of 3 runs after a warm-up, ``torch.set_num_threads(2)``. Memory (``--memory``):
peak resident set of a fresh process running the whole detector on a 12 MP image (NC2016_2564
stacked on its mirror image, cut to 4000 x 3000).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

VARIANTS = ("em", "energy", "auto")


def detector(name: str, shared: Path, small_map: str = "auto"):
    from imlforensics.detectors.noiseprint import NoiseprintDetector, NoiseprintPPDetector

    if name == "noiseprint":
        return NoiseprintDetector(weights=shared / "weights" / "noiseprint", device="cpu", small_map=small_map)
    return NoiseprintPPDetector(weights=shared / "weights" / "noiseprint++" / "noiseprint++.th", device="cpu",
                                small_map=small_map)


def samples(shared: Path, n: int) -> dict[str, list]:
    from imlforensics.evaluation.datasets import Sample, load_dataset

    casia = load_dataset(shared / "data" / "casia1")
    tp = [s for s in casia if not s.authentic]
    au = [s for s in casia if s.authentic]
    coco = [s for s in load_dataset(shared / "data" / "cocoglide") if not s.authentic]
    demo = shared / "weights" / "noiseprint-demo"
    nist = [Sample(image=demo / "NC2016_2564.jpg", mask=demo / "NC2016_2564_gt.png")]
    pick = lambda xs, k: xs[:: max(1, len(xs) // k)][:k]  # noqa: E731
    return {"casia1": pick(tp, n) + pick(au, n // 2), "cocoglide": pick(coco, n), "NC2016_2564": nist}


def residual(det, img, cache: Path | None, key: str, cached_only: bool = False) -> np.ndarray | None:
    f = cache / f"{key}.npy" if cache else None
    if f is not None and f.is_file():
        return np.load(f)
    if cached_only:
        return None
    res = det.residual(img)[0]
    if f is not None:
        np.save(f, res)
    return res


def accuracy(shared: Path, n: int, cache: Path | None, cached_only: bool = False) -> None:
    from imlforensics.evaluation.evaluate import score_sample, summarize
    from imlforensics.io.image import load_image

    rows = []
    for net in ("noiseprint", "noiseprint++"):
        dets = {v: detector(net, shared, v) for v in VARIANTS}
        for ds, items in samples(shared, n).items():
            records = {v: [] for v in VARIANTS}
            one = done = 0
            for s in items:
                img = load_image(s.image)
                res = residual(dets["em"], img, cache, f"{net}__{ds}__{s.image.stem}", cached_only)
                if res is None:
                    continue
                done += 1
                for v, det in dets.items():
                    t = time.perf_counter()
                    heat, _, extras = det.localize(res, img)
                    flat = np.sort(heat, axis=None)
                    score = float(flat[-max(1, flat.size // 50):].mean())
                    seconds = time.perf_counter() - t
                    if v == "em":
                        one += bool(extras["em"]["one_population"])
                    records[v].append(score_sample(s, lambda _s, h=heat, sc=score, sec=seconds: (h, sc, sec), 0.5))
            for v in VARIANTS:
                summ = summarize(records[v], 0.5)
                px = summ["pixel"]
                if done:
                    rows.append((ds, net, v, px["n"], summ["authentic"], px["f1_fixed"], px["f1_best"], px["auc"],
                                 (summ.get("image") or {}).get("auc"), one / done))
            print(f"# {net} {ds}: {done} of {len(items)} images done", file=sys.stderr, flush=True)
    fmt = lambda x: "-" if x is None else f"{x:.3f}"  # noqa: E731
    print("| dataset | detector | map | tampered | authentic | F1 @0.5 | F1 best | pixel AUC | image AUC | EM one population |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for ds, net, v, nt, na, f1, fb, pa, ia, one in rows:
        print(f"| {ds} | {net} | {v} | {nt} | {na} | {fmt(f1)} | {fmt(fb)} | {fmt(pa)} | {fmt(ia)} | {one:.0%} |")


def speed(shared: Path) -> None:
    import torch

    from imlforensics.io.image import as_image, load_image

    torch.set_num_threads(2)
    rgb = load_image(shared / "weights" / "noiseprint-demo" / "NC2016_2564.jpg").pixels[:1000, :1000]
    img = as_image(np.ascontiguousarray(rgb))
    print("| detector | network s/MP | post-processing s/MP | total s/MP |")
    print("|---|---|---|---|")
    for net in ("noiseprint", "noiseprint++"):
        det = detector(net, shared, "em")
        det.residual(img)
        nets, posts = [], []
        for _ in range(3):
            t = time.perf_counter()
            res = det.residual(img)[0]
            t1 = time.perf_counter()
            det.localize(res, img)
            nets.append(t1 - t)
            posts.append(time.perf_counter() - t1)
        a, b = statistics.median(nets), statistics.median(posts)
        print(f"| {net} | {a:.1f} | {b:.1f} | {a + b:.1f} |")


def _memory_child(shared: str, net: str) -> None:
    import torch

    from imlforensics.io.image import as_image, load_image

    torch.set_num_threads(2)
    rgb = load_image(Path(shared) / "weights" / "noiseprint-demo" / "NC2016_2564.jpg").pixels
    rgb = np.ascontiguousarray(np.concatenate([rgb, rgb[::-1]], axis=0)[:4000, :3000])  # 12 MP
    img = as_image(rgb)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    pred = detector(net, Path(shared), "em").predict(img)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"{net} {img.height}x{img.width} peak_rss_mb={peak / 1024:.0f} before_mb={base / 1024:.0f} "
          f"seconds={time.perf_counter() - t:.0f} map={pred.extras.get('map')}")


def memory(shared: Path, nets: list[str]) -> None:
    for net in nets:
        out = subprocess.run([sys.executable, __file__, "--memory-child", net, "--shared", str(shared)],
                             capture_output=True, text=True, check=False)
        print(out.stdout.strip() or out.stderr.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared")
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--cache", type=Path, default=None, help="keep residuals here between runs")
    ap.add_argument("--cached-only", action="store_true", help="skip images whose residual is not in --cache")
    ap.add_argument("--speed", action="store_true")
    ap.add_argument("--memory", action="store_true")
    ap.add_argument("--memory-nets", default="noiseprint")
    ap.add_argument("--no-accuracy", action="store_true")
    ap.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_child:
        return _memory_child(str(args.shared), args.memory_child)
    if args.cache:
        args.cache.mkdir(parents=True, exist_ok=True)
    if not args.no_accuracy:
        accuracy(args.shared, args.n, args.cache, args.cached_only)
    if args.speed:
        speed(args.shared)
    if args.memory:
        memory(args.shared, args.memory_nets.split(","))


if __name__ == "__main__":
    main()
