"""The TensorFlow-free checkpoint reader, on the authors' Noiseprint checkpoints and damaged copies."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from imlforensics.errors import ImlfError
from imlforensics.weights.tfbundle import (
    CheckpointError,
    crc32c,
    masked_crc32c,
    read_checkpoint,
    read_index,
)


@pytest.fixture(scope="module")
def net101(shared_weights) -> Path:
    return shared_weights / "noiseprint" / "net_jpg101"


def test_crc32c_known_values():
    # RFC 3720 (iSCSI) test vectors for CRC-32C
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(bytes(32)) == 0x8A9136AA
    assert crc32c(bytes([0xFF] * 32)) == 0x62A8AB43
    assert masked_crc32c(b"") != crc32c(b"")


@pytest.mark.data
def test_reads_every_real_checkpoint(shared_weights):
    folders = sorted((shared_weights / "noiseprint").glob("net_jpg*/model.index"))
    assert len(folders) >= 1
    for index in folders:
        tensors = read_checkpoint(index)  # every tensor's crc32c is checked
        assert tensors["level_0/conv/weights"].shape == (3, 3, 1, 64)
        assert tensors["level_8/conv/weights"].shape == (3, 3, 64, 64)
        assert tensors["level_16/conv/weights"].shape == (3, 3, 64, 1)
        assert tensors["level_5/bn/moving_variance"].dtype == np.float32
        assert (tensors["level_5/bn/moving_variance"] > 0).all()
        assert tensors["global_step"].dtype == np.int32
        assert len([k for k in tensors if k.startswith("level_")]) == 2 * 2 + 15 * 5
        # offsets tile the data file exactly
        entries = read_index(index)
        end = max(e["offset"] + e["size"] for e in entries.values())
        assert end == (index.parent / "model.data-00000-of-00001").stat().st_size


def _copy(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for f in src.iterdir():
        shutil.copyfile(f, dst / f.name)
    return dst / "model.index"


@pytest.mark.data
@pytest.mark.parametrize("damage", ["truncate-index", "flip-index", "truncate-data", "flip-data", "not-a-table", "empty-index"])
def test_damaged_checkpoints_fail_clearly(net101, tmp_path, damage):
    index = _copy(net101, tmp_path / "ckpt")
    data = index.with_name("model.data-00000-of-00001")
    raw_i, raw_d = index.read_bytes(), data.read_bytes()
    if damage == "truncate-index":
        index.write_bytes(raw_i[: len(raw_i) // 2])
    elif damage == "flip-index":
        index.write_bytes(raw_i[:300] + bytes([raw_i[300] ^ 0x40]) + raw_i[301:])
    elif damage == "truncate-data":
        data.write_bytes(raw_d[: len(raw_d) - 1000])
    elif damage == "flip-data":
        data.write_bytes(raw_d[:5000] + bytes([raw_d[5000] ^ 0x01]) + raw_d[5001:])
    elif damage == "not-a-table":
        index.write_bytes(b"PK\x03\x04" + bytes(100))
    else:
        index.write_bytes(b"")
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(index)
    assert isinstance(info.value, ImlfError)
    msg = str(info.value)
    assert "\n" not in msg and len(msg) < 200
    expected = {"truncate-index": "footer", "flip-index": "checksum", "truncate-data": "past the end",
                "flip-data": "checksum", "not-a-table": "footer", "empty-index": "footer"}[damage]
    assert expected in msg


def test_missing_files_fail_clearly(tmp_path):
    with pytest.raises(CheckpointError, match="cannot read checkpoint index"):
        read_checkpoint(tmp_path / "model.index")
