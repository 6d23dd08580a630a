"""Cache raw pyIFD output maps for an IMDL-BenCo style dataset.

Run this with the *pyIFD* virtualenv's interpreter, not the project's:

    /work/venv-pyifd/bin/python benchmarks/_pyifd_worker.py \
        --dataset DIR --out CACHE_DIR [--algos ELA,NOI1,...] [--jobs N] [--limit N]

pyIFD (PyPI ``pyifd`` 0.0.3, https://github.com/EldritchJS/pyIFD) is a Python
port of the MATLAB image-forensics toolbox of Zampoglou, Papadopoulos and
Kompatsiaris, "Large-scale evaluation of splicing localization algorithms for
web images", Multimedia Tools and Applications 76(4), 2017.  It needs
``numpy<2`` and jpegio, which is why it lives in its own venv; see
benchmarks/PYIFD.md for the install recipe.

``DIR/dataset.json`` is a JSON list of ``[image_rel_path, mask_rel_path]``
pairs (mask is ``"Negative"`` for authentic images).  Masks are not read here.

For every requested algorithm and image this writes the algorithm's raw map,
at the algorithm's own resolution, as float32 to
``CACHE_DIR/<ALGO>/<image_stem>.npy`` (atomically: temp file + rename), and
skips images whose map already exists, so reruns are incremental.  A failure
on one image is appended to ``CACHE_DIR/<ALGO>/errors.jsonl`` and the run goes
on (failed images are retried on the next run).  ``CACHE_DIR/<ALGO>/meta.json``
says how the stored array relates to the image grid and which way it points.

Algorithms: ELA, NOI1, BLK, CAGI, CAGI_inv, ADQ1, ADQ2.  CAGI and CAGI_inv are
the two maps of one pyIFD call; asking for both computes it once.

Deviations from calling pyIFD naively (none change its numbers):
  * pyIFD's ELA writes ``tmpResave.jpg`` into the current directory, so each
    worker process works in its own temporary directory.
  * ADQ1/ADQ2 only treat a path as JPEG if it ends in lower-case ``.jpg``;
    a JPEG named ``*.JPG``/``*.jpeg`` is passed through a ``.jpg`` symlink.
  * Images are decoded with OpenCV (and JPEGs for ADQ1/ADQ2 also with PIL)
    before the call: pyIFD does not check cv2.imread for None, and jpegio
    calls exit() on some corrupt JPEGs.  A worker process that dies anyway
    is recorded as a failure for the task it was running.
  * numpy RuntimeWarnings raised inside pyIFD are silenced.
"""

import os

# One BLAS/OpenMP thread per worker process: parallelism comes from --jobs.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import importlib
import json
import shutil
import tempfile
import time
import traceback
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np

PYIFD_VERSION = "0.0.3"

# ---------------------------------------------------------------------------
# How each algorithm is called and what its output means.
# "call" names the pyIFD function; "outputs" maps our algorithm names to the
# index of the kept output in pyIFD's return value (None = bare array).
# ---------------------------------------------------------------------------
RUNNERS = {
    "ELA": {
        "call": ("pyIFD.ELA", "ELA"),
        "outputs": {"ELA": None},
        "jpeg_path": False,
    },
    "NOI1": {
        "call": ("pyIFD.NOI1", "GetNoiseMap"),
        "outputs": {"NOI1": None},
        "jpeg_path": False,
    },
    "BLK": {
        "call": ("pyIFD.BLK", "GetBlockGrid"),
        "outputs": {"BLK": 0},
        "jpeg_path": False,
    },
    "CAGI": {
        "call": ("pyIFD.CAGI", "CAGI"),
        "outputs": {"CAGI": 0, "CAGI_inv": 1},
        "jpeg_path": False,
    },
    "ADQ1": {
        "call": ("pyIFD.ADQ1", "detectDQ"),
        "outputs": {"ADQ1": 0},
        "jpeg_path": True,
    },
    "ADQ2": {
        "call": ("pyIFD.ADQ2", "getJmap"),
        "outputs": {"ADQ2": 0},
        "jpeg_path": True,
    },
}
ALGO_TO_RUNNER = {algo: name for name, r in RUNNERS.items() for algo in r["outputs"]}
DEFAULT_ALGOS = list(ALGO_TO_RUNNER)

