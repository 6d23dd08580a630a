"""The command lines of issue 17: `imlf inspect`, `imlf report`, `--report` on detect and ensemble,
and an 80-column `imlf models`."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from PIL import Image
from typer.testing import CliRunner

from imlforensics.cli import app

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args), env={"COLUMNS": "80", "NO_COLOR": "1", "TERM": "dumb"})


def test_inspect_table_and_json_lines(tmp_path):
    photo = tmp_path / "photo.jpg"
    exif = Image.Exif()
    exif[0x010F], exif[0x0131] = "Canon", "GIMP 2.10.36"
    Image.open(EXAMPLES / "Au" / "coffee.jpg").save(photo, quality=88, exif=exif)
    r = invoke("inspect", str(photo))
    assert r.exit_code == 0, r.output
    assert "Canon" in r.output and "software field names an editor" in r.output and "quality ~88" in r.output
    r = invoke("inspect", "--json", str(photo), str(EXAMPLES / "Gt" / "splice_gt.png"), str(tmp_path / "missing.jpg"))
    assert r.exit_code == 1
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert [Path(x.get("file") or x.get("image")).name for x in lines] == ["photo.jpg", "splice_gt.png", "missing.jpg"]
    assert lines[0]["jpeg"]["quality"] == 88 and lines[1]["jpeg"] is None and "error" in lines[2]


def test_inspect_bad_input_is_one_line(tmp_path):
    bad = tmp_path / "notes.jpg"
    bad.write_text("not an image")
    r = invoke("inspect", str(bad))
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert "notes.jpg" in r.output and "not an image" in r.output


def test_models_fits_80_columns():
    r = invoke("models")
    assert r.exit_code == 0, r.output
    lines = r.output.rstrip("\n").splitlines()
    assert max(len(x) for x in lines) <= 80, "\n".join(lines)
    from imlforensics.detectors.registry import list_detectors

    n = len(list_detectors())
    assert len(lines) <= 2 * n + 8, r.output  # a row takes one or two lines, not 20-40
    assert "Lin, PR 2009" in r.output and "Pattern Recognition" not in r.output


def test_models_json_and_name():
    rows = json.loads(invoke("models", "--json").stdout)
    dq = next(x for x in rows if x["name"] == "dq")
    assert dq["cite"] == "Lin, PR 2009; +2" and "Bianchi & Piva, IEEE TIFS 2012" in dq["paper"]
    for row in rows:  # the short citation names the full reference's first author
        assert row["cite"] and row["cite"].split(",")[0] in row["paper"], row
    r = invoke("models", "dq")
    words = " ".join(re.sub(r"[\u2500-\u257f]", " ", r.output).split())  # without the table's box lines
    assert r.exit_code == 0 and "Bianchi & Piva, IEEE TIFS 2012" in words and "min_evidence" in words
    r = invoke("models", "nosuchmodel")
    assert r.exit_code == 2 and "unknown detector" in r.output


def test_ensemble_report_and_run_file(tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in ("splice.jpg", "recompressed.jpg"):
        shutil.copy(EXAMPLES / "Tp" / name, inputs / name)
    (inputs / "broken.jpg").write_bytes(b"\xff\xd8 nothing else")
    out = tmp_path / "out"
    r = invoke("ensemble", str(inputs), "--out", str(out), "--models", "ela,dq", "--report")
    assert r.exit_code == 1  # broken.jpg failed
    assert sorted(p.stem for p in out.glob("*.json")) == ["recompressed", "splice"]  # only the records
    (run,) = [json.loads(x) for x in (out / "runs.jsonl").read_text().splitlines()]
    assert run["command"] == "ensemble" and run["counts"] == {"images": 3, "done": 2, "failed": 1, "flagged": run["counts"]["flagged"]}
    assert run["failures"][0]["image"].endswith("broken.jpg") and run["failures"][0]["error"]
    assert set(run["members"]) == {"ela", "dq"} and all(m["version"] for m in run["members"].values())
    assert (out / "splice.member-ela.png").is_file()  # --report saves the members' maps
    page = (out / "report" / "pages" / "splice.html").read_text()
    assert "splice.member-dq.png" in page
    assert "broken.jpg" in (out / "report" / "run.html").read_text()
    # a second run into the same folder does not replace the report without --overwrite; --resume
    # does, and adds a line to runs.jsonl
    r = invoke("ensemble", str(inputs), "--out", str(out), "--models", "ela,dq", "--report")
    assert r.exit_code == 2 and "--overwrite" in r.output
    r = invoke("ensemble", str(inputs), "--out", str(out), "--models", "ela,dq", "--report", "--resume")
    assert r.exit_code == 1 and len((out / "runs.jsonl").read_text().splitlines()) == 2
    assert "broken.jpg" in (out / "report" / "run.html").read_text()


def test_detect_report_and_report_command(tmp_path):
    out = tmp_path / "out"
    r = invoke("detect", str(EXAMPLES / "Tp" / "splice.jpg"), "--out", str(out), "--report")
    assert r.exit_code == 0, r.output
    assert (out / "report" / "index.html").is_file()
    (run,) = [json.loads(x) for x in (out / "runs.jsonl").read_text().splitlines()]
    assert run["command"] == "detect" and run["detector"]["name"] == "dq" and run["counts"]["done"] == 1
    r = invoke("report", str(out))
    assert r.exit_code == 2 and "--overwrite" in r.output
    r = invoke("report", str(out), "--out", str(tmp_path / "rep2"))
    assert r.exit_code == 0 and (tmp_path / "rep2" / "pages" / "splice.html").is_file()
    r = invoke("report", str(tmp_path / "nothing"))
    assert r.exit_code == 2 and "no such folder" in r.output and "Traceback" not in r.output
