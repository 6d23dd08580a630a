"""``imlf inspect``: what an image file says about its history (metadata, JPEG structure,
thumbnail, Content Credentials), as a table or JSON Lines."""

from __future__ import annotations

import json
import sys
from typing import Any

import typer
from rich.table import Table

from .common import EXIT_FAILED, escape, out, report_failure


def inspect_command(
    images: list[str] = typer.Argument(..., help="Image files, folders or glob patterns.", show_default=False),
    json_lines: bool = typer.Option(False, "--json", help="One JSON object per file on stdout (JSON Lines), nothing else."),
    recursive: bool = typer.Option(False, "--recursive", "-r", help="Descend into sub-folders of folder arguments."),
    tables: bool = typer.Option(False, "--tables", help="Also print the JPEG quantization tables."),
    c2pa: bool = typer.Option(True, "--c2pa/--no-c2pa", help="Read Content Credentials (needs the c2pa extra)."),
) -> None:
    """Metadata (EXIF, XMP/IPTC history, ICC), Content Credentials, JPEG structure and the EXIF thumbnail of image files, with plain-words flags."""
    from ..errors import ImlfError
    from ..io.inputs import expand_inputs
    from ..metadata import inspect_file

    files, problems = expand_inputs(images, recursive)
    for arg, reason in problems:
        report_failure(arg, reason, json_lines)
    failed = len(problems)
    for path in files:
        try:
            info = inspect_file(path, c2pa=c2pa)
        except ImlfError as exc:
            failed += 1
            report_failure(str(path), str(exc), json_lines)
            continue
        if json_lines:
            sys.stdout.write(json.dumps(info, ensure_ascii=False) + "\n")
            sys.stdout.flush()
        else:
            out.print(inspect_table(info, tables))
    if failed:
        raise typer.Exit(EXIT_FAILED)


def _v(x: Any) -> str:
    return "-" if x in (None, "", []) else escape(str(x))


def inspect_table(info: dict[str, Any], tables: bool = False) -> Table:
    """The findings of :func:`imlforensics.metadata.inspect_file` as a two-column table."""
    t = Table(title=escape(info["file"]), title_justify="left", show_header=False, show_lines=False)
    t.add_column("field", style="dim", no_wrap=True)
    t.add_column("value", overflow="fold")
    ex, xmp, iptc, th, c2, jp = info["exif"], info["xmp"], info["iptc"], info["thumbnail"], info["c2pa"], info["jpeg"]
    t.add_row("file", f"{info['format']} {info['width']}x{info['height']} {info['mode']}, {info['bytes']:,} bytes")
    t.add_row("SHA-256", info["sha256"])
    t.add_row("camera", _v(" ".join(x for x in (ex.get("make"), ex.get("model")) if x)))
    t.add_row("software", _v(ex.get("software")))
    dates = info["dates"]
    verdict = {True: "consistent", False: "[red]disagree[/]", None: "fewer than two dates"}[dates["consistent"]]
    t.add_row("dates", f"DateTime {_v(ex.get('datetime'))}, original {_v(ex.get('datetime_original'))}, "
              f"digitized {_v(ex.get('datetime_digitized'))}: {verdict}")
    t.add_row("GPS", "present" if ex.get("gps") else "absent")
    t.add_row("orientation", _v(ex.get("orientation_text")))
    t.add_row("ICC profile", _v(info.get("icc_profile")))
    if xmp.get("present"):
        hist = "; ".join(" ".join(str(h.get(k)) for k in ("when", "action", "softwareAgent") if h.get(k))
                         for h in xmp.get("history") or [])
        t.add_row("XMP", f"creator tool {_v(xmp.get('creator_tool'))}; history: {escape(hist) or '-'}"
                  + (f"; derived from {escape(str(xmp['derived_from']))}" if xmp.get("derived_from") else "")
                  + (f" ({escape(xmp['error'])})" if xmp.get("error") else ""))
    else:
        t.add_row("XMP", "absent")
    t.add_row("IPTC", _v(iptc.get("originating_program")) if iptc.get("present") else "absent")
    if c2.get("present"):
        acts = ", ".join(a["action"] + (f" ({a['software_agent']})" if a.get("software_agent") else "") for a in c2.get("actions") or [])
        state = c2.get("validation_state")
        t.add_row("C2PA", f"{_v(c2.get('claim_generator'))}: {'[green]' if c2.get('valid') else '[red]'}{escape(str(state))}[/]; "
                  f"actions: {escape(acts) or '-'}")
    else:
        t.add_row("C2PA", "absent" if c2.get("present") is False else f"[dim]{escape(str(c2.get('note')))}[/]")
    if jp:
        kind = "standard IJG tables (typical of software)" if jp["standard"] else "non-standard tables (typical of cameras, some editors)"
        t.add_row("JPEG", f"{jp['coding']}, {jp['subsampling']}, quality ~{jp['quality']}, {kind}; {jp['scans']} scan(s), "
                  f"restart interval {jp['restart_interval']} ({jp['restart_markers']} RST)")
        t.add_row("segments", escape(", ".join(jp["app_segments"])) or "-")
        if jp["comments"]:
            t.add_row("comments", escape(" | ".join(jp["comments"])))
        if tables:
            for k, q in jp["quantization_tables"].items():
                t.add_row(f"table {k}", "\n".join(" ".join(f"{v:3d}" for v in row) for row in q))
    if th.get("present"):
        if th.get("matches") is None:
            verdict = escape(str(th.get("error", "not compared")))
        else:
            verdict = "matches the image" if th["matches"] else "[red]differs from the image[/]"
            verdict += f" (mean difference {th['mean_difference']}, worst cell {th['worst_cell_difference']})"
        t.add_row("thumbnail", f"{th.get('width')}x{th.get('height')}, {verdict}")
    else:
        t.add_row("thumbnail", "absent")
    if info["flags"]:
        t.add_row("flags", "\n".join(("[red]warning[/]: " if f["level"] == "warning" else "[dim]info[/]: ")
                                     + f"{escape(f['flag'])} [dim]({escape(f['evidence'])})[/]" for f in info["flags"]))
    else:
        t.add_row("flags", "none")
    return t
