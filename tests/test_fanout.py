"""Large runs: outputs in two levels of hashed sub-folders, found again by resume and `imlf eval --pred`;
`--input-list` files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imlforensics.evaluation.datasets import Sample
from imlforensics.evaluation.evaluate import DirectorySource
from imlforensics.io.inputs import FANOUT_OVER, fanout_stem, output_stems, read_input_list
from imlforensics.runs.batch import remove_stale_temporaries
from imlforensics.runs.detect import detect_file


def test_stems_fan_out_past_the_threshold_only():
    few = [Path(f"/x/img{i}.jpg") for i in range(3)]
    assert output_stems(few) == {p: p.stem for p in few}
    stems = output_stems(few, fanout=True)
    for p, s in stems.items():
        a, b, name = s.split("/")
        assert name == p.stem and len(a) == len(b) == 2 and s == fanout_stem(p.stem)
    assert len({s.split("/")[0] for s in output_stems([Path(f"i{k}.jpg") for k in range(2000)], True).values()}) == 256
    many = [Path(f"/x/{i}.jpg") for i in range(FANOUT_OVER + 1)]
    assert output_stems(many)[many[0]].count("/") == 2 and output_stems(many[:-1])[many[0]] == "0"


def test_fanned_outputs_are_written_found_by_eval_and_cleaned_on_resume(tmp_path, toy_detector, examples):
    out = tmp_path / "out"
    out.mkdir()
    src = examples["splice"][0]
    stem = fanout_stem("splice")
    rec = detect_file(toy_detector(), src, out, stem, save_raw=True)
    assert Path(rec["outputs"]["json"]) == out / (stem + ".json") and (out / (stem + ".heatmap.npy")).is_file()
    heat, score, _ = DirectorySource(out)(Sample(src, None))
    assert np.array_equal(heat, np.load(out / (stem + ".heatmap.npy"))) and score == rec["score"]
    stale = (out / stem).with_name(".splice.overlay.png.abc123.tmp")
    stale.write_bytes(b"half")
    other = (out / stem).with_name(".other.mask.png.abc123.tmp")
    other.write_bytes(b"another shard's")
    assert remove_stale_temporaries(out, [stem]) == 1 and not stale.exists() and other.exists()


def test_input_list_lines(tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text("# corpus\na.jpg\n\n  \ndir with space/b.png\r\n/abs/c.tif\n")
    assert read_input_list(listing) == ["a.jpg", "dir with space/b.png", "/abs/c.tif"]
    from imlforensics.errors import ImlfError

    with pytest.raises(ImlfError, match="--input-list"):
        read_input_list(tmp_path / "missing.txt")
