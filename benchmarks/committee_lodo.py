"""Leave-one-dataset-out benchmark of the committee, and every voter against every member.

    python benchmarks/committee_lodo.py ../shared/data/casia1 ../shared/data/cocoglide \
        [--cache /tmp/imlf-committee-cache] [--csv lodo.csv]

Each member runs once per image; its map (float16) and applicability are cached under ``--cache``
so that re-runs only fuse. Configurations:

* ``all``: ``imlf calibrate`` on half 0 of every dataset (equal weights), tested on half 1 of each;
* ``lodo``: for each dataset D, calibrated on half 0 of every other dataset, tested on half 1 of D
  (data like none the committee was calibrated on).

Test rows: each dataset's half 1, plus CASIA's copy-move subset (``Sp_S`` images) when present.
Per image, averaged over tampered images: pixel F1 at 0.5 (IMDL-BenCo), F1 at the best threshold
(optimistic), pixel AUC; image AUC where the test set has authentic images. Members are scored on
their own maps (a member that does not apply gives an empty map, as `imlf detect` writes it).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from imlforensics.committee.calibrate import calibrate, split_half
from imlforensics.committee.detector import Committee
from imlforensics.detectors.registry import load_detector
from imlforensics.errors import ImlfError, NotApplicable
from imlforensics.evaluation.datasets import Sample, load_dataset, read_mask
from imlforensics.evaluation.metrics import auc, pixel_scores

MEMBERS = ["ela", "noise", "jpeg-grid", "dq", "copymove"]
VOTERS = ["prior", "equal", "learned"]


def save_npz(f: Path, arrays: dict[str, np.ndarray], meta) -> None:
    """One image's cached maps (float16) and their metadata (JSON), written whole or not at all."""
    tmp = f.with_name(f.name + ".tmp.npz")
    np.savez_compressed(tmp, **arrays, meta=np.array(json.dumps(meta)))
    tmp.rename(f)


def extra_maps(ds: str, samples: list[Sample], cache: Path, name: str, out: dict[str, dict],
               cached_only: bool = False) -> None:
    """Add member ``name`` (e.g. ``noiseprint++``) to ``out``, cached in a file of its own per image."""
    from imlforensics.io.image import load_image

    folder = cache / ds
    det = None
    for s in samples:
        if str(s.image) not in out:
            continue
        f = folder / (Path(s.image).name + f".{name}.npz")
        if not f.exists() and cached_only:
            continue
        if not f.exists():
            det = det or load_detector(name)
            arrays, meta = {}, None
            try:
                p = det.predict(load_image(s.image))
                arrays["map"] = p.heatmap.astype(np.float16)
                meta = {"score": p.score, "applicable": p.applicable}
            except NotApplicable:
                pass
            except ImlfError:
                continue
            save_npz(f, arrays, meta)
        with np.load(f) as z:
            meta = json.loads(str(z["meta"]))
            if "map" in z.files:
                out[str(s.image)]["maps"][name] = z["map"]
            out[str(s.image)]["applicable"][name] = bool(meta and meta["applicable"])


def member_maps(ds: str, samples: list[Sample], cache: Path, cached_only: bool = False) -> dict[str, dict]:
    """image path -> {"maps": {member: map or None}, "applicable": {...}} (computed once, cached)."""
    from imlforensics.io.image import load_image

    folder = cache / ds
    folder.mkdir(parents=True, exist_ok=True)
    dets = None
    out = {}
    for s in samples:
        f = folder / (Path(s.image).name + ".npz")
        if not f.exists() and cached_only:
            continue
        if not f.exists():
            dets = dets or {n: load_detector(n) for n in MEMBERS}
            arrays, meta = {}, {}
            try:
                img = load_image(s.image)
            except ImlfError:
                continue
            for n, det in dets.items():
                try:
                    p = det.predict(img)
                except NotApplicable:
                    meta[n] = None
                    continue
                arrays[n] = p.heatmap.astype(np.float16)
                meta[n] = {"score": p.score, "applicable": p.applicable}
            save_npz(f, arrays, meta)
        with np.load(f) as z:
            meta = json.loads(str(z["meta"]))
            out[str(s.image)] = {"maps": {n: z[n] for n in MEMBERS if n in z.files},  # float16 until used
                                 "applicable": {n: bool(meta[n] and meta[n]["applicable"]) for n in MEMBERS}}
    return out


