"""`imlf weights import noiseprint|noiseprint++` and `imlf detect --model noiseprint` end to end, with
the authors' real weights (../shared/weights), in a private cache."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.data


def imlf(env: dict, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "imlforensics", *map(str, args)], env=env, capture_output=True,
                          text=True, timeout=600)


def one_line_error(r: subprocess.CompletedProcess) -> str:
    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    return lines[0]


@pytest.fixture(scope="module")
def cache_env(shared_weights, tmp_path_factory):
    """A private cache with both models imported from the authors' files."""
    root = tmp_path_factory.mktemp("np-cache")
    env = dict(os.environ, IMLF_CACHE=str(root), NO_COLOR="1", COLUMNS="200")
    r = imlf(env, "weights", "import", "noiseprint", shared_weights / "noiseprint")
    assert r.returncode == 0, r.stderr
    assert "8 of 51 networks imported" in r.stderr
    r = imlf(env, "weights", "import", "noiseprint++", shared_weights / "noiseprint++" / "noiseprint++.th")
    assert r.returncode == 0, r.stderr
    return env, root


def test_import_converts_every_network(cache_env, shared_weights):
    from safetensors.numpy import load_file

    from imlforensics.models.dncnn import from_tensorflow
    from imlforensics.weights.tfbundle import read_checkpoint

    _, root = cache_env
    flat = load_file(str(root / "weights" / "noiseprint" / "model.safetensors"))
    assert sorted({int(k.split(".")[0][1:]) for k in flat}) == [75, 91, 92, 93, 95, 99, 100, 101]
    ref = from_tensorflow(read_checkpoint(shared_weights / "noiseprint" / "net_jpg93" / "model.index"))
    for key, value in ref.items():
        np.testing.assert_array_equal(flat[f"q93.{key}"], value)
    info = json.loads((root / "weights" / "noiseprint" / "model.json").read_text())
    assert info["source"]["official_hash_checked"] is True
    pp = load_file(str(root / "weights" / "noiseprint++" / "model.safetensors"))
    assert "47.weight" in pp and pp["0.weight"].shape == (64, 3, 3, 3)


def test_import_refuses_a_modified_file(shared_weights, tmp_path):
    env = dict(os.environ, IMLF_CACHE=str(tmp_path / "cache"), NO_COLOR="1", COLUMNS="200")
    nets = tmp_path / "nets" / "net_jpg75"
    shutil.copytree(shared_weights / "noiseprint" / "net_jpg75", nets)
    data = nets / "model.data-00000-of-00001"
    raw = bytearray(data.read_bytes())
    raw[100] ^= 1
    data.write_bytes(bytes(raw))
    line = one_line_error(imlf(env, "weights", "import", "noiseprint", tmp_path / "nets"))
    assert "SHA-256" in line and "net_jpg75/model.data" in line
    line = one_line_error(imlf(env, "weights", "import", "noiseprint", tmp_path / "nets", "--no-verify"))
    assert "checksum mismatch" in line  # the tensor's own crc32c still catches it
    assert not (tmp_path / "cache" / "weights" / "noiseprint" / "model.safetensors").exists()


def test_detect_writes_the_noiseprint_view_and_raw_residual(cache_env, tmp_path):
    env, _ = cache_env
    rng = np.random.default_rng(0)
    rgb = (rng.random((200, 300, 3)) * 60 + 90).astype(np.uint8)
    src = tmp_path / "in.png"
    Image.fromarray(rgb).save(src)
    out = tmp_path / "out"
    r = imlf(env, "detect", src, "--model", "noiseprint", "--save-raw", "--out", out, "--device", "cpu")
    assert r.returncode == 0, r.stderr
    res = np.load(out / "in.noiseprint.npy")
    assert res.shape == (200, 300) and res.dtype == np.float32 and res.std() > 0.05
    view = np.asarray(Image.open(out / "in.noiseprint.png"))
    assert view.shape == (200, 300) and view.max() == 255 and view.min() == 0
    record = json.loads((out / "in.json").read_text())
    assert record["details"]["network"] == "net_jpg101"
    assert record["details"]["map"] in ("em", "energy")
    assert any("small image" in n for n in record["notes"]) == (record["details"]["map"] == "energy")
    r = imlf(env, "detect", src, "--model", "noiseprint++", "--out", tmp_path / "out2", "--device", "cpu")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out2" / "in.noiseprint.png").is_file() and not (tmp_path / "out2" / "in.noiseprint.npy").exists()


def test_missing_weights_say_how_to_get_them(tmp_path):
    env = dict(os.environ, IMLF_CACHE=str(tmp_path / "empty"), NO_COLOR="1", COLUMNS="200")
    src = tmp_path / "in.png"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(src)
    line = one_line_error(imlf(env, "detect", src, "--model", "noiseprint", "--out", tmp_path / "o"))
    assert "imlf weights import noiseprint" in line
