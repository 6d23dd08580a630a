"""The ``imlf`` command line: argument parsing and printing over the library API.

Exit codes: 0 all done; 1 some inputs failed; 2 usage error (bad option, unknown detector,
unusable output folder); 3 ``--fail-above S`` and some image scored above S (when nothing failed).
"""

from __future__ import annotations

import json
import os
import sys
from functools import partial
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from . import __version__
from .errors import ImlfError, UnknownDetector
from .image import DEFAULT_MAX_PIXELS

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_FLAGGED = 0, 1, 2, 3

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode="rich",
    help="Find where an image was manipulated. Run [bold]imlf COMMAND --help[/] for details.",
)
err = Console(stderr=True, highlight=False)
out = Console(highlight=False)


def fail(message: str, code: int = EXIT_USAGE) -> typer.Exit:
    err.print(f"[red]imlf: error:[/] {message}", markup=True, soft_wrap=True)
    return typer.Exit(code)


def warn_line(message: str) -> None:
    err.print(f"[yellow]imlf:[/] {_escape(message)}", soft_wrap=True)


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def parse_count(text: str) -> int:
    """``150000000``, ``150M``, ``1.5e8`` or ``2G`` as a whole number."""
    t = text.strip().upper()
    scale = {"K": 10**3, "M": 10**6, "G": 10**9}.get(t[-1:], 1)
    if scale != 1:
        t = t[:-1]
    try:
        value = float(t) * scale
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a number (e.g. 150M)") from None
    if value < 1:
        raise typer.BadParameter("must be at least 1")
    return int(value)


def parse_options(items: list[str]) -> dict[str, Any]:
    """``key=value`` pairs; values read as JSON when they parse (numbers, true/false), else text."""
    options: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise typer.BadParameter(f"{item!r}: expected KEY=VALUE")
        key, value = item.split("=", 1)
        try:
            options[key.strip().replace("-", "_")] = json.loads(value)
        except ValueError:
            options[key.strip().replace("-", "_")] = value
    return options


def detector_options(name: str, items: list[str], weights: Optional[Path] = None, device: str = "auto",
                     tile: bool = False, half: bool = False) -> dict[str, Any]:
    """Options for ``load_detector``: ``-O KEY=VALUE`` items plus the deep-model flags.

    The deep flags are passed to deep models only; ``--weights`` with a classical detector is an error,
    the other flags are ignored for classical detectors (they have nothing to place on a device).
    """
    from .registry import detector_class

    options = parse_options(items)
    if detector_class(name).kind == "deep":
        options.setdefault("device", device)
        if weights is not None:
            options["weights"] = str(weights)
        if tile:
            options["tile"] = True
        if half:
            options["half"] = True
    elif weights is not None:
        raise UnknownDetector(f"--weights is for deep models; {name} needs none")
    return options


def _version(value: bool) -> None:
    if value:
        out.print(f"imlf {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version."),
) -> None:
    """imlforensics: image manipulation localization."""