def runner(cached: dict[str, dict], name: str):
    def run(path):
        c = cached[str(path)]
        if name not in c["maps"]:
            raise NotApplicable(f"{name} did not apply")
        return c["maps"][name].astype(np.float32), c["applicable"][name]
    return run


def score(rows: list[tuple[np.ndarray, float, Sample]]) -> dict[str, float]:
    f05, fb, au, lab, sc, flagged = [], [], [], [], [], []
    for heat, img_score, s in rows:
        gt = np.zeros(heat.shape, bool) if s.mask is None else read_mask(s.mask, heat.shape)
        lab.append(bool(gt.any()))
        sc.append(img_score)
        if not gt.any():
            flagged.append(float((heat >= 0.5).mean()))
        if gt.any() and not gt.all():
            ps = pixel_scores(heat, gt, 0.5)
            f05.append(ps.f1)
            fb.append(ps.f1_best)
            au.append(ps.auc)
    out = {"n": len(f05), "f1_fixed": float(np.mean(f05)), "f1_best": float(np.mean(fb)), "auc": float(np.mean(au))}
    if any(lab) and not all(lab):
        out["image_auc"] = float(auc(np.array(sc), np.array(lab)))
        out["authentic_flagged"] = float(np.mean(flagged))
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("datasets", nargs="+", type=Path)
    ap.add_argument("--cache", type=Path, default=Path("/tmp/imlf-committee-cache"))
    ap.add_argument("--csv", type=Path)
    ap.add_argument("--configs", default="all,lodo")
    ap.add_argument("--negatives", action="append", default=[], metavar="DATASET=LIST",
                    help="Authentic images (a JSON list) to add to a dataset, e.g. CocoGlide's originals.")
    ap.add_argument("--cached-only", action="store_true", help="Skip images whose maps are not cached yet.")
    ap.add_argument("--save-priors", type=Path, help="Also write the 'all' configuration's priors file here.")
    ap.add_argument("--extra", action="append", default=[], metavar="MEMBER",
                    help="Also try the committee with this member added (e.g. noiseprint++); every table then "
                         "shows the committee with and without it.")
    ap.add_argument("--every", type=int, default=1, metavar="K",
                    help="Use every K-th image of each dataset only (a subsample, for slow members).")
    args = ap.parse_args(argv)
    data = {}
    for root in args.datasets:
        name = root.name
        samples = load_dataset(root)[:: args.every]
        cached = member_maps(name, samples, args.cache, args.cached_only)
        for m in args.extra:
            extra_maps(name, samples, args.cache, m, cached, args.cached_only)
        for spec in args.negatives:
            target, _, listing = spec.partition("=")
            if target == name:
                extra = load_dataset(Path(listing))[:: args.every]
                more = member_maps(Path(listing).stem, extra, args.cache, args.cached_only)
                for m in args.extra:
                    extra_maps(Path(listing).stem, extra, args.cache, m, more, args.cached_only)
                cached.update(more)
                samples = samples + extra
        samples = [s for s in samples if str(s.image) in cached]
        data[name] = (samples, cached)
    cached_all = {k: v for _, c in data.values() for k, v in c.items()}
    configs = []
    if "all" in args.configs:
        configs.append(("all", list(data), list(data)))
    if "lodo" in args.configs and len(data) > 1:
        configs += [(f"lodo: without {d}", [o for o in data if o != d], [d]) for d in data]
    results = []
    member_sets = [("", MEMBERS)] + ([(" + " + " + ".join(args.extra), MEMBERS + args.extra)] if args.extra else [])
    for label, fit_on, test_on in configs:
        sets = [(d, split_half(data[d][0], 0)) for d in fit_on]
        committees, defaults = {}, {}
        for suffix, names in member_sets:
            res = calibrate(sets, {n: runner(cached_all, n) for n in names})
            doc = {"format": "imlforensics-priors", "members": res["members"], "fusion": res["fusion"]}
            if label == "all" and args.save_priors and not suffix:
                save_priors(args, sets, res)
            tmp = args.cache / "priors-bench.json"
            tmp.write_text(json.dumps(doc))
            for v in VOTERS:
                committees[(suffix, v)] = Committee(priors=str(tmp), voter=v)
            defaults[suffix] = res["fusion"]["default_voter"]
        for d in test_on:
            tests = [(d, split_half(data[d][0], 1))]
            if d.startswith("casia"):
                tests.append((f"{d} copy-move (Sp_S)", [s for s in tests[0][1] if "Sp_S" in Path(s.image).name
                                                        or s.mask is None]))
            for tname, samples in tests:
                for n in MEMBERS + args.extra:
                    rows = []
                    for s in samples:
                        c = cached_all[str(s.image)]
                        m = c["maps"].get(n)
                        shape = next(iter(c["maps"].values())).shape
                        m = m.astype(np.float32) if m is not None else np.zeros(shape, np.float32)
                        rows.append((m, float(m.max()), s))
                    results.append({"config": label, "test": tname, "who": n, **score(rows)})
                for (suffix, v), com in committees.items():
                    rows = []
                    for s in samples:
                        c = cached_all[str(s.image)]
                        shape = next(iter(c["maps"].values())).shape
                        raw = {n: m.astype(np.float32) for n, m in c["maps"].items()
                               if c["applicable"].get(n) and n in com.cal}
                        fused, sc = com.combine(raw, shape)
                        rows.append((fused.heatmap, sc, s))
                    who = f"committee{suffix} {v}" + (" (default)" if v == defaults[suffix] else "")
                    results.append({"config": label, "test": tname, "who": who, **score(rows)})
                print_table([r for r in results if r["config"] == label and r["test"] == tname], label, tname)
    if args.csv:
        keys = ["config", "test", "who", "n", "f1_fixed", "f1_best", "auc", "image_auc", "authentic_flagged"]
        lines = [",".join(keys)] + [",".join(str(r.get(k, "")) for k in keys) for r in results]
        args.csv.write_text("\n".join(lines) + "\n")


