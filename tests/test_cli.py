"""`imlf detect`, `imlf eval` and `imlf models` as a user and a shell script see them."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from imlforensics.cli import app

runner = CliRunner()


def _hash8(path: Path) -> str:
    return hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:8]


def imlf(*args: str):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def scene(tmp_path) -> Path:
    """A dark picture with one bright rectangle (the toy detector's 'forgery')."""
    rgb = np.full((60, 80, 3), 20, np.uint8)
    rgb[10:30, 40:70] = 250
    p = tmp_path / "in" / "scene.png"
    p.parent.mkdir()
    Image.fromarray(rgb).save(p)
    return p


def test_detect_writes_all_outputs_and_a_complete_report(toy_detector, scene, tmp_path):
    out = tmp_path / "out"
    r = imlf("detect", scene, "--model", "toy-bright", "--out", out)
    assert r.exit_code == 0, r.output
    for suffix in (".heatmap.png", ".mask.png", ".overlay.png", ".json"):
        assert (out / f"scene{suffix}").is_file()
    rep = json.loads((out / "scene.json").read_text())
    assert rep["sha256"] == hashlib.sha256(scene.read_bytes()).hexdigest()
    assert (rep["width"], rep["height"]) == (80, 60)
    assert rep["detector"]["name"] == "toy-bright" and rep["threshold"] == 0.5
    assert rep["tampered_fraction"] == pytest.approx(20 * 30 / (60 * 80))
    assert rep["boxes"][0] | {"mean_heat": None} == {"x": 40, "y": 10, "width": 30, "height": 20, "area": 600, "mean_heat": None}
    mask = np.asarray(Image.open(out / "scene.mask.png"))
    assert set(np.unique(mask)) == {0, 255} and (mask[10:30, 40:70] == 255).all()
    assert np.asarray(Image.open(out / "scene.overlay.png")).shape == (60, 80, 3)
    assert not list(out.glob(".*.tmp")), "temporary files left behind"


def test_json_lines_on_stdout_and_nothing_else(toy_detector, scene, tmp_path):
    second = scene.with_name("second.png")
    second.write_bytes(scene.read_bytes())
    r = imlf("detect", scene.parent, "--model", "toy-bright", "--out", tmp_path / "o", "--json", "--save-raw")
    assert r.exit_code == 0
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 2
    recs = [json.loads(line) for line in lines]
    assert {Path(x["image"]).name for x in recs} == {"scene.png", "second.png"}
    raw = np.load(tmp_path / "o" / "scene.heatmap.npy")
    assert raw.dtype == np.float32 and raw.shape == (60, 80)


def test_bad_inputs_fail_one_line_each_while_others_go_on(toy_detector, scene, tmp_path):
    d = scene.parent
    (d / "empty.jpg").write_bytes(b"")
    (d / "text.jpg").write_text("definitely not a picture\n")
    good = (d / "scene.png").read_bytes()
    (d / "cut.png").write_bytes(good[: len(good) // 2])
    Image.new("L", (3000, 2000)).save(d / "huge.png")
    r = imlf("detect", d / "missing.jpg", d, "--model", "toy-bright", "--out", tmp_path / "o", "--max-pixels", "1M")
    assert r.exit_code == 1
    errors = [line for line in r.stderr.splitlines() if "error" in line]
    reasons = {Path(line.split(": ")[2]).name: line for line in errors}
    assert set(reasons) == {"missing.jpg", "empty.jpg", "text.jpg", "cut.png", "huge.png"}, r.stderr
    assert "no such file" in reasons["missing.jpg"] and "empty file" in reasons["empty.jpg"]
    assert "not a recognised image" in reasons["text.jpg"] and "truncated" in reasons["cut.png"]
    assert "max-pixels" in reasons["huge.png"]
    assert "Traceback" not in r.output
    assert (tmp_path / "o" / "scene.json").is_file()  # the good file was done


def test_existing_outputs_are_not_replaced_without_overwrite(toy_detector, scene, tmp_path):
    out = tmp_path / "o"
    assert imlf("detect", scene, "-m", "toy-bright", "-o", out).exit_code == 0
    (out / "scene.json").write_text("precious")
    r = imlf("detect", scene, "-m", "toy-bright", "-o", out)
    assert r.exit_code == 1 and "--overwrite" in r.stderr
    assert (out / "scene.json").read_text() == "precious"
    assert imlf("detect", scene, "-m", "toy-bright", "-o", out, "--overwrite").exit_code == 0
    assert json.loads((out / "scene.json").read_text())["score"] > 0.9


def test_an_input_is_never_overwritten(toy_detector, scene):
    victim = scene.with_name("scene.mask.png")  # what scene.png's mask output would be called
    Image.new("RGB", (8, 8), (1, 2, 3)).save(victim)
    before = victim.read_bytes()
    r = imlf("detect", scene, victim, "-m", "toy-bright", "-o", scene.parent, "--overwrite")
    assert r.exit_code == 1 and "it is an input file" in r.stderr
    assert victim.read_bytes() == before


def test_unwritable_output_folder_is_a_usage_error(toy_detector, scene, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = imlf("detect", scene, "-m", "toy-bright", "-o", blocker / "sub")
    assert r.exit_code == 2 and "not writable" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_fail_above_gates_on_the_verdict(toy_detector, scene, tmp_path):
    assert imlf("detect", scene, "-m", "toy-bright", "-o", tmp_path / "a", "--fail-above", "0.5").exit_code == 3
    assert imlf("detect", scene, "-m", "toy-bright", "-o", tmp_path / "b", "--fail-above", "0.99").exit_code == 0


def test_usage_errors_exit_2(scene, tmp_path):
    r = imlf("detect", scene, "--model", "no-such-model", "-o", tmp_path / "o")
    assert r.exit_code == 2 and "unknown detector" in r.stderr and "ela" in r.stderr
    assert imlf("detect", scene, "--threshold", "1.5").exit_code == 2


def test_same_stem_in_two_folders_gets_two_outputs(toy_detector, scene, tmp_path):
    other = tmp_path / "other" / "scene.png"
    other.parent.mkdir()
    Image.new("RGB", (10, 10)).save(other)
    r = imlf("detect", scene, other, "-m", "toy-bright", "-o", tmp_path / "o", "--json")
    assert r.exit_code == 0
    assert len(list((tmp_path / "o").glob("scene*.json"))) == 2


def test_glob_patterns_expand(toy_detector, scene, tmp_path):
    r = imlf("detect", str(scene.parent / "*.png"), "-m", "toy-bright", "-o", tmp_path / "o", "--json")
    assert r.exit_code == 0 and len(r.stdout.strip().splitlines()) == 1
    r = imlf("detect", str(scene.parent / "*.tif"), "-m", "toy-bright", "-o", tmp_path / "o2")
    assert r.exit_code == 1 and "no image files match" in r.stderr


def test_eval_from_a_detector_equals_eval_from_written_maps(toy_detector, examples, tmp_path):
    ds = Path(__file__).resolve().parents[1] / "examples"
    live = imlf("eval", ds, "-m", "toy-bright", "--json", "--csv", tmp_path / "per_image.csv")
    assert live.exit_code == 0, live.output
    images = [str(p) for p, _ in examples.values()]
    assert imlf("detect", *images, "-m", "toy-bright", "-o", tmp_path / "maps", "--save-raw").exit_code == 0
    saved = imlf("eval", ds, "--pred", tmp_path / "maps", "--json")
    a, b = json.loads(live.stdout), json.loads(saved.stdout)
    assert a["pixel"] == pytest.approx(b["pixel"]) and a["image"] == pytest.approx(b["image"])
    assert a["pixel"]["n"] == 3 and a["authentic"] == 3
    rows = (tmp_path / "per_image.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + len(examples) and rows[0].startswith("image,authentic,score")


def test_models_lists_every_detector_with_its_paper():
    r = imlf("models", "--json")
    rows = {m["name"]: m for m in json.loads(r.stdout)}
    classical = {"ela", "noise", "jpeg-grid", "dq", "copymove"}
    deep = {"mesorch", "mesorch-p", "sparsevit", "iml-vit", "trufor"}
    assert classical | deep <= set(rows)
    assert all(m["paper"] and m["license"] for m in rows.values())
    assert all(rows[n]["kind"] == "classical" and rows[n]["weights"] == "not needed" for n in classical)
    assert all(rows[n]["kind"] == "deep" and (rows[n]["weights"] == "not cached" or rows[n]["weights"].startswith("cached"))
               for n in deep)
    assert rows["dq"]["input"] == "JPEG only"
    assert sum(m["default"] for m in rows.values()) == 1


def test_real_process_prints_no_traceback(tmp_path):
    r = subprocess.run([sys.executable, "-m", "imlforensics", "detect", str(tmp_path / "nope.jpg"), "-o", str(tmp_path / "o")],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [f"imlf: error: {tmp_path / 'nope.jpg'}: no such file"]
    assert r.stdout == ""


def test_default_detector_localizes_the_example_splice_and_falls_back_on_png(examples, tmp_path):
    from imlforensics.evaluation.metrics import pixel_scores

    splice, gt = examples["splice"]
    png = tmp_path / "splice.png"
    Image.open(splice).save(png)
    r = imlf("detect", splice, png, "-o", tmp_path / "o", "--json", "--save-raw")
    assert r.exit_code == 0, r.output
    recs = {Path(x["image"]).suffix: x for x in map(json.loads, r.stdout.splitlines())}
    assert recs[".jpg"]["detector"]["name"] == "dq"
    assert recs[".png"]["detector"]["name"] == "ela" and "dq does not apply" in recs[".png"]["notes"][0]
    heat = np.load(tmp_path / "o" / f"{splice.stem}-{_hash8(splice)}.heatmap.npy")
    assert pixel_scores(heat, gt).f1 > 0.7


def test_bad_detector_options_are_usage_errors(scene, tmp_path):
    for opt in ("window=0", "no_such_option=1"):
        r = imlf("detect", scene, "-m", "ela", "-O", opt, "-o", tmp_path / "o")
        assert r.exit_code == 2 and "bad options for detector ela" in r.stderr, r.output
