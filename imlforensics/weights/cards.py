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
import re
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
    # or a model make-mask uses: "super-resolution" (architecture detected by spandrel), "features" (a backbone)
    kind: str = "detector"
    cite: str = ""  # short citation (first author, venue, year) for `imlf models`

    @property
    def state_dict_key(self) -> str:
        return str(self.official.get("state_dict_key", ""))

    @property
    def official_sha256(self) -> str:
        return str(self.official.get("sha256", "")).lower()

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
KINDS = ("detector", "super-resolution", "features")
# a card's name becomes a folder of the weights cache: nothing that could leave it
_NAME = re.compile(r"[a-z0-9][a-z0-9._+-]{0,63}")


def parse_card(text: str, source: str = "<card>") -> ModelCard:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CardError(f"model card {source} is not valid TOML: {exc}") from None
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise CardError(f"model card {source} lacks {', '.join(missing)}")
    known = set(_REQUIRED) | {"arch_options", "official", "hub", "preprocess", "postprocess", "kind", "cite"}
    extra = sorted(set(data) - known)
    if extra:
        raise CardError(f"model card {source} has unknown keys: {', '.join(extra)}")
    name = data["name"]
    if not (isinstance(name, str) and _NAME.fullmatch(name) and ".." not in name):
        raise CardError(f"model card {source}: name {name!r} is not a plain model name "
                        "(lower-case letters, digits and . _ + -, at most 64)")
    if data.get("kind", "detector") not in KINDS:
        raise CardError(f"model card {source}: kind must be one of {', '.join(KINDS)}")
    return ModelCard(**data)


def _card_folder():
    # a source checkout or an editable install reads weights/ directly; a wheel has the package data
    checkout = Path(__file__).resolve().parents[2] / "weights"
    if (checkout / "README.md").is_file():
        return checkout
    return resources.files("imlforensics._cards")


@lru_cache(maxsize=None)
def _read_cards() -> tuple[dict[str, ModelCard], tuple[str, ...]]:
    cards: dict[str, ModelCard] = {}
    problems: list[str] = []
    folders = [_card_folder()] + [Path(p) for p in os.environ.get("IMLF_CARDS", "").split(os.pathsep) if p]
    for i, folder in enumerate(folders):
        if not folder.is_dir():
            problems.append(f"IMLF_CARDS names {folder}, which is not a folder")
            continue
        for entry in sorted(folder.iterdir(), key=lambda p: p.name):
            if entry.name.endswith(".toml"):
                try:
                    card = parse_card(entry.read_text(encoding="utf-8"), entry.name)
                except (CardError, OSError, UnicodeDecodeError) as exc:
                    if i == 0:  # a card shipped with the package is broken: a bug, not a user's file
                        raise
                    problems.append(str(exc) if isinstance(exc, CardError) else f"model card {entry}: cannot read it")
                    continue
                cards[card.name] = card
    return cards, tuple(problems)


def all_cards() -> dict[str, ModelCard]:
    """Every model card shipped with the package, plus those in the folders named by ``$IMLF_CARDS``
    (``os.pathsep``-separated; for one's own models), by name. A card there that cannot be read is
    left out and named by :func:`card_problems`, so one bad file breaks no other model."""
    return _read_cards()[0]


def card_problems() -> list[str]:
    """One line per card from ``$IMLF_CARDS`` that could not be read."""
    return list(_read_cards()[1])


all_cards.cache_clear = _read_cards.cache_clear  # type: ignore[attr-defined]  (tests reset the cards)


def load_card(name: str) -> ModelCard:
    cards = all_cards()
    if name not in cards:
        problems = card_problems()
        extra = f"; cards left out: {'; '.join(problems)}" if problems else ""
        raise UnknownDetector(f"no model card for {name!r} (deep models: {', '.join(sorted(cards)) or 'none'}){extra}")
    return cards[name]
