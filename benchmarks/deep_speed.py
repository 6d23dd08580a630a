"""Forward time and peak memory of our deep models against IMDL-BenCo's, on the same weights, in one run.

    python benchmarks/deep_speed.py [--models mesorch,sparsevit,iml-vit,trufor] [--threads 2] [--reps 5]
        [--device cpu|cuda] [--size N]

For Mesorch-P the reference is the authors' assembly of IMDL-BenCo's Mesorch parts (IMDL-BenCo
ships only the full model; see imlforensics/models/reference.py). Needs the test-only reference (``pip install --no-deps imdlbenco==0.1.45 && pip install fvcore``).
For each model: both implementations are built, IMDL-BenCo's random weights are copied into ours
(strict), the same input at the model's native size goes through both (batch 1, fp32), one warm-up
each, then ``--reps`` forwards alternating ours / reference; the table gives medians, their ratio
and the max abs difference of the sigmoid maps. Peak memory is measured in a fresh process per
implementation (peak resident set size during one forward, sampled every 2 ms, minus the resident
size before it: activations and workspace, not the weights).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch

from imlforensics.weights.cards import load_card
from imlforensics.models.reference import build_reference, imdlbenco_available

REFERENCE_NAME = {"mesorch": "mesorch", "mesorch-p": "mesorch-p", "sparsevit": "sparsevit", "iml-vit": "iml-vit",
                  "trufor": "trufor"}


def model_map(model, x: torch.Tensor) -> torch.Tensor:
    """Our model's probability map (TruFor: its own predict(); the others: sigmoid of the logits)."""
    return model.predict(x)["map"] if hasattr(model, "predict") else torch.sigmoid(model(x))


def reference_map(ref_predict, ref, x: torch.Tensor) -> torch.Tensor:
    out = ref_predict(ref, x)
    return out["map"] if isinstance(out, dict) else out


def model_input(name: str, size: int) -> torch.Tensor:
    """Full-resolution models (TruFor) take RGB / 256 in [0, 1); the others a normalised image."""
    g = torch.Generator().manual_seed(0)
    if load_card(name).preprocess.get("mode") == "full":
        return torch.rand(1, 3, size, size, generator=g)
    return torch.randn(1, 3, size, size, generator=g)


def build_pair(name: str, device: str, size: int | None = None):
    card = load_card(name)
    ref, ref_predict = build_reference(REFERENCE_NAME[name])
    ref.eval()
    ours = card.build().eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ours.to(device), ref.to(device), ref_predict, size or int(card.preprocess["size"])


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device: str) -> float:
    _sync(device)
    t = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t


def compare(name: str, reps: int, device: str, size: int | None = None) -> dict:
    ours, ref, ref_predict, size = build_pair(name, device, size)
    x = model_input(name, size).to(device)
    with torch.inference_mode():
        a = model_map(ours, x)
        b = reference_map(ref_predict, ref, x)
        diff = float((a - b).abs().max())
        t_ours, t_ref, cpu_ours = [], [], []
        for _ in range(reps):
            c = time.process_time()
            t_ours.append(timed(lambda: model_map(ours, x), device))
            cpu_ours.append(time.process_time() - c)
            t_ref.append(timed(lambda: ref_predict(ref, x), device))
    m_ours, m_ref = statistics.median(t_ours), statistics.median(t_ref)
    return {"model": name, "size": size, "ours_s": m_ours, "reference_s": m_ref, "speedup": m_ref / m_ours,
            "ours_cpu_s": statistics.median(cpu_ours), "max_abs_diff": diff}


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 1e6


def measure_memory(name: str, impl: str, device: str, size: int | None = None) -> dict:
    """Run in a fresh process holding only the measured model: the peak resident size (CPU, sampled
    every 2 ms by a thread) or peak allocation (CUDA) during one forward, above the level before it."""
    import threading

    size = size or int(load_card(name).preprocess["size"])
    if impl == "ours":
        model, run = load_card(name).build().eval().to(device), model_map
    else:
        model, run = build_reference(REFERENCE_NAME[name])
        model = model.eval().to(device)
    x = model_input(name, size).to(device)
    with torch.inference_mode():
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            run(model, x)
            return {"peak_mb": (torch.cuda.max_memory_allocated() - base) / 1e6}
        base, peak, done = _rss_mb(), [0.0], threading.Event()

        def sample() -> None:
            while not done.is_set():
                peak[0] = max(peak[0], _rss_mb())
                time.sleep(0.002)

        t = threading.Thread(target=sample)
        t.start()
        run(model, x)
        done.set()
        t.join()
        return {"peak_mb": max(peak[0], _rss_mb()) - base}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="mesorch,mesorch-p,sparsevit,iml-vit")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--size", type=int, default=None,
                    help="input side instead of the card's size (TruFor runs at any size; its card's 1024 is the tile)")
    ap.add_argument("--memory-of", nargs=2, metavar=("MODEL", "IMPL"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if not imdlbenco_available():
        sys.exit("IMDL-BenCo is not installed: pip install --no-deps imdlbenco==0.1.45 && pip install fvcore")
    if args.memory_of:
        print(json.dumps(measure_memory(*args.memory_of, args.device, args.size)))
        return
    rows = []
    for name in args.models.split(","):
        print(f"timing {name} ...", file=sys.stderr)
        row = compare(name, args.reps, args.device, args.size)
        for impl in ("ours", "reference"):
            r = subprocess.run([sys.executable, __file__, "--memory-of", name, impl, "--threads", str(args.threads),
                                "--device", args.device] + (["--size", str(args.size)] if args.size else []),
                               capture_output=True, text=True, check=True)
            row[f"{impl}_peak_mb"] = json.loads(r.stdout.strip().splitlines()[-1])["peak_mb"]
        rows.append(row)
    dev = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU, {args.threads} threads"
    print(f"\n{dev}, batch 1, fp32, median of {args.reps} after one warm-up, same weights, same run\n")
    print("| model | input | ours (s) | IMDL-BenCo (s) | speed-up | ours s/MP (CPU-s/MP) | max abs diff (map) | peak MB ours / ref |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        mp = r["size"] ** 2 / 1e6
        print(f"| {r['model']} | {r['size']}x{r['size']} | {r['ours_s']:.3f} | {r['reference_s']:.3f} | "
              f"{r['speedup']:.2f}x | {r['ours_s'] / mp:.1f} ({r['ours_cpu_s'] / mp:.1f}) | {r['max_abs_diff']:.1e} | "
              f"{r['ours_peak_mb']:.0f} / {r['reference_peak_mb']:.0f} |")


if __name__ == "__main__":
    main()