# H, W below are the decoded image's height and width in pixels.
META = {
    "ELA": {
        "pyifd_call": "pyIFD.ELA.ELA(path)  # Quality=90, Multiplier=15, Flatten=True",
        "kept_output": "the only output (the flattened map)",
        "shape": "(H, W)",
        "grid": "one value per pixel",
        "polarity": "high = suspicious (large JPEG recompression error)",
        "values": "mean over colour channels of |I - JPEG_q90(I)| * 15; range 0..3825",
    },
    "NOI1": {
        "pyifd_call": "pyIFD.NOI1.GetNoiseMap(path)  # BlockSize=8",
        "kept_output": "the only output",
        "shape": "(((H + 15) // 2) // 8, ((W + 15) // 2) // 8), e.g. (16, 24) for 256x384",
        "grid": (
            "one value per 8x8 block of level-1 db8 diagonal wavelet coefficients, "
            "i.e. a cell of about 16x16 pixels, top-left aligned with a ~7 px wavelet "
            "shift; trailing partial blocks are dropped, so the cells span about "
            "16*rows x 16*cols pixels (may differ from H x W by a few pixels). "
            "Stretching the map to H x W is what the MATLAB toolbox's evaluation does."
        ),
        "polarity": (
            "none built in: value is the local noise sigma (median|HH|/0.6745). "
            "Spliced regions may be noisier or cleaner than the rest."
        ),
        "values": "noise standard deviation estimate, >= 0",
    },
    "BLK": {
        "pyifd_call": "pyIFD.BLK.GetBlockGrid(path)[0]",
        "kept_output": "b, the first of [b, eH, HorzMid, eV, VertMid, BlockDiff] (the OutputMap)",
        "shape": "(ceil(H / 8), ceil(W / 8))",
        "grid": (
            "one value per 8x8 pixel block, top-left aligned; a partial last "
            "row/column block is padded with ones by pyIFD"
        ),
        "polarity": "high = suspicious (block artifact grid weak or misaligned)",
        "values": "unbounded real, can be negative",
    },
    "CAGI": {
        "pyifd_call": "pyIFD.CAGI.CAGI(path)[0]",
        "kept_output": "Result_CAGI, the first of [Result_CAGI, Result_Inv_CAGI]",
        "shape": "(H, W)",
        "grid": (
            "pixel resolution, but piecewise constant over cells of 8*sgrid pixels "
            "(sgrid=2 -> 16x16 if H*W < 640*480, else sgrid=3 -> 24x24), top-left "
            "aligned, with floor((floor(H/8)-1)/sgrid) x floor((floor(W/8)-1)/sgrid) "
            "cells; the bottom/right remainder repeats the last cell"
        ),
        "polarity": "high = suspicious (JPEG grid inconsistency)",
        "values": "smoothed score, roughly 0..1",
    },
    "CAGI_inv": {
        "pyifd_call": "pyIFD.CAGI.CAGI(path)[1]",
        "kept_output": "Result_Inv_CAGI, the second of [Result_CAGI, Result_Inv_CAGI]",
        "shape": "(H, W)",
        "grid": "same as CAGI",
        "polarity": (
            "low = suspicious by construction (scores above the image mean are "
            "clamped down to it, so only low values carry information); the "
            "inverse map targets splices whose grid is stronger than the host's"
        ),
        "values": "smoothed score, roughly 0..1",
    },
    "ADQ1": {
        "pyifd_call": "pyIFD.ADQ1.detectDQ(path)[0]  # path must end in '.jpg'",
        "kept_output": "OutputMap, the first of [OutputMap, Feature_Vector, coeffArray]",
        "shape": "(floor(H / 8), floor(W / 8))",
        "grid": "one value per 8x8 JPEG block, top-left aligned (partial blocks dropped)",
        "polarity": "high = suspicious (posterior probability the block is tampered)",
        "values": "probability in [0, 1]; exactly 0.5 everywhere if no double quantization is found",
    },
    "ADQ2": {
        "pyifd_call": "pyIFD.ADQ2.getJmap(path)[0]  # path must end in '.jpg'; ncomp=1, c1=1, c2=15",
        "kept_output": "maskTampered, the first of [maskTampered, q1table, alphatable]",
        "shape": "(ceil(H / 8), ceil(W / 8))  (luma DCT block count from jpegio)",
        "grid": "one value per 8x8 JPEG block, top-left aligned",
        "polarity": "high = suspicious (probability the block is tampered)",
        "values": (
            "probability in [0, 1] after a 5x5 median filter; the filter pads with "
            "zeros, so the 2-block border is biased towards 0"
        ),
    },
}

_WORKDIR = None
_INFLIGHT = None


