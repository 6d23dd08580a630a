"""``imlf detect`` and ``imlf models``."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from ..errors import ImlfError
from ..io.files import safe_resolve
from ..io.image import DEFAULT_MAX_PIXELS
from .common import (
    EXIT_FAILED,
    EXIT_FLAGGED,
    detector_options,
    err,
    escape,
    fail,
    finite,
    out,
    parse_count,
    progress,
    report_failure,
)


def detect_command(
    images: list[str] = typer.Argument(..., help="Image files, folders or glob patterns.", show_default=False),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Detector name (see `imlf models`); default: dq for JPEG files, ela for others."),
    out_dir: Path = typer.Option(Path("imlf-out"), "--out", "-o", help="Output folder (created if needed)."),
    json_lines: bool = typer.Option(False, "--json", help="Print one JSON object per image on stdout, nothing else."),
    threshold: float = typer.Option(0.5, min=0.0, max=1.0, callback=finite, help="Heat at or above which a pixel goes into the mask."),
    fail_above: Optional[float] = typer.Option(None, min=0.0, max=1.0, callback=finite, help="Exit with code 3 when an image scores above this."),
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
    from ..detectors.registry import DEFAULT_DETECTOR, DEFAULT_FALLBACK, load_detector
    from ..io.inputs import expand_inputs, output_stems
    from ..io.outputs import check_writable_dir
    from ..runs.detect import detect_stream

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
        report_failure(arg, reason, json_lines)
    stems = output_stems(files)
    protected = frozenset(safe_resolve(p) for p in files)
    records, failed = [], len(problems)
    with progress(len(files), json_lines) as advance:
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
                report_failure(str(path), str(exc), json_lines)
            elif isinstance(exc, MemoryError):
                failed += 1
                report_failure(str(path), "out of memory (try a smaller --max-pixels or another detector)", json_lines)
            else:  # a bug: say so in one line; IMLF_DEBUG=1 shows the traceback
                if os.environ.get("IMLF_DEBUG"):
                    raise exc
                failed += 1
                report_failure(str(path), f"internal error in {detector.name}: {type(exc).__name__}: {exc} "
                                "(please report; IMLF_DEBUG=1 shows details)", json_lines)
            advance()
    if not json_lines and records:
        _detect_table(records, threshold, out_dir)
    if failed:
        raise typer.Exit(EXIT_FAILED)
    if fail_above is not None and any(r["score"] > fail_above for r in records):
        raise typer.Exit(EXIT_FLAGGED)


def _detect_table(records: list[dict], threshold: float, out_dir: Path) -> None:
    table = Table(title=f"imlf detect (threshold {threshold})", title_justify="left")
    for col, just in (("image", "left"), ("detector", "left"), ("score", "right"), ("tampered", "right"), ("regions", "right"), ("time", "right")):
        table.add_column(col, justify=just)
    for r in records:
        score = f"{r['score']:.3f}"
        style = "bold red" if r["score"] >= threshold else ""
        table.add_row(escape(Path(r["image"]).name), r["detector"]["name"], f"[{style}]{score}[/]" if style else score,
                      f"{100 * r['tampered_fraction']:.1f}%", str(len(r["boxes"])), f"{r['seconds']:.2f}s")
    err.print(table)
    err.print(f"outputs in {escape(str(out_dir))}/")


def models_command(json_out: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")) -> None:
    """List every detector: kind, input it needs, weights, license and paper."""
    from ..detectors.registry import DEFAULT_DETECTOR, list_detectors

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


