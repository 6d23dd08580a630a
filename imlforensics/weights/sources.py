"""Downloading the authors' weights from the sources a model card lists, tried in order.

A card's ``[[sources]]`` are tried one after the other until one succeeds:

* ``kind = "hub"``: converted safetensors in a Hugging Face Hub repo (``repo``, ``filename``,
  ``revision``), fetched by :func:`.hub.pull_weights` (huggingface_hub's own cache and settings);
* ``kind = "url"``: the authors' own files over HTTP(S): an official repository's raw file URL at
  a pinned commit, or the authors' server. ``url`` may hold ``{file}``, filled in with each entry
  of ``files`` (whose ``{Q}``-style fields are expanded over the inclusive ranges in ``expand``), so
  one source can name a whole folder of networks (Noiseprint's 51). ``sha256`` pins each file (a
  string for one file, a table by file otherwise), or ``md5`` where that is all the authors publish.
  ``member`` names a file to take out of a downloaded zip archive.

Every download is streamed into a hidden temporary file in the cache, hashed while it is written,
verified against the card, and only then renamed into place (atomically), so an interrupted or
corrupt download never looks like a good one; a verified file already there is not fetched again.
Connections time out after :data:`CONNECT_TIMEOUT` seconds without data. A failure is one line that
names the URL. ``IMLF_OFFLINE`` or ``HF_HUB_OFFLINE`` (set to 1/true/yes/on) forbid any download.

Weights whose licence forbids redistribution and asks users to accept terms (``license_terms`` in
the card: GRIP-UNINA's non-profit licence) are only fetched once the user has accepted them
(``--accept-license``, remembered in ``<cache>/licenses.json``).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import itertools
import json
import os
import re
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._version import __version__
from ..errors import ImlfError

CONNECT_TIMEOUT = 15.0  # seconds to connect, and the longest wait for the next block of data
CHUNK = 1 << 20
OFFLINE_VARS = ("IMLF_OFFLINE", "HF_HUB_OFFLINE")
LICENSES_FILE = "licenses.json"
Progress = Callable[[str, int, int | None], None]  # (file, bytes so far, total or None)


class DownloadError(ImlfError):
    """A source could not be reached, or gave a file that is not the one the card pins."""


class LicenseNotAccepted(ImlfError):
    """The weights' licence must be accepted (``--accept-license``) before they are downloaded."""


@dataclass(frozen=True)
class Source:
    """One place a card's weights can be fetched from (see the module docstring)."""

    kind: str
    url: str = ""
    files: tuple[str, ...] = ()
    sha256: Mapping[str, str] = field(default_factory=dict)  # by file; "" for a single-file source
    md5: Mapping[str, str] = field(default_factory=dict)
    member: str = ""
    repo: str = ""
    filename: str = ""
    revision: str = "main"

    def label(self) -> str:
        if self.kind == "hub":
            return f"Hub repo {self.repo}"
        return self.url.split("{file}")[0] + ("..." if "{file}" in self.url else "")

    def urls(self) -> list[tuple[str, str]]:
        """(relative file name, URL) of every file this source gives."""
        if not self.files:
            return [(urllib.parse.unquote(self.url.rstrip("/").rsplit("/", 1)[-1]), self.url)]
        return [(f, self.url.replace("{file}", f)) for f in self.files]


def _expand(files: list[str], ranges: Mapping[str, Any]) -> tuple[str, ...]:
    names = list(ranges)
    values = [range(int(ranges[n][0]), int(ranges[n][1]) + 1) for n in names]
    out: list[str] = []
    for combo in itertools.product(*values) if names else [()]:
        fill = dict(zip(names, combo))
        out.extend(f.format(**fill) for f in files)
    return tuple(dict.fromkeys(out))


def _hashes(value: Any, what: str, card: str) -> dict[str, str]:
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        return {"": value.lower()}
    if isinstance(value, Mapping):
        return {str(k): str(v).lower() for k, v in value.items()}
    raise ImlfError(f"model card {card}: a source's {what} must be a string or a table by file")


