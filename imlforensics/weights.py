"""Weights for the deep models: the local cache, safe imports, Hugging Face Hub pulls and pushes.

Layout of the cache (``imlf weights path``)::

    <cache>/weights/<model>/model.safetensors   the weights, keys exactly as the architecture's
    <cache>/weights/<model>/model.json          where they came from: file name, SHA-256, date, ...

``<cache>`` is ``$IMLF_CACHE`` when set, else the platform's user cache folder
(``$XDG_CACHE_HOME/imlforensics``, ``~/.cache/imlforensics``, ``~/Library/Caches/imlforensics``,
``%LOCALAPPDATA%\\imlforensics\\Cache``).

The authors publish pickled PyTorch checkpoints. They are read with torch's weights-only unpickler,
whose allow-list admits tensors, storages, OrderedDict and plain containers; the one extra type
admitted is ``argparse.Namespace`` (training arguments stored beside the weights). Anything else
(a class, a function, ``os.system``) is refused before it is constructed, so importing a hostile
file runs no code. Hub downloads go through ``huggingface_hub`` and so honour ``HF_ENDPOINT``,
``HF_HUB_OFFLINE``, ``HF_HOME`` and the user's token.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import hashlib
import json
import logging
import os
import pickle
import re
import shutil
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from . import __version__
from .cards import ModelCard, load_card
from .errors import ImlfError

WEIGHTS_FILE = "model.safetensors"
SIDECAR_FILE = "model.json"
ALLOWED_GLOBALS: list[Any] = [argparse.Namespace]
_CONTAINER_KEYS = ("model", "state_dict", "model_state_dict", "net", "module")


class WeightsError(ImlfError):
    """Weights cannot be read, verified, downloaded or stored."""


class WeightsMissing(WeightsError):
    """A deep model was asked for but no weights are available."""


# ---------------------------------------------------------------- cache


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
    return cache_root() / "weights" / name


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


# ---------------------------------------------------------------- reading checkpoints


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


# ---------------------------------------------------------------- storing


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
    """Convert the authors' checkpoint ``file`` for model ``name`` into the cache; return the cached path."""
    card = load_card(name)
    file = Path(file)
    digest = sha256_file(file) if file.is_file() else ""
    if verify and card.official_sha256 and digest and digest != card.official_sha256:
        raise WeightsError(f"{file}: SHA-256 {digest[:12]}... is not that of the official {card.name} file "
                           f"({card.official_sha256[:12]}...); use --no-verify to import it anyway")
    tensors, notes = extract_state_dict(read_checkpoint(file), card)
    check_state_dict({k: tuple(v.shape) for k, v in tensors.items()}, card)
    info = {"source": {"kind": "import", "file": file.name, "sha256": digest,
                       "official_hash_checked": bool(card.official_sha256 and verify)}, "notes": notes}
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


# ---------------------------------------------------------------- the Hub


