"""Noiseprint and Noiseprint++ weights: conversion of the authors' files and loading of the networks.

* Noiseprint (Cozzolino & Verdoliva, IEEE TIFS 2020) is published as 51 TensorFlow 1 checkpoints,
  ``nets/net_jpgQ/model.{index,data-00000-of-00001}`` for Q = 51..101 (101: not JPEG). They are
  read with :mod:`.tfbundle` (no TensorFlow) and converted to :class:`~imlforensics.models.dncnn.DnCNN`
  state dicts. The cache holds all imported qualities in one safetensors file, keys ``q<Q>.<key>``.
* Noiseprint++ (Guillaro et al., CVPR 2023) is ``noiseprint++.th``, a torch pickle
  ``{'network': state_dict, 'global_step'}`` saved on cuda:0; it is read with
  ``torch.load(weights_only=True, map_location='cpu')`` (tensors and plain containers only) and
  stored under its own keys.

``weights`` arguments below may be ``None`` (the cache), a folder of ``net_jpgQ`` checkpoints, a
single checkpoint (``model.index`` or ``noiseprint++.th``) or a converted safetensors file.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..models.dncnn import (
    DnCNN,
    from_tensorflow,
    load_numpy_state,
    noiseprint,
    noiseprint_pp,
)
from .cache import WeightsError
from .tfbundle import CheckpointError, read_checkpoint

QUALITIES = tuple(range(51, 102))
_NET_DIR = re.compile(r"^net_jpg(\d+)$")
_PREFIX = re.compile(r"^q(\d+)\.(.+)$")


class NoiseprintWeightsError(WeightsError):
    """Noiseprint / Noiseprint++ weights are missing or do not fit the network."""


def convert_noiseprint_checkpoint(index_path: str | Path, data_path: str | Path | None = None) -> dict[str, np.ndarray]:
    """One of the authors' TF1 checkpoints (``model.index`` [+ data file]) as a DnCNN state dict."""
    tf_vars = read_checkpoint(index_path, data_path)
    try:
        state = from_tensorflow(tf_vars)
    except KeyError as exc:
        raise CheckpointError(f"{Path(index_path)}: not a Noiseprint network (no variable {exc.args[0]})") from None
    _check_fits(state, noiseprint(), str(index_path))
    return state


def _check_fits(state: dict[str, np.ndarray], model: DnCNN, source: str) -> None:
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    got = {k: tuple(np.shape(v)) for k, v in state.items() if not k.endswith("num_batches_tracked")}
    if expected != got:
        wrong = sorted(set(expected) ^ set(got)) or sorted(k for k in expected if expected[k] != got[k])
        raise NoiseprintWeightsError(f"{source}: the tensors do not fit the network ({', '.join(wrong[:3])})")


def checkpoint_folders(folder: str | Path) -> dict[int, Path]:
    """``net_jpgQ`` sub-folders holding a ``model.index`` under ``folder`` (or ``folder/nets``), by Q."""
    folder = Path(folder)
    found: dict[int, Path] = {}
    for base in (folder, folder / "nets"):
        if not base.is_dir():
            continue
        for entry in base.iterdir():
            m = _NET_DIR.match(entry.name)
            if m and int(m.group(1)) in QUALITIES and (entry / "model.index").is_file():
                found[int(m.group(1))] = entry
    return dict(sorted(found.items()))


def read_noiseprint_folder(folder: str | Path) -> dict[int, dict[str, np.ndarray]]:
    """Every ``net_jpgQ`` checkpoint in ``folder``, converted; raises when there is none."""
    nets = checkpoint_folders(folder)
    if not nets:
        raise NoiseprintWeightsError(f"{folder}: no net_jpgQ/model.index checkpoints (Q = 51..101) in this folder")
    return {q: convert_noiseprint_checkpoint(p / "model.index") for q, p in nets.items()}


