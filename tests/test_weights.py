"""`imlf weights`: safe imports of the authors' containers, the cache, and Hub pulls from a local server.

A toy model card (a 1x1 convolution, registered through $IMLF_CARDS) stands in for the big models
here, so every path runs in a fresh `imlf` process as a user's would; the real models' containers
are exercised in test_deep.py.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from conftest import LocalHTTPServer, QuietHandler

TOY_CARD = """
name = "toy-conv"
summary = "test model: a 1x1 convolution"
paper = "none"
architecture = "torch.nn:Conv2d"
arch_options = {{ in_channels = 3, out_channels = 1, kernel_size = 1 }}
license = "{license}"
redistribution = {redistribution}
training = "random"
[official]
urls = ["https://example.org/toy"]
files = ["toy-7.pth"]
container = "{{'model': state_dict, 'optimizer', 'epoch', 'args'}}"
state_dict_key = "model"
sha256 = "{sha}"
[hub]
repo = "{repo}"
filename = "toy-conv.safetensors"
revision = "main"
sha256 = "{hub_sha}"
[preprocess]
mode = "resize"
size = 32
interpolation = "linear"
[postprocess]
restore = "resize"
image_score = "max"
"""


def toy_weights(seed: int = 0) -> OrderedDict:
    g = torch.Generator().manual_seed(seed)
    return OrderedDict(weight=torch.randn(1, 3, 1, 1, generator=g), bias=torch.randn(1, generator=g))


@pytest.fixture
def env(tmp_path):
    """A private cache, Hub home and card folder; returns (env dict, card writer)."""
    cards = tmp_path / "cards"
    cards.mkdir()
    e = dict(os.environ, IMLF_CACHE=str(tmp_path / "cache"), HF_HOME=str(tmp_path / "hf"), IMLF_CARDS=str(cards),
             HF_HUB_DISABLE_TELEMETRY="1", NO_COLOR="1", COLUMNS="200")
    e.pop("HF_TOKEN", None)

    def write_card(license="MIT", redistribution="true", sha="", repo="", hub_sha=""):
        (cards / "toy-conv.toml").write_text(TOY_CARD.format(license=license, redistribution=redistribution, sha=sha,
                                                             repo=repo, hub_sha=hub_sha))

    write_card()
    return e, write_card


def imlf(env: dict, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "imlforensics", *map(str, args)], env=env, capture_output=True,
                          text=True, timeout=300)


def one_line_error(r: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in r.stderr, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    return lines[0]


def cached(env: dict) -> Path:
    return Path(env["IMLF_CACHE"]) / "weights" / "toy-conv"


@pytest.mark.parametrize("container", ["training-dict", "state_dict-module-prefix", "bare", "legacy-format", "safetensors"])
def test_official_containers_import_and_reproduce_the_weights(env, tmp_path, container):
    e, _ = env
    sd = toy_weights()
    path = tmp_path / ("toy.safetensors" if container == "safetensors" else "toy-7.pth")
    if container == "training-dict":
        torch.save({"model": sd, "optimizer": {"state": {0: {"exp_avg": torch.zeros(3)}}, "param_groups": [{"lr": 1e-4}]},
                    "epoch": 7, "scaler": {"scale": 65536.0}, "args": argparse.Namespace(lr=1e-4, data="x")}, path)
    elif container == "state_dict-module-prefix":
        torch.save({"state_dict": OrderedDict((f"module.{k}", v) for k, v in sd.items()), "epoch": 3}, path)
    elif container == "bare":
        torch.save(sd, path)
    elif container == "legacy-format":
        torch.save({"model": sd}, path, _use_new_zipfile_serialization=False)
    else:
        save_file(dict(sd), path)
    r = imlf(e, "weights", "import", "toy-conv", path)
    assert r.returncode == 0, r.stderr
    from safetensors.torch import load_file

    stored = load_file(cached(e) / "model.safetensors")
    assert set(stored) == set(sd) and all(torch.equal(stored[k], sd[k]) for k in sd)
    info = json.loads((cached(e) / "model.json").read_text())
    assert info["source"]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert info["source"]["file"] == path.name and info["parameters"] == 4
    if container == "training-dict":
        assert "optimizer" in info["notes"][0] and "args" in info["notes"][0]


def test_a_malicious_pickle_is_refused_and_runs_nothing(env, tmp_path):
    e, _ = env
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pth"
    torch.save({"model": toy_weights(), "payload": Evil()}, path)
    r = imlf(e, "weights", "import", "toy-conv", path)
    assert r.returncode == 1
    line = one_line_error(r)
    assert "refused" in line and "system" in line
    assert not marker.exists() and not cached(e).exists()


def test_weights_that_do_not_fit_are_listed_key_by_key(env, tmp_path):
    e, _ = env
    sd = toy_weights()
    sd["extra.weight"] = torch.zeros(2)
    sd["weight"] = torch.zeros(2, 3, 1, 1)
    del sd["bias"]
    torch.save(sd, tmp_path / "bad.pth")
    line = one_line_error(r := imlf(e, "weights", "import", "toy-conv", tmp_path / "bad.pth"))
    assert r.returncode == 1
    assert "1 missing keys (bias)" in line and "1 unexpected keys (extra.weight)" in line
    assert "weight: file (2, 3, 1, 1), toy-conv (1, 3, 1, 1)" in line


def test_not_a_checkpoint_and_clobbering_are_refused(env, tmp_path):
    e, _ = env
    (tmp_path / "notes.pth").write_text("hello")
    assert "not a PyTorch checkpoint" in one_line_error(imlf(e, "weights", "import", "toy-conv", tmp_path / "notes.pth"))
    torch.save(toy_weights(0), tmp_path / "a.pth")
    (tmp_path / "cut.pth").write_bytes((tmp_path / "a.pth").read_bytes()[:300])
    assert "not a readable PyTorch checkpoint" in one_line_error(imlf(e, "weights", "import", "toy-conv", tmp_path / "cut.pth"))
    torch.save(toy_weights(1), tmp_path / "b.pth")
    assert imlf(e, "weights", "import", "toy-conv", tmp_path / "a.pth").returncode == 0
    r = imlf(e, "weights", "import", "toy-conv", tmp_path / "b.pth")
    assert r.returncode == 1 and "--overwrite" in one_line_error(r)
    assert imlf(e, "weights", "import", "toy-conv", tmp_path / "b.pth", "--overwrite").returncode == 0
    assert json.loads((cached(e) / "model.json").read_text())["source"]["file"] == "b.pth"


def test_a_pinned_official_hash_is_checked(env, tmp_path):
    e, write_card = env
    torch.save(toy_weights(), tmp_path / "toy-7.pth")
    write_card(sha="0" * 64)
    r = imlf(e, "weights", "import", "toy-conv", tmp_path / "toy-7.pth")
    assert r.returncode == 1 and "--no-verify" in one_line_error(r)
    assert imlf(e, "weights", "import", "toy-conv", tmp_path / "toy-7.pth", "--no-verify").returncode == 0
    write_card(sha=hashlib.sha256((tmp_path / "toy-7.pth").read_bytes()).hexdigest())
    assert imlf(e, "weights", "import", "toy-conv", tmp_path / "toy-7.pth", "--overwrite").returncode == 0


def test_list_path_remove_and_missing_weights(env, tmp_path):
    e, _ = env
    img = tmp_path / "img.png"
    Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(img)
    r = imlf(e, "detect", img, "--model", "toy-conv", "-o", tmp_path / "out")
    assert r.returncode == 2
    line = one_line_error(r)
    assert "https://example.org/toy" in line and "imlf weights import toy-conv" in line
    assert imlf(e, "weights", "path", "toy-conv").returncode == 1
    torch.save({"model": toy_weights()}, tmp_path / "toy-7.pth")
    assert imlf(e, "weights", "import", "toy-conv", tmp_path / "toy-7.pth").returncode == 0
    rows = {row["name"]: row for row in json.loads(imlf(e, "weights", "list", "--json").stdout)}
    assert rows["toy-conv"]["cached"] and rows["toy-conv"]["source"] == "toy-7.pth"
    assert imlf(e, "weights", "path", "toy-conv").stdout.strip() == str(cached(e) / "model.safetensors")
    assert imlf(e, "detect", img, "--model", "toy-conv", "-o", tmp_path / "out", "--device", "cpu").returncode == 0
    assert imlf(e, "weights", "remove", "toy-conv").returncode == 0
    assert not cached(e).exists()


# ------------------------------------------------------------------ a local server speaking the Hub's file API


class FakeHub(LocalHTTPServer):
    """Serves ``/{repo}/resolve/{revision}/{filename}`` (HEAD and GET) like huggingface.co for file downloads."""

    def __init__(self):
        self.files: dict[tuple[str, str], bytes] = {}
        self.requests: list[str] = []
        hub = self

        class Handler(QuietHandler):
            def _serve(self, body: bool):
                hub.requests.append(f"{self.command} {self.path}")
                m = re.match(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$", self.path.split("?")[0])
                if not m:
                    return self._error(404, "RepoNotFound")
                repo, rev, name = m.groups()
                if not any(r == repo for r, _ in hub.files):
                    return self._error(401, "RepoNotFound")
                if rev != "main":
                    return self._error(404, "RevisionNotFound")
                data = hub.files.get((repo, name))
                if data is None:
                    return self._error(404, "EntryNotFound")
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
                self.send_header("X-Repo-Commit", hashlib.sha1(repo.encode()).hexdigest())
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                if body:
                    self.wfile.write(data)

            def _error(self, code: int, kind: str):
                msg = json.dumps({"error": kind}).encode()
                self.send_response(code)
                self.send_header("X-Error-Code", kind)
                self.send_header("X-Error-Message", kind)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(msg)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(msg)

            def do_HEAD(self):
                self._serve(False)

            def do_GET(self):
                self._serve(True)

        self.serve(Handler)


@pytest.fixture
def hub():
    h = FakeHub()
    yield h
    h.close()


def _safetensors_bytes(tmp_path: Path, sd) -> bytes:
    save_file(dict(sd), tmp_path / "x.safetensors")
    return (tmp_path / "x.safetensors").read_bytes()


def test_pull_downloads_verifies_and_caches(env, hub, tmp_path):
    e, write_card = env
    data = _safetensors_bytes(tmp_path, toy_weights(3))
    hub.files[("team/toy-mirror", "toy-conv.safetensors")] = data
    write_card(repo="team/toy-mirror", hub_sha=hashlib.sha256(data).hexdigest())
    e = {**e, "HF_ENDPOINT": hub.url}
    r = imlf(e, "weights", "pull", "toy-conv")
    assert r.returncode == 0, r.stderr
    assert "hash verified" in r.stderr
    assert any(q.startswith("GET /team/toy-mirror/resolve/main/toy-conv.safetensors") for q in hub.requests)
    info = json.loads((cached(e) / "model.json").read_text())
    assert info["source"]["kind"] == "hub" and info["source"]["sha256"] == hashlib.sha256(data).hexdigest()
    from safetensors.torch import load_file

    assert torch.equal(load_file(cached(e) / "model.safetensors")["weight"], toy_weights(3)["weight"])


def test_pull_refuses_a_wrong_hash_and_reports_hub_errors(env, hub, tmp_path):
    e, write_card = env
    hub.files[("team/toy-mirror", "toy-conv.safetensors")] = _safetensors_bytes(tmp_path, toy_weights(3))
    write_card(repo="team/toy-mirror", hub_sha="f" * 64)
    e = {**e, "HF_ENDPOINT": hub.url}
    r = imlf(e, "weights", "pull", "toy-conv")
    assert r.returncode == 1 and "differs from the one the toy-conv card pins" in one_line_error(r)
    assert not cached(e).exists()
    assert "not found" in one_line_error(imlf(e, "weights", "pull", "toy-conv", "--repo", "nobody/none"))
    assert "has no file" in one_line_error(imlf(e, "weights", "pull", "toy-conv", "--filename", "nope.safetensors"))
    write_card(repo="")
    assert "--repo OWNER/NAME" in one_line_error(imlf(e, "weights", "pull", "toy-conv"))


def test_pull_from_an_unreachable_or_offline_hub_is_one_clear_line(env, tmp_path):
    e, write_card = env
    write_card(repo="team/toy-mirror")
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = imlf({**e, "HF_ENDPOINT": f"http://127.0.0.1:{port}"}, "weights", "pull", "toy-conv")
    assert r.returncode == 1 and "cannot reach the Hub" in one_line_error(r)
    r = imlf({**e, "HF_HUB_OFFLINE": "1"}, "weights", "pull", "toy-conv")
    assert r.returncode == 1 and "HF_HUB_OFFLINE is 1" in one_line_error(r)


def test_push_respects_the_license_and_uploads_weights_with_a_card(env, tmp_path, monkeypatch):
    e, write_card = env
    torch.save({"model": toy_weights()}, tmp_path / "toy-7.pth")
    write_card(license="research only", redistribution="false")
    assert imlf(e, "weights", "import", "toy-conv", tmp_path / "toy-7.pth").returncode == 0
    r = imlf(e, "weights", "push", "toy-conv", "--repo", "me/toy")
    assert r.returncode == 1 and "does not allow redistribution" in one_line_error(r)

    write_card()
    for k in ("IMLF_CACHE", "IMLF_CARDS"):
        monkeypatch.setenv(k, e[k])
    from huggingface_hub import HfApi

    from imlforensics import weights
    from imlforensics.weights import cards

    cards.all_cards.cache_clear()
    calls = {}
    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo, **kw: calls.setdefault("repo", (repo, kw)))
    monkeypatch.setattr(HfApi, "create_commit", lambda self, **kw: calls.setdefault("commit", kw))
    try:
        weights.push_weights("toy-conv", "me/toy")
    finally:
        cards.all_cards.cache_clear()
    ops = {op.path_in_repo: op for op in calls["commit"]["operations"]}
    assert calls["repo"][0] == "me/toy" and set(ops) == {"toy-conv.safetensors", "README.md"}
    readme = ops["README.md"].path_or_fileobj.decode()
    assert hashlib.sha256((tmp_path / "toy-7.pth").read_bytes()).hexdigest() in readme
