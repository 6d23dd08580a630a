"""``imlf report``: a static HTML report of a results folder (and the ``--report`` of detect and ensemble)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .common import err, escape, fail


def report_command(
    results: Path = typer.Argument(..., help="A folder written by `imlf detect` or `imlf ensemble`."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Where the report goes (default: RESULTS/report)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing report there."),
    inspect: bool = typer.Option(True, "--inspect/--no-inspect", help="Add what `imlf inspect` finds in each analysed file."),
    jobs: int = typer.Option(2, "--jobs", "-j", min=1, help="Threads for thumbnails and inspection."),
) -> None:
    """Write a static, self-contained HTML report of a run: index sorted by score, a page per image, a run page."""
    from ..errors import ImlfError
    from ..report import render_report

    try:
        index = render_report(results, out, overwrite=overwrite, inspect=inspect, jobs=jobs)
    except ImlfError as exc:
        raise fail(escape(str(exc)))
    err.print(f"report in {escape(str(index))}")


def check_report_target(out_dir: Path, replace: bool) -> None:
    """Before a run with ``--report``: refuse early when a report is there and may not be replaced."""
    index = out_dir / "report" / "index.html"
    if index.exists() and not replace:
        raise fail(f"{index} exists (use --overwrite to replace the report)")


def write_run_report(out_dir: Path) -> bool:
    """After a run with ``--report``: the report of ``out_dir``; a failure is one line (False)."""
    from ..errors import ImlfError
    from ..report import render_report

    try:
        index = render_report(out_dir, overwrite=True)
    except ImlfError as exc:
        err.print(f"[red]imlf: error:[/] report: {escape(str(exc))}", soft_wrap=True)
        return False
    err.print(f"report in {escape(str(index))}")
    return True


def finish_run(log, out_dir: Path, report: bool, write_log: bool = True) -> int:
    """After a run: its line in runs.jsonl (when ``write_log``) and, with ``--report``, the report;
    each failure is one line. Returns how many of the two failed."""
    from ..errors import ImlfError

    failed = 0
    if write_log:
        try:
            log.write()
        except ImlfError as exc:
            err.print(f"imlf: error: {escape(str(exc))}", soft_wrap=True)
            failed += 1
    if report and not write_run_report(out_dir):
        failed += 1
    return failed
