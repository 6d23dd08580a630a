"""``imlf ensemble --engine ray`` against the local engine's ``--jobs 2`` on the same two cores.

    python benchmarks/ray_speed.py [--images 200] [--repeats 3] [--cpus 2]

Builds the folder of ``benchmarks/ensemble_speed.py`` (``--images`` JPEGs made from the examples),
starts one local Ray instance with ``--cpus`` CPUs (as a cluster is started before the jobs it
serves; its start-up time is printed on its own), then runs, in fresh processes and in
alternating order, ``imlf ensemble DIR --jobs 2`` and ``imlf ensemble DIR --engine ray --address
<that instance>`` with the default classical committee. Each round checks that the two runs wrote
the same heatmaps. Prints the wall times of every round and their medians, and Ray's overhead
(median Ray wall time over median local wall time, minus one), split into its two parts: the
time until the first image's outputs are written (start-up) and the seconds per image after it
(from the JSON files' modification times).
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def make_folder(folder: Path, n: int) -> None:
    spec = importlib.util.spec_from_file_location("ensemble_speed", HERE / "ensemble_speed.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.make_folder(folder, n)


def run(folder: Path, out: Path, extra: list[str]) -> tuple[float, float, float]:
    """Wall seconds of one run, seconds until its first image's JSON was written (start-up: the
    process, Ray's connection, workers, models) and seconds per image from then on (from the
    JSON files' modification times)."""
    cmd = [sys.executable, "-m", "imlforensics", "ensemble", str(folder), "-o", str(out), *extra]
    t0, t = time.time(), time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    wall = time.perf_counter() - t
    stamps = sorted(p.stat().st_mtime for p in out.glob("img*.json"))
    return wall, stamps[0] - t0, (stamps[-1] - stamps[0]) / max(1, len(stamps) - 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cpus", type=int, default=2)
    args = ap.parse_args()
    import ray

    with tempfile.TemporaryDirectory(prefix="imlf-ray-bench-") as tmp:
        folder = Path(tmp) / "images"
        folder.mkdir()
        make_folder(folder, args.images)
        t = time.perf_counter()
        ray.init(num_cpus=args.cpus, include_dashboard=False, object_store_memory=300 * 2**20, log_to_driver=False)
        start = time.perf_counter() - t
        address = ray.get_runtime_context().gcs_address
        try:
            local, remote = [], []
            for k in range(args.repeats):
                outs = {"local": Path(tmp) / f"local{k}", "ray": Path(tmp) / f"ray{k}"}
                order = ["local", "ray"] if k % 2 == 0 else ["ray", "local"]
                for engine in order:
                    extra = ["--jobs", str(args.cpus)] if engine == "local" else ["--engine", "ray", "--address", address]
                    (local if engine == "local" else remote).append(run(folder, outs[engine], extra))
                same = all((outs["ray"] / p.name).read_bytes() == p.read_bytes() for p in outs["local"].glob("*.heatmap.png"))
                print(f"round {k + 1}: local --jobs {args.cpus} {local[-1][0]:.1f} s (first image at "
                      f"{local[-1][1]:.1f} s, then {local[-1][2]:.3f} s/image), ray {remote[-1][0]:.1f} s (first at "
                      f"{remote[-1][1]:.1f} s, then {remote[-1][2]:.3f} s/image), heatmaps identical: {same}", flush=True)
        finally:
            ray.shutdown()
    med = [[statistics.median(r[i] for r in runs) for i in range(3)] for runs in (local, remote)]
    (ml, fl, rl), (mr, fr, rr) = med
    print(f"\n| images | local --jobs {args.cpus} (s) | --engine ray (s) | Ray overhead | first image, local / ray (s) "
          f"| s/image after it, local / ray | per-image overhead | rounds, local / ray (s) | Ray instance start (s) |")
    print("|---|---|---|---|---|---|---|---|---|")
    rounds = ", ".join(f"{a[0]:.1f} / {b[0]:.1f}" for a, b in zip(local, remote))
    print(f"| {args.images} | {ml:.1f} | {mr:.1f} | {100 * (mr / ml - 1):+.1f}% | {fl:.1f} / {fr:.1f} | {rl:.3f} / {rr:.3f} "
          f"| {100 * (rr / rl - 1):+.1f}% | {rounds} | {start:.1f} |")
    print(f"\nmedians of {args.repeats} rounds; one local Ray instance with {args.cpus} CPUs, started once; "
          f"python {sys.version.split()[0]}, ray {ray.__version__}")


if __name__ == "__main__":
    main()