def bank_to_flat(bank: dict[int, dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """{Q: state} -> one dict with keys ``q<Q>.<key>`` (the cache's layout)."""
    return {f"q{q}.{k}": v for q, state in bank.items() for k, v in state.items()}


def flat_to_bank(flat: dict[str, np.ndarray], source: str = "weights") -> dict[int, dict[str, np.ndarray]]:
    bank: dict[int, dict[str, np.ndarray]] = {}
    for key, value in flat.items():
        m = _PREFIX.match(key)
        if not m or int(m.group(1)) not in QUALITIES:
            raise NoiseprintWeightsError(f"{source}: unexpected key {key!r} (expected q<Q>.<tensor>, Q = 51..101)")
        bank.setdefault(int(m.group(1)), {})[m.group(2)] = np.asarray(value)
    for q, state in bank.items():
        _check_fits(state, noiseprint(), f"{source} (quality {q})")
    return dict(sorted(bank.items()))


def _read_safetensors(path: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types
        raise NoiseprintWeightsError(f"{path}: not a readable safetensors file ({exc})") from None


def read_noiseprint_pp(path: str | Path) -> dict[str, np.ndarray]:
    """``noiseprint++.th`` (or a converted safetensors file) as a numpy state dict, checked against the network."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise NoiseprintWeightsError(f"{path}: no such file")
    if path.suffix == ".safetensors":
        state = _read_safetensors(path)
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # a refused global, a damaged zip or pickle
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise NoiseprintWeightsError(f"{path}: not a readable Noiseprint++ checkpoint ({first[:160]})") from None
        if isinstance(obj, dict) and isinstance(obj.get("network"), dict):
            obj = obj["network"]
        if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
            raise NoiseprintWeightsError(f"{path}: expected {{'network': state_dict}} or a state_dict")
        state = {str(k): v.detach().cpu().numpy() for k, v in obj.items()}
    _check_fits(state, noiseprint_pp(), str(path))
    return state


# ---------------------------------------------------------------- import into the cache


def _verify(file: Path, expected: str, label: str) -> str:
    from .cache import sha256_file

    digest = sha256_file(file)
    if expected and digest != expected.lower():
        raise NoiseprintWeightsError(f"{file}: SHA-256 {digest[:12]}... is not that of the official {label} "
                                     f"({expected[:12]}...); use --no-verify to import it anyway")
    return digest


def noise_residual_tensors(card, source: str | Path, verify: bool = True) -> tuple[dict, dict]:
    """What ``imlf weights import`` stores for a ``noise-residual`` card: (torch tensors, sidecar info).

    ``noiseprint``: ``source`` is a folder of ``net_jpgQ`` checkpoints (the authors' ``nets``
    folder or one holding some of its sub-folders) or one ``model.index``; with ``verify`` each
    file's SHA-256 must be the card's. ``noiseprint++``: ``source`` is ``noiseprint++.th``."""
    import torch

    source = Path(source)
    if card.name == "noiseprint":
        if source.is_dir():
            folders = checkpoint_folders(source)
        elif source.name == "model.index" and _NET_DIR.match(source.parent.name):
            folders = {int(_NET_DIR.match(source.parent.name).group(1)): source.parent}
        else:
            folders = {}
        if not folders:
            raise NoiseprintWeightsError(f"{source}: expected a folder of net_jpgQ/model.index checkpoints "
                                         "(Q = 51..101), as in grip-unina/noiseprint's noiseprint/nets")
        pinned = card.official.get("files_sha256", {})
        digests = {}
        for q, folder in folders.items():
            for name in ("model.index", "model.data-00000-of-00001"):
                key = f"net_jpg{q}/{name}"
                if verify and not (folder / name).is_file():
                    raise NoiseprintWeightsError(f"{folder / name}: no such file")
                digests[key] = _verify(folder / name, pinned.get(key, "") if verify else "", key)
        bank = {q: convert_noiseprint_checkpoint(f / "model.index") for q, f in folders.items()}
        tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in bank_to_flat(bank).items()}
        info = {"source": {"kind": "import", "file": str(source.name), "qualities": sorted(bank),
                           "sha256": digests, "official_hash_checked": bool(verify)}, "notes": []}
        missing = [q for q in QUALITIES if q not in bank]
        if missing:
            info["notes"].append(f"{len(bank)} of 51 networks imported; images of other JPEG qualities use the "
                                 "nearest imported quality")
        return tensors, info
    digest = _verify(source, card.official_sha256 if verify else "", card.name) if source.is_file() else ""
    state = read_noiseprint_pp(source)
    tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}
    info = {"source": {"kind": "import", "file": source.name, "sha256": digest,
                       "official_hash_checked": bool(verify and card.official_sha256)},
            "notes": ["took 'network', left behind: global_step"] if source.suffix == ".th" else []}
    return tensors, info


# ---------------------------------------------------------------- networks for the detectors


def _cached_file(name: str) -> Path | None:
    from .cache import cached_weights

    return cached_weights(name)


def _missing(name: str) -> NoiseprintWeightsError:
    from .cache import missing_message
    from .cards import load_card

    return NoiseprintWeightsError(missing_message(load_card(name)))


def noiseprint_qualities(weights: str | Path | None = None) -> list[int]:
    """The qualities for which a Noiseprint network is available."""
    if weights is None:
        cached = _cached_file("noiseprint")
        if cached is None:
            raise _missing("noiseprint")
        weights = cached
    weights = Path(weights)
    if weights.is_dir():
        return list(checkpoint_folders(weights))
    if weights.name == "model.index":
        m = _NET_DIR.match(weights.parent.name)
        return [int(m.group(1))] if m else [QUALITIES[-1]]
    if weights.is_file():
        from safetensors import safe_open

        try:
            with safe_open(str(weights), framework="numpy") as f:
                keys = list(f.keys())
        except Exception as exc:
            raise NoiseprintWeightsError(f"{weights}: not a readable safetensors file ({exc})") from None
        return sorted({int(m.group(1)) for m in map(_PREFIX.match, keys) if m})
    raise NoiseprintWeightsError(f"{weights}: no such file or folder")


def noiseprint_network(quality: int, weights: str | Path | None = None) -> DnCNN:
    """The Noiseprint network for ``quality`` in eval mode."""
    path = Path(weights) if weights is not None else _cached_file("noiseprint")
    if path is None:
        raise _missing("noiseprint")
    if path.is_dir():
        folders = checkpoint_folders(path)
        if quality not in folders:
            raise NoiseprintWeightsError(f"{path}: no net_jpg{quality} checkpoint")
        state = convert_noiseprint_checkpoint(folders[quality] / "model.index")
    elif path.name == "model.index":
        state = convert_noiseprint_checkpoint(path)
    else:
        bank = flat_to_bank(_read_safetensors(path), str(path))
        if quality not in bank:
            raise NoiseprintWeightsError(f"{path}: no network for quality {quality}")
        state = bank[quality]
    return load_numpy_state(noiseprint(), state)


def noiseprint_pp_network(weights: str | Path | None = None) -> DnCNN:
    """The Noiseprint++ network in eval mode."""
    path = Path(weights) if weights is not None else _cached_file("noiseprint++")
    if path is None:
        raise _missing("noiseprint++")
    return load_numpy_state(noiseprint_pp(), read_noiseprint_pp(path))


def cached_status(name: str) -> str:
    """For ``imlf models``: whether (and which) weights are cached."""
    cached = _cached_file(name)
    if cached is None:
        return "not cached"
    if name == "noiseprint":
        return f"cached ({len(noiseprint_qualities(cached))} of 51 qualities)"
    return "cached"
