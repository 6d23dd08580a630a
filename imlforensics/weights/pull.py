"""``imlf weights pull``: a model's weights from the sources its card lists, tried in order.

For each source (:mod:`.sources`): a Hub repo gives converted safetensors (:func:`.hub.pull_weights`);
a URL source gives the authors' own files, which are downloaded into ``<cache>/downloads/<model>/``
(verified, resumable: verified files are not fetched again), converted exactly as ``imlf weights
import`` converts them, recorded with their URL, and then deleted. The first source that works
wins; when none does, the error names every source and why it failed. A card without sources (or
an explicit ``--repo``) keeps the plain Hub pull.

Weights whose card sets ``license_terms`` (GRIP-UNINA's non-profit licence forbids redistribution)
are downloaded only once the user has accepted the terms: the first pull shows them and stops
unless ``accept_license`` is given; acceptance is remembered in ``<cache>/licenses.json``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from .cache import SIDECAR_FILE, WeightsError, cache_root, cached_weights, weights_dir
from .cards import ModelCard, load_card
from .convert import import_weights
from .hub import pull_weights
from .sources import (DownloadError, LicenseNotAccepted, Progress, Source, fetch_url_source, license_accepted,
                      license_notice, parse_sources, record_acceptance)


def needs_acceptance(card: ModelCard) -> bool:
    return bool(card.license_terms) and not license_accepted(cache_root(), card.name, card.license)


def check_license(card: ModelCard, accept: bool) -> str | None:
    """Raise LicenseNotAccepted (with the terms) when the card's licence must be accepted first;
    with ``accept``, record the acceptance and return the notice to show."""
    if not needs_acceptance(card):
        return None
    notice = license_notice(card.name, card.license, card.license_terms)
    if not accept:
        raise LicenseNotAccepted(f"{notice}\nTo accept these terms and download, run: imlf weights pull {card.name} "
                                 "--accept-license")
    record_acceptance(cache_root(), card.name, card.license)
    return notice


def card_sources(card: ModelCard) -> list[Source]:
    """The card's sources in order; URL sources without their own hashes take the official ones
    (``official.sha256``/``md5`` for one file, ``official.files_sha256`` by file)."""
    out = []
    for src in parse_sources(list(card.sources), card.name):
        if src.kind == "url" and not src.sha256 and not src.md5:
            if src.files:
                src = replace(src, sha256={k: str(v).lower() for k, v in card.official.get("files_sha256", {}).items()})
            else:
                sha = card.official_sha256 if not src.member else ""
                md5 = card.official_md5 if src.member else ""
                src = replace(src, sha256={"": sha} if sha else {}, md5={"": md5} if md5 else {})
        out.append(src)
    return out


def pull(name: str, overwrite: bool = False, accept_license: bool = False, progress: Progress | None = None,
         repo: str | None = None, revision: str | None = None, filename: str | None = None) -> Path:
    """Fetch the weights of ``name`` into the cache from the first source that works; return the cached file."""
    card = load_card(name)
    if cached_weights(name) and not overwrite:
        raise WeightsError(f"weights for {card.name} are already cached in {weights_dir(name)} (use --overwrite to replace them)")
    check_license(card, accept_license)
    if repo or not card.sources:
        return pull_weights(name, repo=repo, revision=revision, filename=filename, overwrite=overwrite)
    failures = []
    for src in card_sources(card):
        try:
            if src.kind == "hub":
                return pull_weights(name, repo=src.repo, revision=src.revision, filename=src.filename or None,
                                    overwrite=overwrite, sha256=src.sha256.get("") or None)
            return _pull_url(card, src, overwrite, progress)
        except LicenseNotAccepted:
            raise
        except DownloadError as exc:  # its message names the URL
            failures.append(str(exc))
        except WeightsError as exc:  # a Hub error or a file that does not convert
            failures.append(f"{src.label()}: {exc}")
    raise WeightsError(f"no source gave the weights of {card.name}: " + " | ".join(failures))


def _pull_url(card: ModelCard, src: Source, overwrite: bool, progress: Progress | None) -> Path:
    if src.member and src.member != card.member:
        raise WeightsError(f"{card.name}: a source's member {src.member!r} is not the card's ({card.member!r})")
    folder = cache_root() / "downloads" / card.name
    got = fetch_url_source(src, folder, progress, extract=False)  # import_weights takes the member out of the zip
    pinned = bool(src.sha256 or src.md5)
    origin = {"kind": "download", "url": src.url if not src.files else src.url.split("{file}")[0],
              "files": len(src.files) or 1, "hash_pinned": pinned}
    path = import_weights(card.name, got, overwrite=overwrite, verify=True)  # a folder: Noiseprint's networks
    _add_origin(card.name, origin)
    shutil.rmtree(folder, ignore_errors=True)
    return path


def _add_origin(name: str, origin: dict[str, Any]) -> None:
    """Record in the sidecar where an imported download came from (written atomically)."""
    side = weights_dir(name) / SIDECAR_FILE
    info = json.loads(side.read_text())
    info["source"] = {**info.get("source", {}), **origin}
    fd, tmp = tempfile.mkstemp(dir=side.parent, prefix=".model.json.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(info, indent=1) + "\n")
    os.replace(tmp, side)
