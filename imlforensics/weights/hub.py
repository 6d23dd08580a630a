"""Hugging Face Hub pulls and pushes of converted weights.

Downloads go through ``huggingface_hub`` and so honour ``HF_ENDPOINT``, ``HF_HUB_OFFLINE``,
``HF_HOME`` and the user's token.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

from .._version import __version__
from .cache import (
    WeightsError,
    WeightsMissing,
    cached_weights,
    missing_message,
    sha256_file,
    sidecar,
    weights_dir,
)
from .cards import ModelCard, load_card
from .convert import (
    _safetensors_shapes,
    _store,
    check_state_dict,
    extract_state_dict,
    read_checkpoint,
)


def pull_weights(name: str, repo: str | None = None, revision: str | None = None, filename: str | None = None,
                 overwrite: bool = False) -> Path:
    """Download the converted safetensors of ``name`` from a Hub repo into the cache."""
    from huggingface_hub import errors as hf_errors
    from huggingface_hub import hf_hub_download

    card = load_card(name)
    repo = repo or card.hub.get("repo") or ""
    if not repo:
        raise WeightsError(f"no Hub mirror is known for {card.name} (its authors publish {card.where_to_get()}): "
                           f"pass --repo OWNER/NAME, or download the file and run `imlf weights import {card.name} FILE`")
    revision = revision or card.hub.get("revision") or "main"
    filename = filename or card.hub_filename
    if cached_weights(name) and not overwrite:
        raise WeightsError(f"weights for {card.name} are already cached in {weights_dir(name)} (use --overwrite to replace them)")
    endpoint = _endpoint()
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    unreachable = None if offline else _unreachable(endpoint)
    try:
        with _quiet_hub_logs():
            path = Path(hf_hub_download(repo_id=repo, filename=filename, revision=revision, endpoint=endpoint,
                                        local_files_only=offline or unreachable is not None, etag_timeout=10))
    except hf_errors.LocalEntryNotFoundError:  # before EntryNotFoundError: it is a subclass
        why = f" ({unreachable})" if unreachable else ""
        raise WeightsError(f"cannot reach the Hub at {endpoint}{why} to download {repo}/{filename} "
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
    """``$HF_ENDPOINT`` (default the public Hub), checked to be an http(s) URL."""
    from urllib.parse import urlsplit

    value = os.environ.get("HF_ENDPOINT", "").strip() or "https://huggingface.co"
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018  (raises ValueError on a bad port)
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise WeightsError(f"HF_ENDPOINT {value!r} is not an http(s) URL (e.g. https://huggingface.co)")
    return value.rstrip("/")


def _unreachable(endpoint: str, timeout: float = 5.0) -> str | None:
    """Why the endpoint's host cannot be reached within ``timeout`` seconds, or None when it can
    (one TCP connection, so an unreachable Hub costs seconds, not the client's retries)."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(endpoint)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout):
            return None
    except socket.timeout:
        return f"no answer within {timeout:.0f} s"
    except OSError as exc:
        return exc.strerror or str(exc)


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
