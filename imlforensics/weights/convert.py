"""Reading the authors' checkpoints safely and converting them into the cache.

The authors publish pickled PyTorch checkpoints. They are read with torch's weights-only unpickler,
whose allow-list admits tensors, storages, OrderedDict and plain containers; the one extra type
admitted is ``argparse.Namespace`` (training arguments stored beside the weights). Anything else
(a class, a function, ``os.system``) is refused before it is constructed, so importing a hostile
file runs no code.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import pickle
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .._version import __version__
from ..errors import ImlfError
from .cache import (
    SIDECAR_FILE,
    WEIGHTS_FILE,
    WeightsError,
    WeightsMissing,
    cached_weights,
    missing_message,
    sha256_file,
    sidecar,
    weights_dir,
)
from .cards import ModelCard, load_card

ALLOWED_GLOBALS: list[Any] = [argparse.Namespace]
_CONTAINER_KEYS = ("model", "state_dict", "model_state_dict", "net", "module")



def read_checkpoint(path: Path) -> Any:
    """Load a checkpoint file without executing code from it (safetensors or a torch pickle)."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise WeightsError(f"{path}: empty file")
    if _is_safetensors(path):
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:  # safetensors raises its own error types
            raise WeightsError(f"{path}: not a readable safetensors file ({exc})") from None
    with open(path, "rb") as f:
        magic = f.read(2)
    if magic[:2] != b"PK" and magic[:1] != b"\x80":
        raise WeightsError(f"{path}: not a PyTorch checkpoint (neither a zip archive nor a pickle)")
    try:
        with torch.serialization.safe_globals(ALLOWED_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=_is_zip(path))
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        if found:
            raise WeightsError(
                f"{path}: refused: the checkpoint pickles {found.group(1)}, which is not on the allow-list "
                "(tensors, plain containers, argparse.Namespace); nothing from it was executed") from None
        detail = re.search(r"WeightsUnpickler error:\s*(.+)", str(exc))
        raise WeightsError(f"{path}: not a readable PyTorch checkpoint"
                           f"{f' ({detail.group(1).strip()})' if detail else ''}") from None
    except Exception as exc:  # a damaged file can fail anywhere inside the unpickler
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise WeightsError(f"{path}: not a readable PyTorch checkpoint ({type(exc).__name__}"
                           f"{': ' + first if first else ''})") from None