def _init_worker(scratch):
    """Give each process its own scratch dir (pyIFD's ELA writes into cwd)."""
    global _WORKDIR, _INFLIGHT
    _WORKDIR = tempfile.mkdtemp(prefix="worker_", dir=scratch)
    _INFLIGHT = os.path.join(scratch, "inflight", str(os.getpid()))
    os.chdir(_WORKDIR)
    warnings.simplefilter("ignore", RuntimeWarning)


def _jpg_alias(path):
    """Return a path ending in '.jpg' for a JPEG (pyIFD's ADQ tests the suffix)."""
    if path.endswith(".jpg") or Path(path).suffix.lower() not in (".jpg", ".jpeg", ".jpe"):
        return path
    alias = os.path.join(_WORKDIR, "alias_%d.jpg" % os.getpid())
    if os.path.lexists(alias):
        os.remove(alias)
    os.symlink(path, alias)
    return alias


def _check_readable(path, jpeg_decoder):
    """Fail early on images pyIFD would silently mangle or that kill the process.

    pyIFD reads pixels with cv2.imread and does not check for None; jpegio
    (ADQ1/ADQ2) calls exit() on some corrupt JPEGs, so fully decode those
    with PIL first, which raises on truncated data instead.
    """
    import cv2

    im = cv2.imread(path)
    if im is None or im.ndim != 3:
        raise ValueError("OpenCV cannot decode the image")
    if jpeg_decoder:
        from PIL import Image

        with Image.open(path) as pil:
            pil.load()


def _save_atomic(array, dest):
    tmp = dest.with_name(".%s.%d.tmp" % (dest.stem, os.getpid()))
    with open(tmp, "wb") as fh:
        np.save(fh, array)
    os.replace(tmp, dest)


def _run_task(task):
    """Run one pyIFD function on one image and store its kept outputs.

    Returns (task, seconds, {algo: shape}, error or None).
    """
    runner, image, targets = task
    spec = RUNNERS[runner]
    with open(_INFLIGHT, "w") as fh:  # lets the parent name the task if we die
        json.dump(task, fh)
    t0 = time.time()
    try:
        _check_readable(image, spec["jpeg_path"])
        func = getattr(importlib.import_module(spec["call"][0]), spec["call"][1])
        path = _jpg_alias(image) if spec["jpeg_path"] else image
        result = func(path)
        if result is None:
            raise RuntimeError("pyIFD returned None (it prints the reason to stdout)")
        seconds = time.time() - t0
        shapes = {}
        for algo, dest in targets.items():
            idx = spec["outputs"][algo]
            out = result if idx is None or isinstance(result, np.ndarray) else result[idx]
            out = np.asarray(out, dtype=np.float32)
            if out.ndim != 2:
                raise RuntimeError("%s output has shape %s, expected 2-D" % (algo, out.shape))
            _save_atomic(out, Path(dest))
            shapes[algo] = list(out.shape)
        error = None
    except Exception as exc:  # one bad image must not stop the run
        seconds, shapes = time.time() - t0, {}
        error = "%s: %s\n%s" % (type(exc).__name__, exc, traceback.format_exc(limit=-3))
    os.remove(_INFLIGHT)
    return task, seconds, shapes, error


def _run_all(tasks, jobs):
    """Yield _run_task results for all tasks.

    If a worker process dies (jpegio calls exit() on some corrupt JPEGs), the
    tasks it was running are rerun one at a time in a fresh process; one that
    kills that process too is reported as failed and the run goes on.
    """
    pending = {(t[0], t[1]): t for t in tasks}
    scratch = tempfile.mkdtemp(prefix="pyifd_")
    inflight_dir = os.path.join(scratch, "inflight")
    os.mkdir(inflight_dir)
    try:
        yield from _run_pending(pending, jobs, scratch, inflight_dir)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _run_pending(pending, jobs, scratch, inflight_dir):
    suspects = []
    while pending:
        alone = bool(suspects)
        batch = [suspects.pop()] if alone else list(pending.values())
        broken = False
        with ProcessPoolExecutor(1 if alone else jobs, initializer=_init_worker,
                                 initargs=(scratch,)) as pool:
            try:
                for fut in as_completed([pool.submit(_run_task, t) for t in batch]):
                    task, seconds, shapes, error = fut.result()
                    del pending[(task[0], task[1])]
                    yield task, seconds, shapes, error
            except BrokenProcessPool:
                broken = True
        died = []
        for name in os.listdir(inflight_dir):
            with open(os.path.join(inflight_dir, name)) as fh:
                died.append(tuple(json.load(fh)))
            os.remove(os.path.join(inflight_dir, name))
        if broken and not died:
            raise SystemExit("worker pool broke with no task in flight")
        for task in died:
            if (task[0], task[1]) not in pending:
                continue
            if alone:
                del pending[(task[0], task[1])]
                yield task, 0.0, {}, "worker process died (pyIFD or jpegio exited or crashed)"
            else:
                suspects.append(task)


