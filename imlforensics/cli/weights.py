"""``imlf weights ...``: import, pull, push, list, locate and remove deep-model weights."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from ..errors import ImlfError, UnknownDetector
from .common import EXIT_FAILED, err, escape, fail, out

app = typer.Typer(no_args_is_help=True, help="Manage deep-model weights (cached in the user's cache folder).")


def _run(action, *args, **kwargs):
    """Call a library function; a usage problem exits 2, any other failure 1, both in one line."""
    try:
        return action(*args, **kwargs)
    except UnknownDetector as exc:
        raise fail(str(exc))
    except ImlfError as exc:
        raise fail(str(exc), EXIT_FAILED)


@app.command("import")
def import_(
    model: str = typer.Argument(..., help="Model name (see `imlf weights list`)."),
    file: Path = typer.Argument(..., help="The authors' checkpoint (.pth, .pt, .pth.tar, .bin) or a safetensors file."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace weights already cached for this model."),
    verify: bool = typer.Option(True, "--verify/--no-verify", help="Check the file against the official SHA-256 when the model card pins one."),
) -> None:
    """Convert the authors' checkpoint to safetensors in the cache, never executing code from it."""
    from ..weights import import_weights, sidecar

    path = _run(import_weights, model, file, overwrite=overwrite, verify=verify)
    info = sidecar(model)
    for note in info.get("notes", []):
        err.print(f"imlf: {escape(note)}")
    err.print(f"imported {info.get('keys')} tensors ({info.get('parameters', 0) / 1e6:.2f} M parameters) "
              f"into {escape(str(path))}")


@app.command()
def pull(
    model: str = typer.Argument(..., help="Model name."),
    repo: Optional[str] = typer.Option(None, "--repo", help="Hub repo OWNER/NAME (default: the model card's mirror)."),
    revision: Optional[str] = typer.Option(None, "--revision", help="Branch, tag or commit (default: the card's, else main)."),
    filename: Optional[str] = typer.Option(None, "--filename", help="File in the repo (default: the card's, else MODEL.safetensors)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace weights already cached for this model."),
) -> None:
    """Download converted safetensors from the Hugging Face Hub (HF_ENDPOINT, HF_HUB_OFFLINE, HF_HOME, HF_TOKEN apply)."""
    from ..weights import pull_weights, sidecar

    path = _run(pull_weights, model, repo=repo, revision=revision, filename=filename, overwrite=overwrite)
    src = sidecar(model).get("source", {})
    check = "hash verified against the card" if src.get("hash_pinned") else "no hash pinned by the card"
    err.print(f"pulled {src.get('repo')}/{src.get('file')}@{src.get('revision')} ({check}) into {escape(str(path))}")


@app.command()
def push(
    model: str = typer.Argument(..., help="Model name."),
    repo: str = typer.Option(..., "--repo", help="Hub repo OWNER/NAME to upload to (created if needed)."),
    private: bool = typer.Option(False, "--private", help="Create the repo as private."),
) -> None:
    """Upload the cached safetensors and a model card to a Hub repo (refused when the license forbids it)."""
    from ..weights.hub import push_weights

    url = _run(push_weights, model, repo, private=private)
    err.print(f"pushed {model} to {url}")


@app.command("list")
def list_(json_out: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")) -> None:
    """Every deep model and whether its weights are cached."""
    from ..weights.cache import list_weights

    rows = list_weights()
    if json_out:
        sys.stdout.write(json.dumps(rows, indent=1) + "\n")
        return
    table = Table(title="imlf weights", title_justify="left")
    for col in ("model", "cached", "size MB", "source", "license"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(r["name"], "yes" if r["cached"] else "no", "-" if r["size_mb"] is None else str(r["size_mb"]),
                      r["source"] or "-", r["license"])
    out.print(table)


@app.command()
def path(model: Optional[str] = typer.Argument(None, help="Model name; without it, the cache folder.")) -> None:
    """Print where weights are cached (the folder, or one model's safetensors file)."""
    from ..weights.cache import cache_root, cached_weights, missing_message
    from ..weights.cards import load_card

    if model is None:
        sys.stdout.write(f"{cache_root() / 'weights'}\n")
        return
    card = _run(load_card, model)
    found = cached_weights(model)
    if found is None:
        raise fail(missing_message(card), EXIT_FAILED)
    sys.stdout.write(f"{found}\n")


@app.command()
def remove(model: str = typer.Argument(..., help="Model name.")) -> None:
    """Delete a model's cached weights."""
    from ..weights.cache import remove_weights, weights_dir

    if _run(remove_weights, model):
        err.print(f"removed {escape(str(weights_dir(model)))}")
    else:
        err.print(f"imlf: no cached weights for {model}")
