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
    ACTORS_HELP,
    ADDRESS_HELP,
    ENGINE_HELP,
    EXIT_FAILED,
    EXIT_FLAGGED,
    GPUS_HELP,
    detector_options,
    err,
    escape,
    fail,
    finite,
    out,
    parse_count,
    progress,
    report_failure,
    start_engine,
)


def detect_command(
    images: Optional[list[str]] = typer.Argument(None, help="Image files, folders or glob patterns.", show_default=False),
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
    input_list: Optional[Path] = typer.Option(None, "--input-list", help="A file with one input path per line (added to the arguments)."),
    engine: str = typer.Option("local", "--engine", help=ENGINE_HELP),
    address: Optional[str] = typer.Option(None, "--address", help=ADDRESS_HELP),
    actors: Optional[int] = typer.Option(None, "--actors", min=1, help=ACTORS_HELP),
    gpus_per_actor: Optional[float] = typer.Option(None, "--gpus-per-actor", min=0.0, help=GPUS_HELP),
    report: bool = typer.Option(False, "--report", help="Also write an HTML report of the output folder (OUT/report, see `imlf report`)."),
) -> None:
    """Localize tampering in images: heatmap, mask, overlay and a JSON report per image."""
    from ..detectors.registry import DEFAULT_DETECTOR, DEFAULT_FALLBACK, load_detector
    from ..io.inputs import expand_inputs, output_stems, read_input_list
    from ..io.outputs import check_writable_dir
    from ..runs.detect import detect_stream
    from ..runs.ray import detect_outcomes
    from ..runs.runinfo import RunLog
    from .report import check_report_target, finish_run

    limit = parse_count(max_pixels)
    try:
        name = model or DEFAULT_DETECTOR
        options = detector_options(name, option, weights, device, tile, half)
        detector = load_detector(name, **options)
        fallback = None if model else load_detector(DEFAULT_FALLBACK)
        check_writable_dir(out_dir)
        images = list(images or []) + (read_input_list(input_list) if input_list else [])
        if not images:
            raise ImlfError("give image files, folders or --input-list FILE")
    except ImlfError as exc:
        raise fail(str(exc))
    cluster = start_engine(engine, address, actors, gpus_per_actor)
    if report:
        check_report_target(out_dir, overwrite)
    log = RunLog(out_dir, "detect", detector, threshold)
    files, problems = expand_inputs(images, recursive)
    for arg, reason in problems:
        report_failure(arg, reason, json_lines)
        log.add(arg, error=reason)
    stems = output_stems(files)
    protected = frozenset(safe_resolve(p) for p in files)
    records, failed = [], len(problems)
    with progress(len(files), json_lines) as advance:
        items = [(path, stems[path]) for path in files]
        if cluster is None:
            results = detect_stream(detector, items, out_dir, threshold, overwrite, save_raw, limit, protected, fallback)
        else:
            job = {"out_dir": str(out_dir), "threshold": threshold, "overwrite": overwrite, "save_raw": save_raw,
                   "max_pixels": limit, "protected": [str(p) for p in protected]}
            results = detect_outcomes(items, job, detector, options, fallback is not None, **cluster)
        for path, rec, exc in results:
            if exc is None:
                records.append(rec)
                log.add(str(path), rec["score"])
                if json_lines:
                    sys.stdout.write(json.dumps(rec, ensure_ascii=False) + "\n")
                    sys.stdout.flush()
                advance()
                continue
            if isinstance(exc, ImlfError):
                reason = str(exc)
            elif isinstance(exc, MemoryError):
                reason = "out of memory (try a smaller --max-pixels or another detector)"
            else:  # a bug: say so in one line; IMLF_DEBUG=1 shows the traceback
                if os.environ.get("IMLF_DEBUG"):
                    raise exc
                reason = (f"internal error in {detector.name}: {type(exc).__name__}: {exc} "
                          "(please report; IMLF_DEBUG=1 shows details)")
            failed += 1
            report_failure(str(path), reason, json_lines)
            log.add(str(path), error=reason)
            advance()
    if not json_lines and records:
        _detect_table(records, threshold, out_dir)
    # a run that wrote nothing into the folder leaves nothing there
    failed += finish_run(log, out_dir, report, write_log=bool(records or report))
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


def models_command(
    name: Optional[str] = typer.Argument(None, help="One detector: everything about it, with the full reference."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON (with the full references) instead of a table."),
) -> None:
    """List every detector: kind, input it needs, weights, license and a short citation."""
    from ..detectors.registry import DEFAULT_DETECTOR, canonical_name, detector_class, list_detectors

    try:
        classes = [detector_class(canonical_name(name))] if name else list_detectors()
    except ImlfError as exc:
        raise fail(escape(str(exc)))
    rows = [
        {"name": c.name, "kind": c.kind, "input": c.needs, "weights": c.weights_status(), "license": c.license,
         "cite": c.cite, "paper": c.paper, "summary": c.summary, "default": c.name == DEFAULT_DETECTOR}
        for c in classes
    ]
    if json_out:
        sys.stdout.write(json.dumps(rows[0] if name else rows, indent=1) + "\n")
        return
    if name:
        _model_card(rows[0], classes[0])
        return
    from rich import box

    # fits 80 columns: no vertical rules, the short citation (the full one: --json or `imlf models NAME`)
    table = Table(title="imlf detectors (imlf models NAME: details)", title_justify="left", box=box.SIMPLE_HEAD,
                  padding=(0, 0))
    for col in ("name", "kind", "input", "weights", "license", "paper"):
        table.add_column(col, no_wrap=col != "paper", overflow="fold")
    for r in rows:
        weights = "cached" if r["weights"].startswith("cached") else r["weights"]
        needs = {"any image": "any", "JPEG only": "JPEG"}.get(r["input"], r["input"])
        table.add_row(r["name"] + ("*" if r["default"] else ""), r["kind"], needs, weights,
                      r["license"].split(" (")[0], r["cite"])
    out.print(table)
    out.print(f"* default detector ({DEFAULT_DETECTOR}; {DEFAULT_FALLBACK_NOTE})")


DEFAULT_FALLBACK_NOTE = "ela for files it does not apply to"


def _model_card(r: dict, cls: type) -> None:
    table = Table(title=r["name"] + (" (default)" if r["default"] else ""), title_justify="left", show_header=False)
    table.add_column("field", style="dim", no_wrap=True)
    table.add_column("value", overflow="fold")
    for key in ("kind", "input", "weights", "license", "summary", "paper"):
        table.add_row(key, escape(str(r[key])))
    doc = (cls.__doc__ or "").strip()
    if doc:
        table.add_row("options", escape(" ".join(doc.split())))
    out.print(table)


