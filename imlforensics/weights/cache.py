"""The weights cache: where converted weights live, their sidecars, listing and removal.

Layout of the cache (``imlf weights path``)::

    <cache>/weights/<model>/model.safetensors   the weights, keys exactly as the architecture's
    <cache>/weights/<model>/model.json          where they came from: file name, SHA-256, date, ...

``<cache>`` is ``$IMLF_CACHE`` when set, else the platform's user cache folder
(``$XDG_CACHE_HOME/imlforensics``, ``~/.cache/imlforensics``, ``~/Library/Caches/imlforensics``,
``%LOCALAPPDATA%\\imlforensics\\Cache``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from ..errors import ImlfError
from ..io.files import UnsafePath, child_path
from .cards import ModelCard, all_cards, load_card

WEIGHTS_FILE = "model.safetensors"
SIDECAR_FILE = "model.json"


class WeightsError(ImlfError):
    """Weights cannot be read, verified, downloaded or stored."""


class WeightsMissing(WeightsError):
    """A deep model was asked for but no weights are available."""



def cache_root() -> Path:
    """The folder imlforensics caches downloads in (see the module docstring)."""
    if os.environ.get("IMLF_CACHE"):
        return Path(os.environ["IMLF_CACHE"]).expanduser()
    if sys.platform == "win32":
        return Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local")) / "imlforensics" / "Cache"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "imlforensics"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "imlforensics"


def weights_dir(name: str) -> Path:
    """The cache folder of model ``name``; a name that would lead outside the cache is refused,
    whatever a model card says."""
    try:
        return child_path(cache_root() / "weights", name, "model name")
    except UnsafePath as exc:
        raise WeightsError(str(exc)) from None


def cached_weights(name: str) -> Path | None:
    """Path of the cached safetensors of ``name``, or None."""
    path = weights_dir(name) / WEIGHTS_FILE
    return path if path.is_file() else None


def sidecar(name: str) -> dict[str, Any]:
    try:
        return json.loads((weights_dir(name) / SIDECAR_FILE).read_text())
    except (OSError, ValueError):
        return {}


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def missing_message(card: ModelCard) -> str:
    msg = (f"no weights for {card.name}: download {card.where_to_get()} (official, license {card.license}) "
           f"and run `imlf weights import {card.name} FILE`")
    if card.hub.get("repo"):
        msg += f", or run `imlf weights pull {card.name}`"
    return msg




def list_weights() -> list[dict[str, Any]]:
    """One row per deep model: whether weights are cached, where from, and how large."""
    rows = []
    for name, card in sorted(all_cards().items()):
        path = cached_weights(name)
        info = sidecar(name) if path else {}
        src = info.get("source", {})
        rows.append({"name": name, "cached": path is not None, "path": str(path) if path else None,
                     "size_mb": round(path.stat().st_size / 1e6, 1) if path else None,
                     "source": src.get("repo") or src.get("file"), "source_sha256": src.get("sha256"),
                     "created": info.get("created"), "license": card.license})
    return rows


def remove_weights(name: str) -> bool:
    """Delete the cached weights of ``name``; False when there were none. Only a real folder
    inside the cache is deleted (never the target of a symbolic link)."""
    load_card(name)
    folder = weights_dir(name)
    if folder.is_symlink():
        raise WeightsError(f"refusing to delete {folder}: it is a symbolic link, not a folder of the cache")
    if not folder.exists():
        return False
    try:
        shutil.rmtree(folder)
    except OSError as exc:
        raise WeightsError(f"cannot delete {folder}: {exc.strerror or exc}") from None
    return True