def save_priors(args, sets, res) -> None:
    from imlforensics.committee.calibrate import dataset_entry, priors_document
    from imlforensics.detectors.registry import detector_class

    listed = [dataset_entry(n, next(r for r in args.datasets if r.name == n), 0, s) for n, s in sets]
    full = priors_document(", ".join(f"{e['path']} (half 0)" for e in listed), res["members"],
                           {n: detector_class(n).version for n in res["members"]}, "f1",
                           sum(len(s) for _, s in sets), fusion=res["fusion"], datasets=listed,
                           note="Measured by: python "
                                "benchmarks/committee_lodo.py " + " ".join(map(str, args.datasets))
                                + " --configs all --save-priors FILE (the same fit as imlf calibrate "
                                + " ".join(map(str, args.datasets)) + " --split-half 0)")
    args.save_priors.write_text(json.dumps(full, indent=1))


def print_table(rows: list[dict], label: str, test: str) -> None:
    print(f"\n{label} | test: {test} (half 1, {rows[0]['n']} tampered)")
    print("| who | F1 @0.5 | F1 best | pixel AUC | image AUC | authentic pixels flagged |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        ia = f"{r['image_auc']:.3f}" if "image_auc" in r else "-"
        af = f"{r['authentic_flagged']:.3f}" if "authentic_flagged" in r else "-"
        print(f"| {r['who']} | {r['f1_fixed']:.3f} | {r['f1_best']:.3f} | {r['auc']:.3f} | {ia} | {af} |")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
