"""What every command shares: the consoles, exit codes, one-line errors, progress and option parsing."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console

from ..errors import UnknownDetector

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_FLAGGED = 0, 1, 2, 3

err = Console(stderr=True, highlight=False)
out = Console(highlight=False)


def fail(message: str, code: int = EXIT_USAGE) -> typer.Exit:
    """Print one error line (``message`` is plain text, never markup) and return the Exit to raise."""
    err.print(f"[red]imlf: error:[/] {escape(message)}", markup=True, soft_wrap=True)
    return typer.Exit(code)


def finite(value: Optional[float]) -> Optional[float]:
    """Option callback: refuse NaN and infinities (typer's min/max let NaN through)."""
    if value is not None and not math.isfinite(value):
        raise typer.BadParameter(f"{value} is not a finite number")
    return value


def warn_line(message: str) -> None:
    err.print(f"[yellow]imlf:[/] {escape(message)}", soft_wrap=True)


def escape(text: str) -> str:
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
    from ..detectors.registry import detector_class

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


def report_failure(name: str, reason: str, json_lines: bool) -> None:
    err.print(f"[red]imlf: error:[/] {escape(name)}: {escape(reason)}", soft_wrap=True)
    if json_lines:
        sys.stdout.write(json.dumps({"image": name, "error": reason}, ensure_ascii=False) + "\n")
        sys.stdout.flush()


class progress:
    """A rich progress bar on stderr for batches (no-op for one image or a non-terminal)."""

    def __init__(self, total: int, quiet: bool):
        self.total, self.enabled = total, total > 1 and err.is_terminal and not quiet

    def __enter__(self):
        if not self.enabled:
            return lambda: None
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

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


def start_engine(engine: str, address: Optional[str], actors: Optional[int],
                 gpus_per_actor: Optional[float]) -> Optional[dict[str, Any]]:
    """None for ``--engine local``; for ``ray``, join or start Ray and return the actor settings
    (``actors``: default one per GPU of the cluster at ``gpus_per_actor`` each, else 1;
    ``gpus``: default 1 when this machine has CUDA, else 0)."""
    if engine not in ("local", "ray"):
        raise fail(f"--engine {engine!r}: use local or ray")
    if engine == "local":
        if address or actors or gpus_per_actor is not None:
            raise fail("--address, --actors and --gpus-per-actor need --engine ray")
        return None
    from ..errors import ImlfError
    from ..runs.ray import cluster_gpus, connect, default_gpus_per_actor

    try:
        connect(address)
    except ImlfError as exc:
        raise fail(str(exc))
    gpus = default_gpus_per_actor() if gpus_per_actor is None else gpus_per_actor
    if actors is None:
        actors = max(1, int(cluster_gpus() / gpus)) if gpus else 1
    return {"actors": actors, "gpus_per_actor": gpus}


ENGINE_HELP = "local (this machine) or ray (a Ray cluster: see README)."
ADDRESS_HELP = "--engine ray: the cluster to join (e.g. auto, ray://head:10001); default: join or start a local instance."
ACTORS_HELP = "--engine ray: actors per deep model (default: one per GPU of the cluster, else 1)."
GPUS_HELP = "--engine ray: GPUs per actor, fractional allowed (default 1 when CUDA is present, else 0)."