def _write_json_atomic(obj, dest):
    tmp = dest.with_name("." + dest.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    os.replace(tmp, dest)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", required=True, type=Path, help="folder holding dataset.json")
    ap.add_argument("--out", required=True, type=Path, help="cache folder")
    ap.add_argument("--algos", default=",".join(DEFAULT_ALGOS),
                    help="comma-separated subset of %s" % ",".join(DEFAULT_ALGOS))
    ap.add_argument("--jobs", type=int, default=1, help="worker processes")
    ap.add_argument("--limit", type=int, default=None, help="only the first N images")
    args = ap.parse_args(argv)

    algos = [a.strip() for a in args.algos.split(",") if a.strip()]
    unknown = [a for a in algos if a not in ALGO_TO_RUNNER]
    if unknown:
        ap.error("unknown algorithm(s): %s" % ", ".join(unknown))

    entries = json.loads((args.dataset / "dataset.json").read_text())
    if args.limit is not None:
        entries = entries[: args.limit]
    images = [str((args.dataset / rel).resolve()) for rel, _mask in entries]
    stems = [Path(p).stem for p in images]
    if len(set(stems)) != len(stems):
        raise SystemExit("image stems are not unique; cache file names would collide")

    for algo in algos:
        (args.out / algo).mkdir(parents=True, exist_ok=True)

    # Group by pyIFD call so CAGI/CAGI_inv share one computation.
    tasks = []
    for runner in RUNNERS:
        wanted = [a for a in algos if ALGO_TO_RUNNER[a] == runner]
        for image, stem in zip(images, stems):
            targets = {a: str(args.out / a / (stem + ".npy")) for a in wanted}
            targets = {a: d for a, d in targets.items() if not os.path.exists(d)}
            if targets:
                tasks.append((runner, image, targets))
    print("%d images, %d task(s) to run, %d job(s)" % (len(images), len(tasks), args.jobs), flush=True)

    times = {a: [] for a in algos}
    failures = {a: 0 for a in algos}
    shapes = {a: {} for a in algos}
    done = 0
    for (runner, image, targets), seconds, out_shapes, error in _run_all(tasks, max(1, args.jobs)):
        done += 1
        algos_here = list(targets)  # the outputs this task had to produce
        stem = Path(image).stem
        if error is None:
            for a in algos_here:
                times[a].append(seconds)
                key = "x".join(map(str, out_shapes[a]))
                shapes[a][key] = shapes[a].get(key, 0) + 1
            status = "ok"
        else:
            for a in algos_here:
                failures[a] += 1
                record = {"image": image, "algo": a, "error": error,
                          "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
                with open(args.out / a / "errors.jsonl", "a") as fh:
                    fh.write(json.dumps(record) + "\n")
            status = "FAILED " + error.splitlines()[0]
        print("[%d/%d] %s %s %.2fs %s" % (done, len(tasks), runner, stem, seconds, status), flush=True)

    for algo in algos:
        meta_path = args.out / algo / "meta.json"
        meta = dict(META[algo], algo=algo, pyifd_version=PYIFD_VERSION,
                    dtype="float32", file_pattern="<image_stem>.npy")
        if times[algo] or failures[algo]:
            t = np.array(times[algo]) if times[algo] else np.zeros(0)
            meta["last_run"] = {
                "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "dataset": str(args.dataset.resolve()),
                "jobs": args.jobs,
                "computed": len(times[algo]),
                "failed": failures[algo],
                "seconds_per_image_mean": round(float(t.mean()), 3) if t.size else None,
                "seconds_per_image_median": round(float(np.median(t)), 3) if t.size else None,
                "stored_shapes": shapes[algo],
            }
        elif meta_path.exists():  # nothing new: keep the previous run's record
            meta["last_run"] = json.loads(meta_path.read_text()).get("last_run")
        _write_json_atomic(meta, meta_path)
        n_maps = sum(1 for _ in (args.out / algo).glob("*.npy"))
        print("%-8s computed %4d  failed %3d  maps in cache %4d"
              % (algo, len(times[algo]), failures[algo], n_maps), flush=True)


if __name__ == "__main__":
    main()