@app.command()
def detect(
    images: list[str] = typer.Argument(..., help="Image files, folders or glob patterns.", show_default=False),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Detector name (see `imlf models`); default: dq for JPEG files, ela for others."),
    out_dir: Path = typer.Option(Path("imlf-out"), "--out", "-o", help="Output folder (created if needed)."),
    json_lines: bool = typer.Option(False, "--json", help="Print one JSON object per image on stdout, nothing else."),
    threshold: float = typer.Option(0.5, min=0.0, max=1.0, help="Heat at or above which a pixel goes into the mask."),
    fail_above: Optional[float] = typer.Option(None, min=0.0, max=1.0, help="Exit with code 3 when an image scores above this."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace outputs that already exist."),
    save_raw: bool = typer.Option(False, "--save-raw", help="Also write the float heatmap as <stem>.heatmap.npy."),
    max_pixels: str = typer.Option(str(DEFAULT_MAX_PIXELS), help="Refuse images with more pixels than this (e.g. 150M)."),
    recursive: bool = typer.Option(False, "--recursive", "-r", help="Descend into sub-folders of folder arguments."),
    option: list[str] = typer.Option([], "--option", "-O", help="Detector option KEY=VALUE (repeatable)."),
    weights: Optional[Path] = typer.Option(None, "--weights", help="Deep models: use this weights file (safetensors or the authors' .pth) instead of the cache."),
    device: str = typer.Option("auto", "--device", help="Deep models: auto, cpu, cuda or mps."),
    tile: bool = typer.Option(False, "--tile", help="Deep models: slide windows of the model's input size over the full-resolution image instead of resizing it."),
    half: bool = typer.Option(False, "--half", help="Deep models: bf16 autocast (faster on GPUs; maps differ slightly, see README)."),
) -> None:
    """Localize tampering in images: heatmap, mask, overlay and a JSON report per image."""
    from .inputs import expand_inputs, output_stems
    from .outputs import check_writable_dir
    from .pipeline import detect_stream
    from .registry import DEFAULT_DETECTOR, DEFAULT_FALLBACK, load_detector

    limit = parse_count(max_pixels)
    try:
        name = model or DEFAULT_DETECTOR
        detector = load_detector(name, **detector_options(name, option, weights, device, tile, half))
        fallback = None if model else load_detector(DEFAULT_FALLBACK)
        check_writable_dir(out_dir)
    except ImlfError as exc:
        raise fail(str(exc))
    files, problems = expand_inputs(images, recursive)
    for arg, reason in problems:
        _report_failure(arg, reason, json_lines)
    stems = output_stems(files)
    protected = frozenset(p.resolve() for p in files)
    records, failed = [], len(problems)
    with _progress(len(files), json_lines) as advance:
        items = [(path, stems[path]) for path in files]
        for path, rec, exc in detect_stream(detector, items, out_dir, threshold, overwrite, save_raw, limit,
                                            protected, fallback):
            if exc is None:
                records.append(rec)
                if json_lines:
                    sys.stdout.write(json.dumps(rec, ensure_ascii=False) + "\n")
                    sys.stdout.flush()
            elif isinstance(exc, ImlfError):
                failed += 1
                _report_failure(str(path), str(exc), json_lines)
            elif isinstance(exc, MemoryError):
                failed += 1
                _report_failure(str(path), "out of memory (try a smaller --max-pixels or another detector)", json_lines)
            else:  # a bug: say so in one line; IMLF_DEBUG=1 shows the traceback
                if os.environ.get("IMLF_DEBUG"):
                    raise exc
                failed += 1
                _report_failure(str(path), f"internal error in {detector.name}: {type(exc).__name__}: {exc} "
                                "(please report; IMLF_DEBUG=1 shows details)", json_lines)
            advance()
    if not json_lines and records:
        _detect_table(records, threshold, out_dir)
    if failed:
        raise typer.Exit(EXIT_FAILED)
    if fail_above is not None and any(r["score"] > fail_above for r in records):
        raise typer.Exit(EXIT_FLAGGED)


def _report_failure(name: str, reason: str, json_lines: bool) -> None:
    err.print(f"[red]imlf: error:[/] {_escape(name)}: {_escape(reason)}", soft_wrap=True)
    if json_lines:
        sys.stdout.write(json.dumps({"image": name, "error": reason}, ensure_ascii=False) + "\n")
        sys.stdout.flush()


class _progress:
    """A rich progress bar on stderr for batches (no-op for one image or a non-terminal)."""

    def __init__(self, total: int, quiet: bool):
        self.total, self.enabled = total, total > 1 and err.is_terminal and not quiet

    def __enter__(self):
        if not self.enabled:
            return lambda: None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        rate = TextColumn("{task.fields[rate]}")
        self.bar = Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                            rate, TimeRemainingColumn(), console=err, transient=True)
        self.bar.start()
        task = self.bar.add_task("analysing", total=self.total, rate="")

        def advance() -> None:
            self.bar.advance(task)
            speed = self.bar.tasks[0].speed  # images per second over rich's recent window
            if speed:
                self.bar.update(task, rate=f"{speed:.2f} img/s" if speed >= 1 else f"{1 / speed:.1f} s/img")

        return advance

    def __exit__(self, *exc):
        if self.enabled:
            self.bar.stop()
        return False


