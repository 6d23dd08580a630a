"""``imlf calibrate``: measure committee members on a labelled dataset and write priors.json."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from ..errors import ImlfError
from ..io.files import safe_resolve
from .common import (
    ACTORS_HELP,
    ADDRESS_HELP,
    ENGINE_HELP,
    EXIT_FAILED,
    GPUS_HELP,
    err,
    escape,
    fail,
    finite,
    progress,
)


def calibrate_command(
    datasets: list[Path] = typer.Argument(..., help="Labelled datasets in IMDL-BenCo layout (Tp/ + Gt/ [+ Au/]) or JSON lists; several weigh equally."),
    models: str = typer.Option("ela,noise,jpeg-grid,dq,copymove", "--models", "-m", help="Comma-separated members."),
    out: Path = typer.Option(Path("priors.json"), "--out", "-o", help="Where to write the priors file."),
    prior: str = typer.Option("f1", "--prior", help="Prior of each member: f1 (pixel F1 at its best fixed threshold) or auc."),
    half: Optional[int] = typer.Option(None, "--split-half", min=0, max=1, help="Only one deterministic half of the dataset (0 or 1); evaluate on the other."),
    heldout: float = typer.Option(0.25, "--heldout", min=0.0, max=0.9, callback=finite, help="Share of images held out to check the calibration."),
    limit: Optional[int] = typer.Option(None, min=1, help="Only the first N images."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing priors file."),
    json_out: bool = typer.Option(False, "--json", help="Also print the priors document on stdout."),
) -> None:
    """Run each member over a labelled dataset: prior, threshold and calibration curve per member."""
    from ..committee.calibrate import calibrate, dataset_entry, iter_names, priors_document, split_half
    from ..detectors.registry import canonical_name, load_detector
    from ..evaluation.datasets import load_dataset
    from ..io.outputs import json_bytes, write_atomic

    if prior not in ("f1", "auc"):
        raise fail("--prior must be f1 or auc")
    try:
        names = [canonical_name(n) for n in iter_names([models])]
        if "committee" in names:
            raise ImlfError("a committee cannot be a member of a committee")
        sets = []
        for dataset in datasets:
            samples = load_dataset(dataset)
            if half is not None:
                samples = split_half(samples, half)
            sets.append((_set_name(dataset, [n for n, _ in sets]), samples[:limit] if limit else samples))
        if out.exists() and not overwrite:
            raise ImlfError(f"{out} exists (use --overwrite to replace it)")
        detectors = {n: load_detector(n) for n in names}
    except ImlfError as exc:
        raise fail(str(exc))
    def runner(det):
        def run(path):
            pred = det.predict(path)
            return pred.heatmap, pred.applicable
        return run

    runners = {n: runner(d) for n, d in detectors.items()}
    total = sum(len(s) for _, s in sets)
    with progress(total, json_out) as advance:
        try:
            res = calibrate(sets, runners, prior, heldout, progress=advance)
        except ImlfError as exc:
            raise fail(str(exc), EXIT_FAILED)
    members = res["members"]
    for n in res["skipped"]:
        err.print(f"imlf: {n} saw no trace of its kind in any tampered image: left out of the priors file")
    suffix = f" (half {half})" if half is not None else ""
    label = ", ".join(f"{d}{suffix}" for d in datasets)
    listed = [dataset_entry(name, d, half, s) for (name, s), d in zip(sets, datasets)]
    doc = priors_document(label, members, {n: detectors[n].version for n in members}, prior, total,
                          fusion=res["fusion"], datasets=listed)
    try:
        write_atomic(out, json_bytes(doc), overwrite)
    except ImlfError as exc:
        raise fail(str(exc), EXIT_FAILED)
    for n, m in members.items():
        h = m["heldout"]
        err.print(f"{n:10s} prior {m['prior']:6.2f}  F1 {m['f1_best_fixed']:.3f} at {m['threshold']:.2f}  "
                  f"AUC {m['auc']:.3f}  held-out Brier {h.get('brier_raw', float('nan')):.4f} -> "
                  f"{h.get('brier_calibrated', float('nan')):.4f}", soft_wrap=True)
    sel = res["fusion"].get("selection", {}).get("mean", {})
    for v, m in sel.items():
        err.print(f"voter {v:8s} held-out mean over datasets: F1@0.5 {m['f1_fixed']:.3f}  F1 best {m['f1_best']:.3f}  "
                  f"AUC {m['auc']:.3f}", soft_wrap=True)
    err.print(f"default voter: {res['fusion']['default_voter']}; priors written to {escape(str(out))}")
    if json_out:
        sys.stdout.write(json.dumps(doc) + "\n")


def _set_name(path: Path, taken: list[str]) -> str:
    name = path.stem if path.suffix.lower() == ".json" else (path.resolve().name or str(path))
    return name if name not in taken else f"{name}-{len(taken)}"


def ensemble_command(
    inputs: Optional[list[str]] = typer.Argument(None, help="Folders (searched recursively), image files or glob patterns.", show_default=False),
    out_dir: Path = typer.Option(Path("imlf-out"), "--out", "-o", help="Output folder."),
    models: Optional[str] = typer.Option(None, "--models", "-m", help="Comma-separated members (default: all in the priors file)."),
    priors: Optional[Path] = typer.Option(None, "--priors", help="Priors from `imlf calibrate` (default: the shipped classical priors)."),
    voter: Optional[str] = typer.Option(None, "--voter", help="prior: weights softmax(prior / T); equal: 1/N; learned: the priors file's stacker (default: the file's best voter)."),
    temperature: float = typer.Option(5.0, "--temperature", "-T", callback=finite, help="CV-DD temperature T (percent points)."),
    fusion: str = typer.Option("logit", "--fusion", help="logit (default), mean or vote."),
    save_members: bool = typer.Option(False, "--save-members", help="Also write each member's map."),
    threshold: float = typer.Option(0.5, min=0.0, max=1.0, callback=finite, help="Fused heat at or above which a pixel is in the mask."),
    jobs: int = typer.Option(1, "--jobs", "-j", min=1, help="Worker processes (each loads the committee once)."),
    resume: bool = typer.Option(False, "--resume", help="Skip images a previous run into --out finished."),
    shard: Optional[str] = typer.Option(None, "--shard", help="K/N: process the K-th of N deterministic shares."),
    json_lines: bool = typer.Option(False, "--json", help="One JSON object per image on stdout."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace outputs that already exist."),
    save_raw: bool = typer.Option(False, "--save-raw", help="Also write the fused float map as .npy."),
    device: str = typer.Option("auto", "--device", help="Deep members: auto, cpu, cuda or mps."),
    input_list: Optional[Path] = typer.Option(None, "--input-list", help="A file with one input path per line (added to the arguments)."),
    engine: str = typer.Option("local", "--engine", help=ENGINE_HELP),
    address: Optional[str] = typer.Option(None, "--address", help=ADDRESS_HELP),
    actors: Optional[int] = typer.Option(None, "--actors", min=1, help=ACTORS_HELP),
    gpus_per_actor: Optional[float] = typer.Option(None, "--gpus-per-actor", min=0.0, help=GPUS_HELP),
    report: bool = typer.Option(False, "--report", help="Also write an HTML report of the output folder (OUT/report; implies --save-members)."),
) -> None:
    """A CV-DD committee votes on every image of folders: fused heatmap, mask, overlay, agreement map, JSON."""
    from functools import partial

    from ..detectors.registry import load_detector
    from ..io.image import DEFAULT_MAX_PIXELS, IMAGE_SUFFIXES
    from ..io.inputs import FANOUT_OVER, expand_inputs, output_stems, read_input_list
    from ..io.outputs import check_writable_dir, write_atomic
    from ..runs.batch import (
        Ledger,
        OutputLock,
        in_shard,
        ledger_key,
        parse_shard,
        read_ledger,
        remove_stale_temporaries,
        run_batch,
        summary_csv,
        summary_rows,
    )
    from ..runs.ray import run_committee
    from .common import report_failure, start_engine
    from ..runs.runinfo import RunLog
    from .report import check_report_target, finish_run

    save_members = save_members or report  # the report shows each member's map
    opts = {"members": models, "priors": str(priors) if priors else None, "voter": voter, "temperature": temperature,
            "fusion": fusion, "save_members": save_members, "device": device}
    try:
        share = parse_shard(shard)
        committee = load_detector("committee", **opts)  # fails early: bad options, unknown members, none usable
        check_writable_dir(out_dir)
        inputs = list(inputs or []) + (read_input_list(input_list) if input_list else [])
        if not inputs:
            raise ImlfError("give folders, files or --input-list FILE")
        if report:  # before the lock is taken
            check_report_target(out_dir, overwrite or resume)
        lock = OutputLock(out_dir, share, "imlf ensemble")
        done = read_ledger(out_dir) if resume else {}
    except ImlfError as exc:
        raise fail(str(exc))
    log = RunLog(out_dir, "ensemble", committee, threshold, str(priors) if priors else None)
    with lock:
        cluster = start_engine(engine, address, actors, gpus_per_actor)
        files, problems = expand_inputs(inputs, recursive=True)
        for arg, reason in problems:
            report_failure(arg, reason, json_lines)
            log.add(arg, error=reason)
        skipped = [p for a in inputs if Path(a).is_dir() for p in sorted(Path(a).rglob("*"))
                   if p.is_file() and p.suffix.lower() not in IMAGE_SUFFIXES and not p.name.startswith(".")]
        if skipped:
            err.print(f"imlf: skipped {len(skipped)} file(s) that are not images (e.g. {escape(str(skipped[0]))})")
        fanout = len(files) > FANOUT_OVER  # counted before sharding: every shard lays out its files alike
        files = [f for f in files if in_shard(f, share)]
        stems = output_stems(files, fanout)
        if resume:  # files a killed run was writing when it died
            remove_stale_temporaries(out_dir, stems.values())
        todo = [f for f in files if ledger_key(f) not in done]
        for f in files:
            if ledger_key(f) in done:  # resumed: done by an earlier run
                log.add(str(f), (done[ledger_key(f)].get("summary") or {}).get("score"))
        if resume:
            err.print(f"imlf: resuming: {len(files) - len(todo)} of {len(files)} image(s) already done")
        job = {"out_dir": str(out_dir), "threshold": threshold, "overwrite": overwrite or resume, "save_raw": save_raw,
               "max_pixels": DEFAULT_MAX_PIXELS, "protected": [str(safe_resolve(f)) for f in files]}
        failed = len(problems)
        try:
            ledger = Ledger(out_dir)
        except ImlfError as exc:
            raise fail(str(exc), EXIT_FAILED)
        stopped = None
        try:
            with progress(len(todo), json_lines) as advance:
                items = [(str(f), stems[f]) for f in todo]
                results = (run_batch(items, partial(load_detector, "committee", **opts), job, jobs,
                                     committee if jobs <= 1 else None)
                           if cluster is None else run_committee(items, committee, opts, job, **cluster))
                for res in results:
                    rec = res.get("record")
                    if res["status"] == "done":
                        ledger.done(res["image"], rec)
                        log.add(res["image"], rec.get("score"))
                        if json_lines:
                            sys.stdout.write(json.dumps(rec, ensure_ascii=False) + "\n")
                            sys.stdout.flush()
                    else:
                        failed += 1
                        report_failure(res["image"], res["error"], json_lines)
                        ledger.failed(res["image"], res["error"])
                        log.add(res["image"], error=res["error"])
                    advance()
        except ImlfError as exc:  # the ledger cannot be written (disk full, ...): stop, nothing more is safe
            stopped = str(exc)
        finally:
            ledger.close()
        if stopped:
            raise fail(f"{stopped}; stopped (--resume continues once there is room)", EXIT_FAILED)
        rows = summary_rows(out_dir)
        flagged = sum(1 for r in rows if (r.get("record") or {}).get("score") is not None
                      and r["record"]["score"] >= threshold)
        summary = out_dir / "summary.csv"
        try:
            write_atomic(summary, summary_csv(rows, threshold).encode(), True)
            where = f"summary in {escape(str(summary))}"
        except ImlfError as exc:
            failed += 1
            err.print(f"imlf: error: {escape(str(exc))}", soft_wrap=True)
            where = "no summary written"
        err.print(f"done {sum(r['status'] == 'done' for r in rows)}, failed {failed}, flagged {flagged} "
                  f"(score >= {threshold}); {where}")
        failed += finish_run(log, out_dir, report)
    if failed:
        raise typer.Exit(EXIT_FAILED)

