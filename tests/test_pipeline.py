"""The detect pipeline as batches use it: overlapped decoding and writing, order, failures, layers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imlforensics.detectors.base import Detector
from imlforensics.errors import OutputError
from imlforensics.runs.detect import detect_file, detect_stream


class Layered(Detector):
    """Heat = luma / 255 with one extra layer; fails with a bug on images named bug*."""

    name = "toy-layered"

    def analyse(self, img):
        if img.path is not None and img.path.name.startswith("bug"):
            raise ZeroDivisionError("a bug in the detector")
        heat = img.gray / 255.0
        return heat, float(heat.max()), {"_layers": {"agreement": 1.0 - heat}}


@pytest.fixture
def pictures(tmp_path) -> list[Path]:
    rng = np.random.default_rng(0)
    folder = tmp_path / "in"
    folder.mkdir()
    paths = []
    for i, name in enumerate(["a.png", "bug.png", "c.png", "broken.png", "e.png"]):
        p = folder / name
        Image.fromarray(rng.integers(0, 256, (40 + i, 50, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    paths[3].write_bytes(b"not an image")
    return paths


def test_stream_yields_in_order_with_failures_and_writes_what_detect_file_writes(pictures, tmp_path):
    out, ref = tmp_path / "stream", tmp_path / "ref"
    out.mkdir(), ref.mkdir()
    results = list(detect_stream(Layered(), [(p, p.stem) for p in pictures], out))
    assert [r[0] for r in results] == pictures
    errors = {path.name: exc for path, _, exc in results if exc is not None}
    assert set(errors) == {"bug.png", "broken.png"}
    assert isinstance(errors["bug.png"], ZeroDivisionError) and "not a recognised image" in str(errors["broken.png"])
    for path, rec, exc in results:
        if exc is not None:
            assert not list(out.glob(f"{path.stem}.*"))  # a failed image writes nothing
            continue
        assert rec["outputs"]["agreement"].endswith(f"{path.stem}.agreement.png")
        detect_file(Layered(), path, ref, path.stem)
        for suffix in (".heatmap.png", ".mask.png", ".overlay.png", ".agreement.png"):
            assert (out / f"{path.stem}{suffix}").read_bytes() == (ref / f"{path.stem}{suffix}").read_bytes()


def test_an_existing_layer_output_refuses_the_image_before_anything_is_written(pictures, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "a.agreement.png").write_bytes(b"precious")
    with pytest.raises(OutputError, match="exists"):
        detect_file(Layered(), pictures[0], out, "a")
    assert sorted(p.name for p in out.iterdir()) == ["a.agreement.png"]
    assert (out / "a.agreement.png").read_bytes() == b"precious"
    detect_file(Layered(), pictures[0], out, "a", overwrite=True)
    assert (out / "a.agreement.png").read_bytes() != b"precious" and (out / "a.json").is_file()