def _detect_table(records: list[dict], threshold: float, out_dir: Path) -> None:
    table = Table(title=f"imlf detect (threshold {threshold})", title_justify="left")
    for col, just in (("image", "left"), ("detector", "left"), ("score", "right"), ("tampered", "right"), ("regions", "right"), ("time", "right")):
        table.add_column(col, justify=just)
    for r in records:
        score = f"{r['score']:.3f}"
        style = "bold red" if r["score"] >= threshold else ""
        table.add_row(_escape(Path(r["image"]).name), r["detector"]["name"], f"[{style}]{score}[/]" if style else score,
                      f"{100 * r['tampered_fraction']:.1f}%", str(len(r["boxes"])), f"{r['seconds']:.2f}s")
    err.print(table)
    err.print(f"outputs in {_escape(str(out_dir))}/")


@app.command("eval")
def evaluate(
    dataset: Path = typer.Argument(..., help="IMDL-BenCo dataset: folder with Tp/ and Gt/ (or dataset.json), or a JSON list."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Detector to run (default: the default detector)."),
    pred: Optional[Path] = typer.Option(None, "--pred", help="Score maps already written by `imlf detect --save-raw` in this folder instead of running a detector."),
    threshold: float = typer.Option(0.5, min=0.0, max=1.0, help="Fixed threshold for pixel F1/IoU and image accuracy."),
    jobs: int = typer.Option(1, "--jobs", "-j", min=1, help="Worker processes."),
    limit: Optional[int] = typer.Option(None, min=1, help="Only the first N images (quick checks)."),
    split_half: Optional[int] = typer.Option(None, "--split-half", min=0, max=1, help="Only one deterministic half of the dataset (0 or 1), as `imlf calibrate --split-half`."),
    device: str = typer.Option("cpu", help="Where metrics (and deep models) run: cpu or cuda."),
    report: Optional[Path] = typer.Option(None, "--report", help="Write the summary and per-image records as JSON."),
    csv_path: Optional[Path] = typer.Option(None, "--csv", help="Write per-image metrics as CSV."),
    json_out: bool = typer.Option(False, "--json", help="Print the summary as JSON on stdout."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing report files."),
    option: list[str] = typer.Option([], "--option", "-O", help="Detector option KEY=VALUE (repeatable)."),
    weights: Optional[Path] = typer.Option(None, "--weights", help="Deep models: use this weights file instead of the cache."),
    tile: bool = typer.Option(False, "--tile", help="Deep models: sliding windows at native resolution."),
    half: bool = typer.Option(False, "--half", help="Deep models: bf16 autocast."),
) -> None:
    """Score a detector on a dataset: pixel F1/IoU/AUC (fixed and best threshold), image AUC."""
    from .datasets import load_dataset
    from .evaluate import DetectorSource, DirectorySource, records_csv, run, summarize
    from .outputs import json_bytes, write_atomic
    from .registry import DEFAULT_DETECTOR, canonical_name

    if pred is not None and model is not None:
        raise fail("give either --model or --pred, not both")
    try:
        samples = load_dataset(dataset)
        if pred is not None:
            DirectorySource(pred)  # checks the folder
            factory, name = partial(DirectorySource, pred), f"maps in {pred}"
        else:
            name = canonical_name(model or DEFAULT_DETECTOR)
            factory = partial(DetectorSource, name, **detector_options(name, option, weights, device, tile, half))
            factory()  # fail early on bad options
        for target in (report, csv_path):
            if target is not None and target.exists() and not overwrite:
                raise ImlfError(f"{target} exists (use --overwrite to replace it)")
    except ImlfError as exc:
        raise fail(str(exc))
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise fail("--device cuda: no CUDA device is available")
        if jobs > 1:
            raise fail("--device cuda works with --jobs 1")
    if split_half is not None:
        from .calibrate import split_half as halve

        samples = halve(samples, split_half)
    samples = samples[:limit] if limit else samples
    records = []
    with _progress(len(samples), json_out) as advance:
        for rec in run(samples, factory, threshold, jobs, device):
            records.append(rec)
            advance()
    summary = {"dataset": str(dataset), "detector": name, **summarize(records, threshold)}
    try:
        if report is not None:
            from dataclasses import asdict

            write_atomic(report, json_bytes({**summary, "records": [asdict(r) for r in records]}), overwrite)
        if csv_path is not None:
            write_atomic(csv_path, records_csv(records).encode(), overwrite)
    except ImlfError as exc:
        raise fail(str(exc), EXIT_FAILED)
    if json_out:
        sys.stdout.write(json.dumps(summary) + "\n")
    else:
        _eval_table(summary)
    if summary["failed"]:
        for reason, n in summary["errors"].items():
            warn_line(f"{n} image(s) failed: {reason}")


def _fmt(x: Optional[float]) -> str:
    return "-" if x is None else f"{x:.3f}"


def _eval_table(s: dict) -> None:
    px = s["pixel"]
    table = Table(title=f"{s['detector']} on {s['dataset']}", title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("tampered images scored", str(px["n"]))
    table.add_row(f"pixel F1 (fixed threshold {s['threshold']})", _fmt(px["f1_fixed"]))
    table.add_row(f"pixel IoU (fixed threshold {s['threshold']})", _fmt(px["iou_fixed"]))
    table.add_row("pixel F1 (best threshold per image)", _fmt(px["f1_best"]))
    table.add_row("pixel IoU (best threshold per image)", _fmt(px["iou_best"]))
    table.add_row("pixel AUC", _fmt(px["auc"]))
    if "authentic_pixels" in s:
        a = s["authentic_pixels"]
        table.add_row("authentic images", str(a["n"]))
        table.add_row("authentic: share of pixels flagged", _fmt(a["flagged_fixed"]))
    if "image" in s:
        table.add_row("image-level AUC", _fmt(s["image"]["auc"]))
        table.add_row(f"image-level balanced accuracy (score >= {s['threshold']})", _fmt(s["image"]["balanced_accuracy"]))
    table.add_row("failed images", str(s["failed"]))
    table.add_row("median seconds per image", _fmt(s["seconds_median"]))
    out.print(table)


@app.command()
def models(json_out: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")) -> None:
    """List every detector: kind, input it needs, weights, license and paper."""
    from .registry import DEFAULT_DETECTOR, list_detectors

    rows = [
        {"name": c.name, "kind": c.kind, "input": c.needs, "weights": c.weights_status(),
         "license": c.license, "paper": c.paper, "summary": c.summary, "default": c.name == DEFAULT_DETECTOR}
        for c in list_detectors()
    ]
    if json_out:
        sys.stdout.write(json.dumps(rows, indent=1) + "\n")
        return
    table = Table(title="imlf detectors", title_justify="left")
    for col in ("name", "kind", "input", "weights", "license", "paper"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(r["name"] + (" (default)" if r["default"] else ""), r["kind"], r["input"], r["weights"],
                      r["license"], r["paper"])
    out.print(table)


def _add_subcommands() -> None:
    from .cli_committee import calibrate_command, ensemble_command
    from .cli_makemask import make_mask_command
    from .cli_weights import app as weights_app

    app.add_typer(weights_app, name="weights")
    app.command("calibrate")(calibrate_command)
    app.command("ensemble")(ensemble_command)
    app.command("make-mask")(make_mask_command)


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:
        err.print("imlf: interrupted")
        sys.exit(130)
    except UnknownDetector as exc:  # raised lazily by some paths
        err.print(f"imlf: error: {exc}")
        sys.exit(EXIT_USAGE)


_add_subcommands()

if __name__ == "__main__":
    main()