def pull_weights(name: str, repo: str | None = None, revision: str | None = None, filename: str | None = None,
                 overwrite: bool = False) -> Path:
    """Download the converted safetensors of ``name`` from a Hub repo into the cache."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub import errors as hf_errors

    card = load_card(name)
    repo = repo or card.hub.get("repo") or ""
    if not repo:
        raise WeightsError(f"no Hub mirror is known for {card.name} (its authors publish {card.where_to_get()}): "
                           f"pass --repo OWNER/NAME, or download the file and run `imlf weights import {card.name} FILE`")
    revision = revision or card.hub.get("revision") or "main"
    filename = filename or card.hub_filename
    if cached_weights(name) and not overwrite:
        raise WeightsError(f"weights for {card.name} are already cached in {weights_dir(name)} (use --overwrite to replace them)")
    try:
        with _quiet_hub_logs():
            path = Path(hf_hub_download(repo_id=repo, filename=filename, revision=revision, endpoint=_endpoint()))
    except hf_errors.LocalEntryNotFoundError:  # before EntryNotFoundError: it is a subclass
        raise WeightsError(f"cannot reach the Hub at {_endpoint()} to download {repo}/{filename} "
                           "and it is not in the local Hub cache (offline? HF_HUB_OFFLINE is "
                           f"{os.environ.get('HF_HUB_OFFLINE', 'unset')})") from None
    except hf_errors.RepositoryNotFoundError:
        raise WeightsError(f"Hub repo {repo} not found (or private: log in with `hf auth login` or set HF_TOKEN)") from None
    except hf_errors.RevisionNotFoundError:
        raise WeightsError(f"Hub repo {repo} has no revision {revision!r}") from None
    except hf_errors.EntryNotFoundError:
        raise WeightsError(f"Hub repo {repo} has no file {filename!r} at revision {revision!r}") from None
    except hf_errors.HfHubHTTPError as exc:
        raise WeightsError(f"Hub download of {repo}/{filename} failed: {str(exc).splitlines()[0]}") from None
    except (OSError, ValueError) as exc:
        raise WeightsError(f"Hub download of {repo}/{filename} from {_endpoint()} failed: {exc}") from None
    digest = sha256_file(path)
    pinned = str(card.hub.get("sha256", "")).lower()
    if pinned and repo == card.hub.get("repo") and digest != pinned:
        raise WeightsError(f"{repo}/{filename}: SHA-256 {digest[:12]}... differs from the one the {card.name} card "
                           f"pins ({pinned[:12]}...): refusing it")
    check_state_dict(_safetensors_shapes(path), card)
    tensors, notes = extract_state_dict(read_checkpoint(path), card)
    info = {"source": {"kind": "hub", "endpoint": _endpoint(), "repo": repo, "revision": revision,
                       "file": filename, "sha256": digest, "hash_pinned": bool(pinned)}, "notes": notes}
    return _store(card, tensors, info, overwrite)


@contextlib.contextmanager
def _quiet_hub_logs():
    """huggingface_hub logs every retry; the user gets one line from us instead."""
    logger = logging.getLogger("huggingface_hub")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def push_weights(name: str, repo: str, private: bool = False) -> str:
    """Upload the cached safetensors of ``name`` and a model card to Hub repo ``repo``; return its URL."""
    from huggingface_hub import CommitOperationAdd, HfApi
    from huggingface_hub import errors as hf_errors

    card = load_card(name)
    if not card.redistribution:
        raise WeightsError(f"the license of {card.name}'s weights ({card.license}) does not allow redistribution: "
                           "imlf will not push them")
    path = cached_weights(name)
    if path is None:
        raise WeightsMissing(missing_message(card))
    api = HfApi(endpoint=_endpoint())
    try:
        api.create_repo(repo, repo_type="model", private=private, exist_ok=True)
        api.create_commit(
            repo_id=repo, repo_type="model", commit_message=f"{card.name} weights converted by imlforensics {__version__}",
            operations=[CommitOperationAdd(path_in_repo=card.hub_filename, path_or_fileobj=str(path)),
                        CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=hub_readme(card).encode())])
    except (hf_errors.HfHubHTTPError, OSError, ValueError) as exc:
        raise WeightsError(f"push to {repo} failed: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    return f"{_endpoint()}/{repo}"


def hub_readme(card: ModelCard) -> str:
    """The Hub model card written beside pushed weights."""
    src = sidecar(card.name).get("source", {})
    urls = "\n".join(f"- {u}" for u in card.official.get("urls", []))
    return (f"---\nlicense: {card.license.lower() if card.license.isascii() and ' ' not in card.license else 'other'}\n"
            f"tags: [image-forensics, image-manipulation-localization, imlforensics]\n---\n\n"
            f"# {card.name}\n\n{card.summary}\n\nPaper: {card.paper}\n\nTraining: {card.training}\n\n"
            f"Weights converted to safetensors by imlforensics {__version__} from the authors' file "
            f"`{src.get('file', '?')}` (SHA-256 `{src.get('sha256', '?')}`); keys are unchanged.\n\n"
            f"Official downloads:\n{urls}\n\nUse:\n\n    imlf weights pull {card.name} --repo THIS/REPO\n"
            f"    imlf detect image.jpg --model {card.name}\n")


# ---------------------------------------------------------------- listing


def list_weights() -> list[dict[str, Any]]:
    """One row per deep model: whether weights are cached, where from, and how large."""
    from .cards import all_cards

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
    """Delete the cached weights of ``name``; False when there were none."""
    load_card(name)
    folder = weights_dir(name)
    if not folder.exists():
        return False
    shutil.rmtree(folder)
    return True
