"""``imlf eval``: score a detector (or saved maps) on a dataset."""

from __future__ import annotations

import json
import sys
from functools import partial
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from ..errors import ImlfError
from .common import (
    ACTORS_HELP,
    ADDRESS_HELP,
    ENGINE_HELP,
    EXIT_FAILED,
    GPUS_HELP,
    detector_options,
    err,
    fail,
    finite,
    out,
    progress,
    report_failure,
    start_engine,
    warn_line,
)


def eval_command(
    dataset: Path = typer.Argument(..., help="IMDL-BenCo dataset: folder with Tp/ and Gt/ (or dataset.json), or a JSON list."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Detector to run (default: the default detector)."),
    pred: Optional[Path] = typer.Option(None, "--pred", help="Score maps already written by `imlf detect --save-raw` in this folder instead of running a detector."),
    threshold: float = typer.Option(0.5, min=0.0, max=1.0, callback=finite, help="Fixed threshold for pixel F1/IoU and image accuracy."),
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
    engine: str = typer.Option("local", "--engine", help=ENGINE_HELP),
    address: Optional[str] = typer.Option(None, "--address", help=ADDRESS_HELP),
    actors: Optional[int] = typer.Option(None, "--actors", min=1, help=ACTORS_HELP),
    gpus_per_actor: Optional[float] = typer.Option(None, "--gpus-per-actor", min=0.0, help=GPUS_HELP),
) -> None:
    """Score a detector on a dataset: pixel F1/IoU/AUC (fixed and best threshold), image AUC."""
    from ..detectors.registry import DEFAULT_DETECTOR, canonical_name
    from ..evaluation.datasets import load_dataset
    from ..evaluation.evaluate import (
        DetectorSource,
        DirectorySource,
        records_csv,
        run,
        summarize,
    )
    from ..io.outputs import json_bytes, write_atomic
    from ..runs.ray import run_eval

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
    cluster = start_engine(engine, address, actors, gpus_per_actor)
    if device.startswith("cuda") and cluster is None:
        import torch

        if not torch.cuda.is_available():
            raise fail("--device cuda: no CUDA device is available")
        if jobs > 1:
            raise fail("--device cuda works with --jobs 1")
    if split_half is not None:
        from ..committee.calibrate import split_half as halve

        samples = halve(samples, split_half)
    samples = samples[:limit] if limit else samples
    records = []
    with progress(len(samples), json_out) as advance:
        records_in = (run(samples, factory, threshold, jobs, device) if cluster is None
                      else run_eval(samples, factory, threshold, pred is None and _is_deep(name), **cluster))
        for rec in records_in:
            records.append(rec)
            if rec.error:
                report_failure(rec.image, rec.error, False)
            elif rec.warning:
                warn_line(f"{rec.image}: {rec.warning}")
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
        err.print(f"imlf: {summary['failed']} of {summary['images']} image(s) failed and are not in the figures above",
                  markup=False, soft_wrap=True)
        raise typer.Exit(EXIT_FAILED)


def _is_deep(name: str) -> bool:
    from ..detectors.registry import detector_class

    return detector_class(name).kind == "deep"


def _fmt(x: Optional[float]) -> str:
    return "-" if x is None else f"{x:.3f}"


def _eval_table(s: dict) -> None:
    px = s["pixel"]
    table = Table(title=f"{s['detector']} on {s['dataset']}", title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("tampered images scored", str(px["n"]))
    table.add_row(f"pixel F1, fixed threshold {s['threshold']} (IMDL-BenCo)", _fmt(px["f1_fixed"]))
    table.add_row(f"pixel IoU, fixed threshold {s['threshold']} (IMDL-BenCo)", _fmt(px["iou_fixed"]))
    table.add_row("pixel F1, best threshold per image (optimistic)", _fmt(px["f1_best"]))
    table.add_row("pixel IoU, best threshold per image (optimistic)", _fmt(px["iou_best"]))
    if px.get("f1_grip_best") is not None:
        table.add_row(f"pixel F1, GRIP/TruFor: map or inverted map, threshold {s['threshold']}",
                      _fmt(px["f1_grip_fixed"]))
        table.add_row("pixel F1, GRIP/TruFor: map or inverted map, best threshold (optimistic)",
                      _fmt(px["f1_grip_best"]))
        table.add_row("pixel soft F1, no threshold (heatmap as probability)", _fmt(px["f1_soft"]))
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