def parse_sources(entries: list[Mapping[str, Any]], card: str = "<card>") -> list[Source]:
    """The ``[[sources]]`` of a card as :class:`Source` objects (checked)."""
    out = []
    for i, e in enumerate(entries):
        kind = str(e.get("kind", "url"))
        unknown = sorted(set(e) - {"kind", "url", "files", "expand", "sha256", "md5", "member", "repo", "filename",
                                   "revision"})
        if unknown:
            raise ImlfError(f"model card {card}: source {i + 1} has unknown keys: {', '.join(unknown)}")
        if kind == "hub":
            if not e.get("repo"):
                raise ImlfError(f"model card {card}: Hub source {i + 1} names no repo")
            out.append(Source("hub", repo=str(e["repo"]), filename=str(e.get("filename", "")),
                              revision=str(e.get("revision", "main")), sha256=_hashes(e.get("sha256"), "sha256", card)))
            continue
        if kind != "url" or not str(e.get("url", "")).startswith(("https://", "http://")):
            raise ImlfError(f"model card {card}: source {i + 1} must be kind 'hub' or 'url' with an http(s) URL")
        files = _expand([str(f) for f in e.get("files", [])], e.get("expand", {}))
        if bool(files) != ("{file}" in str(e["url"])):
            raise ImlfError(f"model card {card}: source {i + 1}: 'files' and a {{file}} field in the URL go together")
        out.append(Source("url", url=str(e["url"]), files=files, sha256=_hashes(e.get("sha256"), "sha256", card),
                          md5=_hashes(e.get("md5"), "md5", card), member=str(e.get("member", ""))))
    return out


# ---------------------------------------------------------------- downloads


def offline() -> str | None:
    """The variable that forbids downloads (``IMLF_OFFLINE`` / ``HF_HUB_OFFLINE``), or None."""
    for var in OFFLINE_VARS:
        if os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on"):
            return var
    return None


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return str(getattr(exc.reason, "strerror", None) or exc.reason)
    if isinstance(exc, TimeoutError):
        return f"no answer within {CONNECT_TIMEOUT:g} s"
    return str(exc) or type(exc).__name__


def _verify(path: Path, digests: Mapping[str, str], sha256: str, md5: str, url: str) -> None:
    for algo, want in (("SHA-256", sha256), ("MD5", md5)):
        got = digests["sha256" if algo == "SHA-256" else "md5"]
        if want and got != want:
            raise DownloadError(f"{url}: the file's {algo} {got[:12]}... is not the one the card pins ({want[:12]}...): "
                                "refusing it")


def _digests(path: Path) -> dict[str, str]:
    sha, md = hashlib.sha256(), hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            sha.update(chunk)
            md.update(chunk)
    return {"sha256": sha.hexdigest(), "md5": md.hexdigest()}


def download(url: str, target: Path, sha256: str = "", md5: str = "", progress: Progress | None = None) -> dict[str, str]:
    """Fetch ``url`` into ``target`` (streamed to a temporary file beside it, verified, renamed);
    return its digests. A verified file already at ``target`` is kept."""
    target = Path(target)
    if target.is_file():
        digests = _digests(target)
        if (not sha256 or digests["sha256"] == sha256) and (not md5 or digests["md5"] == md5) and (sha256 or md5):
            return digests
    var = offline()
    if var:
        raise DownloadError(f"{url}: not downloaded, downloads are off ({var} is set)")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    tmp = Path(tmp_name)
    sha, md = hashlib.sha256(), hashlib.md5()
    try:
        request = urllib.request.Request(url, headers={"User-Agent": f"imlforensics/{__version__}"})
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(request, timeout=CONNECT_TIMEOUT) as resp:
            total = resp.headers.get("Content-Length")
            total_n = int(total) if total and total.isdigit() else None
            done = 0
            for chunk in iter(lambda: resp.read(CHUNK), b""):
                out.write(chunk)
                sha.update(chunk)
                md.update(chunk)
                done += len(chunk)
                if progress:
                    progress(target.name, done, total_n)
            if total_n is not None and done != total_n:
                raise DownloadError(f"download of {url} failed: the connection closed after {done} of {total_n} bytes")
        digests = {"sha256": sha.hexdigest(), "md5": md.hexdigest()}
        _verify(tmp, digests, sha256, md5, url)
        os.replace(tmp, target)
        return digests
    except DownloadError:
        raise
    except (urllib.error.URLError, OSError, ValueError) as exc:  # HTTPError, timeouts, refused connections, ...
        raise DownloadError(f"download of {url} failed: {_reason(exc)}") from None
    finally:
        tmp.unlink(missing_ok=True)


