"""`imlf weights pull` from a card's sources (URLs tried in order, zip members, MD5/SHA-256 pins,
licence acceptance, offline mode), against a local HTTP server on 127.0.0.1; and the import of
the authors' zip archive. A toy card (a 1x1 convolution) stands in for TruFor; Noiseprint's
multi-file source is exercised with the real networks in ../shared/weights when present."""

from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import subprocess
import sys
import zipfile
from collections import OrderedDict
from pathlib import Path

import pytest
import torch

from conftest import LocalHTTPServer, QuietHandler

SHARED = Path(os.environ.get("IMLF_SHARED") or Path(__file__).resolve().parents[1].parent / "shared")
NOISEPRINT = SHARED / "weights" / "noiseprint"

CARD = """
name = "toy-zip"
summary = "test model: a 1x1 convolution shipped in a zip, like TruFor"
paper = "none"
architecture = "torch.nn:Conv2d"
arch_options = {{ in_channels = 3, out_channels = 1, kernel_size = 1 }}
license = "Toy non-profit"
license_terms = "{terms}"
redistribution = false
training = "random"
[official]
urls = ["{base}/server/toy_weights.zip"]
files = ["toy_weights.zip"]
container = "zip holding weights/toy.pth.tar, a torch pickle {{'epoch', 'state_dict'}}"
state_dict_key = "state_dict"
md5 = "{md5}"
member = "toy.pth.tar"
[preprocess]
mode = "full"
scale = 256
size = 32
[postprocess]
image_score = "max"
{sources}
"""


def toy_state(seed: int = 0) -> OrderedDict:
    g = torch.Generator().manual_seed(seed)
    return OrderedDict(weight=torch.randn(1, 3, 1, 1, generator=g), bias=torch.randn(1, generator=g))


def toy_zip(seed: int = 0) -> bytes:
    buf = io.BytesIO()
    torch.save({"epoch": 3, "state_dict": toy_state(seed)}, buf)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        zf.writestr("weights/README.txt", "toy")
        zf.writestr("weights/toy.pth.tar", buf.getvalue())
    return out.getvalue()