def _is_safetensors(path: Path) -> bool:
    if path.suffix == ".safetensors":
        return True
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{"  # 8-byte little-endian header size, then JSON


def _is_zip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == b"PK\x03\x04"


def extract_state_dict(obj: Any, card: ModelCard | None = None) -> tuple[dict[str, Any], list[str]]:
    """Unwrap a checkpoint container to the model's state_dict; return it with notes on what was dropped.

    Looks under the card's ``state_dict_key`` first, then the usual container keys (``model``,
    ``state_dict``, ...), else takes the object as a bare state_dict. ``module.`` prefixes (from
    DataParallel) are removed; optimizer state and other entries are left behind.
    """
    import torch

    notes: list[str] = []
    if not isinstance(obj, Mapping):
        raise WeightsError(f"the checkpoint holds a {type(obj).__name__}, not a state_dict or a dict containing one")
    sd: Any = obj
    keys = ([card.state_dict_key] if card and card.state_dict_key else []) + list(_CONTAINER_KEYS)
    for key in keys:
        inner = obj.get(key)
        if isinstance(inner, Mapping) and any(isinstance(v, torch.Tensor) for v in inner.values()):
            sd = inner
            dropped = sorted(str(k) for k in obj if k != key)
            if dropped:
                notes.append(f"took '{key}', left behind: {', '.join(dropped)}")
            break
    tensors: dict[str, Any] = {}
    skipped = []
    for k, v in sd.items():
        if isinstance(v, torch.Tensor):
            k = str(k)
            tensors[k[len("module."):] if k.startswith("module.") else k] = v
        else:
            skipped.append(str(k))
    if skipped:
        notes.append(f"ignored {len(skipped)} non-tensor entries ({', '.join(skipped[:5])}{', ...' if len(skipped) > 5 else ''})")
    if not tensors:
        raise WeightsError("the checkpoint holds no tensors")
    return tensors, notes


def check_state_dict(shapes: Mapping[str, tuple[int, ...]], card: ModelCard) -> None:
    """Compare key names and shapes with the architecture; raise WeightsError listing every difference."""
    if card.kind == "super-resolution":
        return _check_spandrel(shapes, card)
    model = card.build("meta")
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(set(expected) - set(shapes))
    unexpected = sorted(set(shapes) - set(expected))
    wrong = sorted(k for k in set(expected) & set(shapes) if tuple(shapes[k]) != expected[k])
    if not (missing or unexpected or wrong):
        return
    parts = []
    for label, keys in (("missing", missing), ("unexpected", unexpected)):
        if keys:
            parts.append(f"{len(keys)} {label} keys ({', '.join(keys[:4])}{', ...' if len(keys) > 4 else ''})")
    if wrong:
        k = wrong[0]
        parts.append(f"{len(wrong)} shape mismatches ({k}: file {tuple(shapes[k])}, {card.name} {expected[k]})")
    raise WeightsError(f"these weights do not fit {card.name}: " + "; ".join(parts))


def _check_spandrel(shapes: Mapping[str, tuple[int, ...]], card: ModelCard) -> None:
    """A super-resolution card names a spandrel architecture (``arch_options.arch``): the keys and
    shapes must be that architecture's, as spandrel recognises them."""
    import spandrel
    import torch

    arch = str(card.arch_options.get("arch", ""))
    try:
        support = spandrel.MAIN_REGISTRY.get(arch)
    except KeyError:
        raise WeightsError(f"model card {card.name}: spandrel knows no architecture {arch!r}") from None
    meta = {k: torch.empty(tuple(v), device="meta") for k, v in shapes.items()}
    if not support.detect(meta):
        raise WeightsError(f"these weights do not fit {card.name}: spandrel does not recognise them as {arch}")


def _safetensors_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as exc:
        raise WeightsError(f"{path}: not a readable safetensors file ({exc})") from None




def _store(card: ModelCard, tensors: dict[str, Any], info: dict[str, Any], overwrite: bool) -> Path:
    from safetensors.torch import save_file

    folder = weights_dir(card.name)
    target = folder / WEIGHTS_FILE
    if target.exists() and not overwrite:
        raise WeightsError(f"weights for {card.name} are already cached in {folder} (use --overwrite to replace them)")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".model.", suffix=".tmp")
        os.close(fd)
        try:
            save_file({k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}, tmp,
                      metadata={"model": card.name, "format": "pt"})
            info = {**info, "model": card.name, "architecture": card.architecture, "keys": len(tensors),
                    "parameters": int(sum(v.numel() for v in tensors.values())),
                    "safetensors_sha256": sha256_file(Path(tmp)), "imlforensics": __version__,
                    "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
            side = folder / SIDECAR_FILE
            side_tmp = folder / f".{SIDECAR_FILE}.tmp"
            side_tmp.write_text(json.dumps(info, indent=1) + "\n")
            os.replace(tmp, target)
            os.replace(side_tmp, side)
        finally:
            for leftover in (Path(tmp), folder / f".{SIDECAR_FILE}.tmp"):
                leftover.unlink(missing_ok=True)
    except OSError as exc:
        raise WeightsError(f"cannot write to the weights cache {folder}: {exc.strerror or exc}") from None
    return target


def import_weights(name: str, file: Path, overwrite: bool = False, verify: bool = True) -> Path:
    """Convert the authors' checkpoint ``file`` for model ``name`` into the cache; return the cached path.

    ``file`` may also be the authors' zip archive when the card names the checkpoint inside it
    (``member``; TruFor's ``TruFor_weights.zip``): the archive is checked against the card's MD5 or
    SHA-256 and the member is read from a temporary copy in the cache."""
    from .sources import extract_member, zip_member

    card = load_card(name)
    file = Path(file)
    if card.kind == "noise-residual":  # Noiseprint's TensorFlow checkpoints, Noiseprint++'s pickle
        from .noiseprint import noise_residual_tensors

        tensors, info = noise_residual_tensors(card, file, verify)
        return _store(card, tensors, info, overwrite)
    digest = sha256_file(file) if file.is_file() else ""
    inner = zip_member(file, card.member) if file.is_file() else None
    if inner is None:
        return _import_checkpoint(card, file, file, digest, overwrite, verify, {})
    if cached_weights(card.name) is not None and not overwrite:
        raise WeightsError(f"weights for {card.name} are already cached in {weights_dir(card.name)} "
                           "(use --overwrite to replace them)")
    md5 = _md5_file(file)
    if verify and card.official_md5 and md5 != card.official_md5:
        raise WeightsError(f"{file}: MD5 {md5[:12]}... is not that of the official {card.name} archive "
                           f"({card.official_md5[:12]}...); use --no-verify to import it anyway")
    folder = weights_dir(card.name)
    tmp = folder / f".{card.member}.extracting"
    try:
        extract_member(file, card.member, tmp)
    except ImlfError as exc:
        raise WeightsError(str(exc)) from None
    try:
        extra = {"member": inner, "member_sha256": sha256_file(tmp), "md5": md5,
                 "official_md5_checked": bool(card.official_md5 and verify)}
        return _import_checkpoint(card, tmp, file, digest, overwrite, verify and not card.official_md5, extra)
    finally:
        tmp.unlink(missing_ok=True)


def _md5_file(path: Path) -> str:
    import hashlib

    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _import_checkpoint(card: ModelCard, path: Path, named: Path, digest: str, overwrite: bool, verify: bool,
                       extra: dict[str, Any]) -> Path:
    """Read checkpoint ``path`` (the file the user named is ``named``, SHA-256 ``digest``) into the cache."""
    if verify and card.official_sha256 and digest and digest != card.official_sha256:
        raise WeightsError(f"{named}: SHA-256 {digest[:12]}... is not that of the official {card.name} file "
                           f"({card.official_sha256[:12]}...); use --no-verify to import it anyway")
    tensors, notes = extract_state_dict(read_checkpoint(path), card)
    check_state_dict({k: tuple(v.shape) for k, v in tensors.items()}, card)
    info = {"source": {"kind": "import", "file": named.name, "sha256": digest,
                       "official_hash_checked": bool(card.official_sha256 and verify), **extra}, "notes": notes}
    return _store(card, tensors, info, overwrite)


def load_weights(name: str, file: Path | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The state_dict for ``name``: from ``file`` (any supported format) or the cache."""
    card = load_card(name)
    if file is None:
        cached = cached_weights(name)
        if cached is None:
            raise WeightsMissing(missing_message(card))
        file, info = cached, sidecar(name)
    else:
        info = {"source": {"kind": "file", "file": str(file)}}
    tensors, notes = extract_state_dict(read_checkpoint(Path(file)), card)
    check_state_dict({k: tuple(v.shape) for k, v in tensors.items()}, card)
    return tensors, {**info, "notes": notes}


def load_model(name: str, kind: str, what: str, file: str | Path | None = None) -> tuple[ModelCard, dict[str, Any]]:
    """The card of ``name`` and its weights (:func:`load_weights`), refusing a card of another
    ``kind`` in one line that says the model is not ``what``."""
    card = load_card(name)
    if card.kind != kind:
        raise WeightsError(f"{name} is not {what} (its card's kind is {card.kind})")
    return card, load_weights(name, Path(file) if file else None)[0]
