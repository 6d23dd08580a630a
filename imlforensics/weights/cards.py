"""Model cards: what the project knows about each deep model's weights.

One TOML file per model in the repository's ``weights/`` folder (installed as the package data
``imlforensics._cards``): the architecture class, where the authors publish the weights, their
license, the checkpoint's container layout, an optional Hugging Face Hub mirror, and the exact
preprocessing and postprocessing of the official pipeline. Detectors, ``imlf weights`` and the
tests all read the cards, so a fact is written down once.
"""

from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import ImlfError, UnknownDetector

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


class CardError(ImlfError):
    """A model card is missing or malformed."""


@dataclass(frozen=True)
class ModelCard:
    name: str
    summary: str
    paper: str
    architecture: str
    license: str
    redistribution: bool
    training: str
    arch_options: dict[str, Any] = field(default_factory=dict)
    official: dict[str, Any] = field(default_factory=dict)
    hub: dict[str, Any] = field(default_factory=dict)
    preprocess: dict[str, Any] = field(default_factory=dict)
    postprocess: dict[str, Any] = field(default_factory=dict)
    # or a model make-mask uses: "super-resolution" (architecture detected by spandrel), "features" (a backbone);
    # "noise-residual": a network run by its own detector module (Noiseprint, Noiseprint++)
    kind: str = "detector"
    # where `imlf weights pull` fetches the weights, tried in order (see weights/sources.py)
    sources: tuple[dict[str, Any], ...] = ()
    # the licence's terms, shown before the first download; set = the user must accept them once
    license_terms: str = ""

    @property
    def state_dict_key(self) -> str:
        return str(self.official.get("state_dict_key", ""))

    @property
    def official_sha256(self) -> str:
        return str(self.official.get("sha256", "")).lower()

    @property
    def official_md5(self) -> str:
        """The MD5 the authors publish for their file (only where they publish no SHA-256)."""
        return str(self.official.get("md5", "")).lower()

    @property
    def member(self) -> str:
        """The checkpoint's file name inside the authors' zip archive, if they ship one."""
        return str(self.official.get("member", ""))

    @property
    def hub_filename(self) -> str:
        return str(self.hub.get("filename") or f"{self.name}.safetensors")

    def where_to_get(self) -> str:
        """One sentence naming the official download location."""
        files = ", ".join(self.official.get("files", [])) or "the checkpoint"
        urls = self.official.get("urls", [])
        return f"{files} from {urls[0]}" if urls else files

    def build(self, device: Any = None):
        """Instantiate the architecture (random weights) on ``device`` (``"meta"`` for shapes only)."""
        module_name, _, class_name = self.architecture.partition(":")
        try:
            cls = getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError) as exc:
            raise CardError(f"model card {self.name}: cannot import architecture {self.architecture} ({exc})") from None
        if device is None:
            return cls(**self.arch_options)
        import torch

        with torch.device(device):
            return cls(**self.arch_options)


_REQUIRED = ("name", "summary", "paper", "architecture", "license", "redistribution", "training")
KINDS = ("detector", "super-resolution", "features", "noise-residual")


def parse_card(text: str, source: str = "<card>") -> ModelCard:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CardError(f"model card {source} is not valid TOML: {exc}") from None
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise CardError(f"model card {source} lacks {', '.join(missing)}")
    known = set(_REQUIRED) | {"arch_options", "official", "hub", "preprocess", "postprocess", "kind", "sources",
                              "license_terms"}
    extra = sorted(set(data) - known)
    if extra:
        raise CardError(f"model card {source} has unknown keys: {', '.join(extra)}")
    if data.get("kind", "detector") not in KINDS:
        raise CardError(f"model card {source}: kind must be one of {', '.join(KINDS)}")
    from .sources import parse_sources

    data["sources"] = tuple(data.get("sources", ()))
    parse_sources(list(data["sources"]), source)  # checked now, so a bad card fails when it is read
    return ModelCard(**data)


def _card_folder():
    # a source checkout or an editable install reads weights/ directly; a wheel has the package data
    checkout = Path(__file__).resolve().parents[2] / "weights"
    if (checkout / "README.md").is_file():
        return checkout
    return resources.files("imlforensics._cards")


@lru_cache(maxsize=None)
def all_cards() -> dict[str, ModelCard]:
    """Every model card shipped with the package, plus those in the folders named by ``$IMLF_CARDS``
    (``os.pathsep``-separated; for one's own models), by name."""
    cards: dict[str, ModelCard] = {}
    folders = [_card_folder()] + [Path(p) for p in os.environ.get("IMLF_CARDS", "").split(os.pathsep) if p]
    for folder in folders:
        if not folder.is_dir():
            raise CardError(f"IMLF_CARDS names {folder}, which is not a folder")
        for entry in sorted(folder.iterdir(), key=lambda p: p.name):
            if entry.name.endswith(".toml"):
                card = parse_card(entry.read_text(encoding="utf-8"), entry.name)
                cards[card.name] = card
    return cards


def load_card(name: str) -> ModelCard:
    cards = all_cards()
    if name not in cards:
        raise UnknownDetector(f"no model card for {name!r} (deep models: {', '.join(sorted(cards)) or 'none'})")
    return cards[name]
