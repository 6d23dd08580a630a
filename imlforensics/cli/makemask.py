"""``imlf make-mask``: ground-truth masks from before/after pairs, one pair or a whole dataset."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Optional

import typer

from ..errors import ImlfError
from ..io.files import safe_resolve
from ..io.image import DEFAULT_MAX_PIXELS
from .common import (
    ACTORS_HELP,
    ADDRESS_HELP,
    ENGINE_HELP,
    EXIT_FAILED,
    GPUS_HELP,
    err,
    escape,
    fail,
    parse_count,
    progress,
    report_failure,
    start_engine,
)


def make_mask_command(
    inputs: Optional[list[str]] = typer.Argument(None, help="ORIGINAL TAMPERED: two images, or two folders whose files are matched by name.", show_default=False),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="One pair: write the mask (PNG, 0/255) here."),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="One pair: folder for mask, change map, overlay and JSON report. Several: the dataset folder (Tp/, Gt/, dataset.json)."),
    pairs: Optional[Path] = typer.Option(None, "--pairs", help="CSV with columns original and tampered (paths relative to it): a dataset from every pair."),
    jobs: int = typer.Option(1, "--jobs", "-j", min=1, help="Worker processes for several pairs."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace outputs that already exist."),
    json_out: bool = typer.Option(False, "--json", help="Print the report of each pair as one JSON line on stdout."),
    sr: Optional[str] = typer.Option(None, "--sr", help="Enlarge a smaller original with this learned super-resolution model (see `imlf weights list`) instead of the classical resampler."),
    sr_weights: Optional[Path] = typer.Option(None, "--sr-weights", help="Weights file for --sr instead of the cache."),
    features: Optional[str] = typer.Option(None, "--features", help="Also compare the copies' deep features with this backbone (see `imlf weights list`)."),
    features_weights: Optional[Path] = typer.Option(None, "--features-weights", help="Weights file for --features instead of the cache."),
    device: str = typer.Option("auto", "--device", help="--sr and --features: auto, cpu, cuda or mps."),
    max_pixels: str = typer.Option(str(DEFAULT_MAX_PIXELS), help="Refuse images with more pixels than this (e.g. 150M)."),
    engine: str = typer.Option("local", "--engine", help="Several pairs: " + ENGINE_HELP),
    address: Optional[str] = typer.Option(None, "--address", help=ADDRESS_HELP),
    actors: Optional[int] = typer.Option(None, "--actors", min=1, help="--engine ray with --sr/--features: " + ACTORS_HELP),
    gpus_per_actor: Optional[float] = typer.Option(None, "--gpus-per-actor", min=0.0, help=GPUS_HELP),
) -> None:
    """The mask of an edit from the original and the tampered copy (registration, detail and tone
    matching, change detection), for one pair or a dataset of pairs."""
    from ..makemask.dataset import match_folders, read_pairs_csv
    from ..makemask.work import models

    limit = parse_count(max_pixels)
    inputs = inputs or []
    sr_opts = {"model": sr, "weights": str(sr_weights) if sr_weights else None, "device": device,
               "features": features, "features_weights": str(features_weights) if features_weights else None}
    try:
        if sr or features:
            models(sr_opts)  # fail early: unknown model, missing weights
        if pairs is not None:
            if inputs:
                raise fail("give either --pairs or two inputs, not both")
            if out_dir is None:
                raise fail("--pairs needs --out DATASET")
            todo, unreadable = read_pairs_csv(pairs)
            unmatched = []
        elif len(inputs) == 2 and all(Path(p).is_dir() for p in inputs):
            unreadable = []
            if out_dir is None:
                raise fail("two folders need --out DATASET")
            todo, unmatched = match_folders(Path(inputs[0]), Path(inputs[1]))
        elif len(inputs) == 2:
            if engine != "local":
                raise fail("--engine ray is for several pairs (--pairs or two folders)")
            return _one(Path(inputs[0]), Path(inputs[1]), output, out_dir, overwrite, json_out, sr_opts, limit)
        else:
            raise fail("give ORIGINAL TAMPERED (two images or two folders), or --pairs CSV")
    except ImlfError as exc:
        raise fail(str(exc))
    if output is not None:
        raise fail("-o/--output names the mask of one pair; a dataset goes to --out")
    for name in unmatched:
        report_failure(name, "no original with this name", json_out)
    for name, reason in unreadable:
        report_failure(name, reason, json_out)
    cluster = start_engine(engine, address, actors, gpus_per_actor)
    _batch(todo, out_dir, overwrite, json_out, jobs, sr_opts, limit, failed=len(unmatched) + len(unreadable),
           cluster=cluster)


def _summary_line(report: dict[str, Any]) -> str:
    reg = report["registration"]
    return (f"{100 * report['tampered_fraction']:.1f}% changed, {len(report['boxes'])} region(s); registration "
            f"{reg['model']}{' (mirrored)' if reg['flip'] else ''}, scale {report['scale_factor']}, "
            f"correlation {reg['correlation']}")


def _one(original: Path, tampered: Path, output: Optional[Path], out_dir: Optional[Path], overwrite: bool,
         json_out: bool, sr_opts: dict[str, Any], limit: int | None) -> None:
    from ..io.outputs import check_writable_dir, write_atomic
    from ..makemask.dataset import OUTPUT_SUFFIXES, mask_png, write_outputs
    from ..makemask.work import analyse_pair

    if output is None and out_dir is None:
        out_dir = Path("imlf-out")
    try:
        for target in [p for p in (output,) if p is not None]:
            if target.suffix.lower() != ".png":
                raise ImlfError(f"{target}: masks are written as PNG: give a name ending in .png")
            if safe_resolve(target) in (safe_resolve(original), safe_resolve(tampered)):
                raise ImlfError(f"refusing to write {target}: it is an input file")
            if target.exists() and not overwrite:
                raise ImlfError(f"{target} exists (use --overwrite to replace it)")
        if out_dir is not None:
            check_writable_dir(out_dir)
            for suffix in OUTPUT_SUFFIXES:
                target = out_dir / f"{tampered.stem}{suffix}"
                if safe_resolve(target) in (safe_resolve(original), safe_resolve(tampered)):
                    raise ImlfError(f"refusing to write {target}: it is an input file")
                if target.exists() and not overwrite:
                    raise ImlfError(f"{target} exists (use --overwrite to replace it)")
    except ImlfError as exc:
        raise fail(str(exc))
    try:
        res, t, report = analyse_pair(original, tampered, sr_opts, limit)
        if output is not None:
            write_atomic(output, mask_png(res.mask), overwrite)
            report["outputs"] = {"mask": str(output)}
        if out_dir is not None:
            report["outputs"] = {**report.get("outputs", {}),
                                 **write_outputs(res, t.pixels, out_dir, tampered.stem, overwrite, report)}
    except ImlfError as exc:
        report_failure(str(tampered), str(exc), json_out)
        raise typer.Exit(EXIT_FAILED)
    for w in res.warnings:
        err.print(f"[yellow]imlf: warning:[/] {escape(w)}", soft_wrap=True)
    if json_out:
        sys.stdout.write(json.dumps(report, ensure_ascii=False) + "\n")
    else:
        where = output if output is not None else out_dir
        err.print(f"{escape(tampered.name)}: {_summary_line(report)}; written to {escape(str(where))}", soft_wrap=True)


def _batch(todo: list, out_dir: Path, overwrite: bool, json_out: bool, jobs: int, sr_opts: dict[str, Any],
           limit: int | None, failed: int = 0, cluster: dict[str, Any] | None = None) -> None:
    from ..makemask.dataset import DatasetWriter, unique_stems
    from ..makemask.work import run_pairs
    from ..runs.batch import OutputLock
    from ..runs.ray import run_pairs as run_pairs_ray

    try:
        writer = DatasetWriter(out_dir, overwrite)
        lock = OutputLock(out_dir, None, "imlf make-mask")
    except ImlfError as exc:
        raise fail(str(exc))
    stems = unique_stems(todo)
    ready = []
    for pair in todo:
        try:
            writer.check(pair, stems[pair])
            ready.append(pair)
        except ImlfError as exc:
            failed += 1
            writer.fail(pair, str(exc))
            report_failure(str(pair.tampered), str(exc), json_out)
    by_key = {(str(p.original), str(p.tampered)): p for p in ready}
    results = (run_pairs(list(by_key), jobs, sr_opts, limit) if cluster is None
               else run_pairs_ray(list(by_key), sr_opts, limit, **cluster))
    done = 0
    try:
        with progress(len(ready), json_out) as advance:
            for original, tampered, mask, report, error in results:
                pair = by_key[(original, tampered)]
                if error is None:
                    try:
                        writer.add(pair, stems[pair], mask, report)
                        done += 1
                        for w in report["warnings"]:
                            err.print(f"[yellow]imlf: warning:[/] {escape(tampered)}: {escape(w)}", soft_wrap=True)
                        if json_out:
                            sys.stdout.write(json.dumps(report, ensure_ascii=False) + "\n")
                            sys.stdout.flush()
                    except ImlfError as exc:
                        error = str(exc)
                if error is not None:
                    failed += 1
                    writer.fail(pair, error)
                    report_failure(tampered, error, json_out)
                advance()
    finally:
        try:
            writer.close()
        finally:
            lock.release()
    err.print(f"done {done}, failed {failed}; dataset in {escape(str(out_dir))} "
              f"(dataset.json{', failed.csv' if failed else ''})", soft_wrap=True)
    if failed:
        raise typer.Exit(EXIT_FAILED)