class Server(LocalHTTPServer):
    """Serves ``files`` (path -> bytes) over HTTP on 127.0.0.1 and logs every request."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.requests: list[str] = []
        srv = self

        class Handler(QuietHandler):
            def do_GET(self):
                srv.requests.append(self.path)
                data = srv.files.get(self.path)
                if data is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.serve(Handler)


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


@pytest.fixture
def env(tmp_path):
    cards = tmp_path / "cards"
    cards.mkdir()
    e = dict(os.environ, IMLF_CACHE=str(tmp_path / "cache"), HF_HOME=str(tmp_path / "hf"), IMLF_CARDS=str(cards),
             NO_COLOR="1", COLUMNS="200")
    for var in ("IMLF_OFFLINE", "HF_HUB_OFFLINE"):
        e.pop(var, None)
    return e, cards


def write_card(cards: Path, base: str, urls: list[str], md5: str, terms: str = "non-profit use only, cite the authors"):
    sources = "".join(f'\n[[sources]]\nkind = "url"\nurl = "{u}"\nmember = "toy.pth.tar"\n' for u in urls)
    (cards / "toy-zip.toml").write_text(CARD.format(terms=terms, base=base, md5=md5, sources=sources))


def imlf(env: dict, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "imlforensics", *map(str, args)], env=env, capture_output=True,
                          text=True, timeout=300)


def last_line(r: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in r.stderr, r.stderr
    return [ln for ln in r.stderr.splitlines() if ln.strip()][-1]


def cache(env: dict, name: str = "toy-zip") -> Path:
    return Path(env["IMLF_CACHE"]) / "weights" / name


def test_pull_asks_for_the_licence_then_downloads_verifies_and_unzips(env, server):
    e, cards = env
    data = toy_zip(1)
    server.files["/server/toy_weights.zip"] = data
    write_card(cards, server.url, [f"{server.url}/server/toy_weights.zip"], hashlib.md5(data).hexdigest())
    r = imlf(e, "weights", "pull", "toy-zip")
    assert r.returncode == 2 and "--accept-license" in last_line(r)
    assert "non-profit use only, cite the authors" in r.stderr and "Toy non-profit" in r.stderr
    assert server.requests == [] and not cache(e).exists()  # nothing was downloaded
    r = imlf(e, "weights", "pull", "toy-zip", "--accept-license")
    assert r.returncode == 0, r.stderr
    assert "licence accepted" in r.stderr and "hash verified" in last_line(r)
    from safetensors.torch import load_file

    stored = load_file(cache(e) / "model.safetensors")
    assert all(torch.equal(stored[k], v) for k, v in toy_state(1).items())
    info = json.loads((cache(e) / "model.json").read_text())
    src = info["source"]
    assert src["kind"] == "download" and src["url"].endswith("/server/toy_weights.zip")
    assert src["member"] == "weights/toy.pth.tar" and src["md5"] == hashlib.md5(data).hexdigest()
    assert not (Path(e["IMLF_CACHE"]) / "downloads" / "toy-zip").exists()  # the download is gone once converted
    accepted = json.loads((Path(e["IMLF_CACHE"]) / "licenses.json").read_text())
    assert accepted["toy-zip"]["license"] == "Toy non-profit"
    # accepted once: the next pull needs no flag; pushing stays refused (no redistribution)
    r = imlf(e, "weights", "pull", "toy-zip", "--overwrite")
    assert r.returncode == 0, r.stderr
    r = imlf(e, "weights", "push", "toy-zip", "--repo", "team/toy")
    assert r.returncode == 1 and "does not allow redistribution" in last_line(r)


def test_sources_are_tried_in_order_and_a_bad_file_is_refused(env, server, tmp_path):
    e, cards = env
    data = toy_zip(2)
    server.files["/mirror/toy_weights.zip"] = data
    write_card(cards, server.url, [f"{server.url}/gone/toy_weights.zip", f"{server.url}/mirror/toy_weights.zip"],
               hashlib.md5(data).hexdigest())
    r = imlf(e, "weights", "pull", "toy-zip", "--accept-license")
    assert r.returncode == 0, r.stderr
    assert server.requests == ["/gone/toy_weights.zip", "/mirror/toy_weights.zip"]
    assert json.loads((cache(e) / "model.json").read_text())["source"]["url"].endswith("/mirror/toy_weights.zip")
    # every source fails: one line naming each URL and why; a corrupt file is never kept
    server.files["/mirror/toy_weights.zip"] = data[:-100] + b"x" * 100
    r = imlf(e, "weights", "pull", "toy-zip", "--overwrite")
    line = last_line(r)
    assert r.returncode == 1 and len([ln for ln in r.stderr.splitlines() if ln.strip()]) == 1
    assert f"{server.url}/gone/toy_weights.zip failed: HTTP 404" in line
    assert "/mirror/toy_weights.zip: the file's MD5" in line and "refusing it" in line
    leftovers = list((Path(e["IMLF_CACHE"]) / "downloads").rglob("*"))
    assert not any(p.name.endswith(".part") for p in leftovers) and not any(p.name == "toy_weights.zip" for p in leftovers)
    assert all(torch.equal(v, toy_state(2)[k]) for k, v in
               __import__("safetensors.torch", fromlist=["x"]).load_file(cache(e) / "model.safetensors").items())


def test_offline_and_unreachable_sources_are_one_clear_line(env, server):
    e, cards = env
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/toy_weights.zip"
    write_card(cards, server.url, [url], "0" * 32)
    r = imlf(e, "weights", "pull", "toy-zip", "--accept-license")
    assert r.returncode == 1 and f"download of {url} failed" in last_line(r)
    write_card(cards, server.url, [f"{server.url}/server/toy_weights.zip"], "0" * 32)
    for var in ("IMLF_OFFLINE", "HF_HUB_OFFLINE"):
        r = imlf({**e, var: "1"}, "weights", "pull", "toy-zip")
        assert r.returncode == 1 and f"downloads are off ({var} is set)" in last_line(r)
    assert server.requests == []


def test_a_silent_server_times_out(tmp_path, monkeypatch):
    from imlforensics.weights import sources

    monkeypatch.setattr(sources, "CONNECT_TIMEOUT", 0.5)
    with socket.socket() as s:  # accepts connections (backlog) but never answers
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        url = f"http://127.0.0.1:{s.getsockname()[1]}/w.bin"
        with pytest.raises(sources.DownloadError, match=r"w.bin failed: no answer within 0.5 s"):
            sources.download(url, tmp_path / "w.bin", sha256="0" * 64)
    assert list(tmp_path.iterdir()) == []


def test_download_keeps_a_verified_file_and_replaces_atomically(tmp_path, server):
    from imlforensics.weights import sources

    server.files["/a.bin"] = b"abc" * 1000
    sha = hashlib.sha256(server.files["/a.bin"]).hexdigest()
    target = tmp_path / "sub" / "a.bin"
    seen = []
    sources.download(f"{server.url}/a.bin", target, sha256=sha, progress=lambda n, d, t: seen.append((n, d, t)))
    assert target.read_bytes() == server.files["/a.bin"] and seen[-1] == ("a.bin", 3000, 3000)
    sources.download(f"{server.url}/a.bin", target, sha256=sha)  # verified already: not fetched again
    assert server.requests == ["/a.bin"]
    with pytest.raises(sources.DownloadError, match="SHA-256"):
        sources.download(f"{server.url}/a.bin", tmp_path / "b.bin", sha256="f" * 64)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sub"]


def test_card_sources_are_checked_when_the_card_is_read():
    from imlforensics.errors import ImlfError
    from imlforensics.weights.sources import parse_sources

    src = parse_sources([{"kind": "url", "url": "https://x.org/n/{file}", "files": ["net{Q}/a", "net{Q}/b"],
                          "expand": {"Q": [51, 53]}}])[0]
    assert src.files == ("net51/a", "net51/b", "net52/a", "net52/b", "net53/a", "net53/b")
    assert src.urls()[1] == ("net51/b", "https://x.org/n/net51/b")
    for bad in ({"kind": "ftp", "url": "ftp://x"}, {"kind": "url", "url": "https://x.org/{file}"},
                {"kind": "url", "url": "https://x.org/a", "sha": "1"}, {"kind": "hub"}):
        with pytest.raises(ImlfError):
            parse_sources([bad])


def test_import_takes_the_authors_zip_and_checks_its_md5(env, tmp_path):
    e, cards = env
    data = toy_zip(4)
    archive = tmp_path / "toy_weights.zip"
    archive.write_bytes(data)
    write_card(cards, "http://127.0.0.1:9", [], "f" * 32)
    r = imlf(e, "weights", "import", "toy-zip", archive)
    assert r.returncode == 1 and "MD5" in last_line(r) and "--no-verify" in last_line(r)
    write_card(cards, "http://127.0.0.1:9", [], hashlib.md5(data).hexdigest())
    r = imlf(e, "weights", "import", "toy-zip", archive)
    assert r.returncode == 0, r.stderr
    info = json.loads((cache(e) / "model.json").read_text())
    assert info["source"]["member"] == "weights/toy.pth.tar" and info["source"]["official_md5_checked"]
    assert not [p for p in cache(e).iterdir() if p.name.startswith(".")]  # the extracted copy is gone


@pytest.mark.skipif(not NOISEPRINT.is_dir(), reason="../shared/weights/noiseprint is absent")
def test_pull_noiseprint_networks_from_a_multi_file_source(env, server):
    """The noiseprint card's URL pattern and hashes, restricted to the qualities ../shared holds."""
    from imlforensics.weights.cards import all_cards, tomllib  # tomllib, or tomli on Python 3.10

    e, cards = env
    real = all_cards()["noiseprint"]
    text = (Path(__file__).resolve().parents[1] / "weights" / "noiseprint.toml").read_text()
    data = tomllib.loads(text)
    for q in (99, 100, 101):
        for f in ("model.index", "model.data-00000-of-00001"):
            server.files[f"/np/net_jpg{q}/{f}"] = (NOISEPRINT / f"net_jpg{q}" / f).read_bytes()
    server.files["/np/net_jpg100/model.index"] = b"not the authors' file"  # the first source serves a bad one
    second = dict(data["sources"][0], url=f"{server.url}/np2/{{file}}", expand={"Q": [99, 101]})
    first = dict(data["sources"][0], url=f"{server.url}/np/{{file}}", expand={"Q": [99, 101]})
    for q in (99, 100, 101):
        for f in ("model.index", "model.data-00000-of-00001"):
            server.files[f"/np2/net_jpg{q}/{f}"] = (NOISEPRINT / f"net_jpg{q}" / f).read_bytes()
    sources = "".join("\n[[sources]]\n" + "\n".join(f"{k} = {json.dumps(v) if not isinstance(v, dict) else '{ Q = [99, 101] }'}"
                                                    for k, v in s.items()) + "\n" for s in (first, second))
    card = text[:text.index("[[sources]]")] + sources
    (cards / "noiseprint.toml").write_text(card)
    r = imlf(e, "weights", "pull", "noiseprint", "--accept-license")
    assert r.returncode == 0, r.stderr
    assert "/np2/net_jpg101/model.data-00000-of-00001" in server.requests  # the second source finished the job
    from imlforensics.weights.noiseprint import convert_noiseprint_checkpoint, flat_to_bank
    from safetensors.numpy import load_file

    bank = flat_to_bank(load_file(cache(e, "noiseprint") / "model.safetensors"))
    assert sorted(bank) == [99, 100, 101]
    direct = convert_noiseprint_checkpoint(NOISEPRINT / "net_jpg100" / "model.index")
    assert all((bank[100][k] == v).all() for k, v in direct.items())
    assert real.official["files_sha256"]["net_jpg100/model.index"] == hashlib.sha256(
        (NOISEPRINT / "net_jpg100" / "model.index").read_bytes()).hexdigest()