def extract_member(archive: Path, member: str, target: Path) -> Path:
    """Copy the zip entry whose file name is ``member`` (in any folder of ``archive``) to ``target``
    (through a temporary file and an atomic rename). Raises DownloadError when there is none."""
    try:
        with zipfile.ZipFile(archive) as zf:
            names = [n for n in zf.namelist() if n.rstrip("/").rsplit("/", 1)[-1] == member and not n.endswith("/")]
            if not names:
                raise DownloadError(f"{archive.name}: the archive holds no {member}")
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
            try:
                with os.fdopen(fd, "wb") as out, zf.open(names[0]) as src:
                    shutil.copyfileobj(src, out, CHUNK)
                os.replace(tmp_name, target)
            finally:
                Path(tmp_name).unlink(missing_ok=True)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DownloadError(f"{archive.name}: not a readable zip archive ({exc})") from None
    return target


def zip_member(path: Path, member: str) -> str | None:
    """The name of ``member`` inside zip archive ``path`` (any folder), or None (not a zip, or no such entry).
    A PyTorch checkpoint is itself a zip, but holds ``data.pkl``, never ``member``."""
    if not member or not zipfile.is_zipfile(path):
        return None
    try:
        with zipfile.ZipFile(path) as zf:
            return next((n for n in zf.namelist() if n.rsplit("/", 1)[-1] == member), None)
    except (zipfile.BadZipFile, OSError):
        return None


def fetch_url_source(source: Source, folder: Path, progress: Progress | None = None, extract: bool = True) -> Path:
    """Download every file of a URL source into ``folder``; return the file to import (the zip
    member when the source names one and ``extract``, the single file, or ``folder`` for a
    multi-file source)."""
    got = None
    for rel, url in source.urls():
        key = rel if source.files else ""
        got = folder / rel
        download(url, got, source.sha256.get(key, ""), source.md5.get(key, ""), progress)
    assert got is not None
    if source.member and extract:
        return extract_member(got, source.member, folder / source.member)
    return folder if source.files else got


# ---------------------------------------------------------------- licences


def _licenses_path(cache: Path) -> Path:
    return cache / LICENSES_FILE


def accepted_licenses(cache: Path) -> dict[str, Any]:
    try:
        data = json.loads(_licenses_path(cache).read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def license_accepted(cache: Path, name: str, license: str) -> bool:
    return accepted_licenses(cache).get(name, {}).get("license") == license


def record_acceptance(cache: Path, name: str, license: str) -> None:
    """Remember that the user accepted ``license`` for ``name`` (written atomically)."""
    data = accepted_licenses(cache)
    data[name] = {"license": license, "accepted": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    cache.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cache, prefix=".licenses.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, _licenses_path(cache))


_WS = re.compile(r"\s+")


def license_notice(name: str, license: str, terms: str) -> str:
    """The text shown before the first download of weights whose licence needs accepting."""
    return (f"The weights of {name} are licensed under the {license} licence:\n  {_WS.sub(' ', terms).strip()}\n"
            f"imlf downloads them for you from the authors' own locations and never redistributes them.")
