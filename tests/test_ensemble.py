"""`imlf calibrate` and `imlf ensemble` as a user runs them: priors, abstention, shards, resume after SIGKILL."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def imlf(*args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "imlforensics", *map(str, args)], capture_output=True, text=True,
                          timeout=600, **kw)


@pytest.fixture(scope="module")
def priors(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("priors") / "priors.json"
    r = imlf("calibrate", ROOT / "examples", "--models", "ela,dq,noise", "--out", out)
    assert r.returncode == 0, r.stderr
    return out


def test_calibrate_writes_priors_thresholds_and_monotone_calibrations(priors):
    doc = json.loads(priors.read_text())
    assert doc["format"] == "imlforensics-priors" and doc["prior_metric"] == "f1"
    assert set(doc["members"]) == {"ela", "dq", "noise"}
    for m in doc["members"].values():
        assert 0 < m["prior"] <= 100 and 0 < m["threshold"] < 1 and m["version"]
        probs = m["calibration"]["probs"]
        assert all(b >= a - 1e-9 for a, b in zip(probs, probs[1:]))
    # dq localizes the example forgeries far better than noise does: its prior says so
    assert doc["members"]["dq"]["prior"] > doc["members"]["noise"]["prior"]


@pytest.fixture
def folder(tmp_path, examples) -> Path:
    """Eight JPEGs in nested folders plus a PNG and a text file."""
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    names = ["splice", "copymove", "recompressed", "astronaut", "coffee"]
    for i in range(8):
        shutil.copy(examples[names[i % len(names)]][0], (src / "sub" if i % 2 else src) / f"img{i}.jpg")
    Image.open(examples["splice"][0]).save(src / "photo.png")
    (src / "notes.txt").write_text("not an image")
    return src


def _outputs(out: Path) -> dict[str, bytes]:
    keep = {}
    for p in sorted(out.iterdir()):
        if p.suffix == ".png":
            keep[p.name] = p.read_bytes()
        elif p.suffix == ".json":
            rec = json.loads(p.read_text())
            for k in ("seconds", "detector_seconds", "outputs"):
                rec.pop(k, None)
            for m in rec["details"]["members"]:
                m.pop("seconds", None)
            keep[p.name] = json.dumps(rec, sort_keys=True).encode()
    return keep


def test_ensemble_votes_abstains_and_reports(folder, priors, tmp_path):
    out = tmp_path / "out"
    r = imlf("ensemble", folder, "--priors", priors, "-o", out)
    assert r.returncode == 0, r.stderr
    assert "skipped 1 file(s) that are not images" in r.stderr
    rec = json.loads((out / "photo.json").read_text())
    voted = {m["name"]: m for m in rec["details"]["members"]}
    assert not voted["dq"]["voted"] and voted["dq"]["weight"] == 0 and "abstained: dq" in rec["notes"][-1]
    assert abs(sum(m["weight"] for m in voted.values()) - 1) < 1e-4
    assert (out / "photo.agreement.png").is_file() and (out / "photo.disagreement.png").is_file()
    rows = (out / "summary.csv").read_text().splitlines()
    assert len(rows) == 1 + 9 and all(",done," in r for r in rows[1:])
    splice = json.loads((out / "img0.json").read_text())
    assert splice["score"] > json.loads((out / "img3.json").read_text())["score"]  # forged > authentic


def test_shards_split_the_corpus(folder, priors, tmp_path):
    seen = []
    for k in (1, 2):
        out = tmp_path / f"s{k}"
        assert imlf("ensemble", folder, "--priors", priors, "-o", out, "--shard", f"{k}/2").returncode == 0
        seen.append({p.stem for p in out.glob("*.json")})
    assert not seen[0] & seen[1] and len(seen[0] | seen[1]) == 9


def test_a_killed_run_resumes_to_the_same_outputs(folder, priors, tmp_path):
    whole = tmp_path / "whole"
    assert imlf("ensemble", folder, "--priors", priors, "-o", whole).returncode == 0
    part = tmp_path / "part"
    proc = subprocess.Popen([sys.executable, "-m", "imlforensics", "ensemble", str(folder), "--priors", str(priors),
                             "-o", str(part)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ledger = part / "ledger.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and (not ledger.exists() or len(ledger.read_text().splitlines()) < 3):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = len(ledger.read_text().splitlines())
    assert 3 <= finished < 9, "the run was not interrupted midway"
    (part / ".img5.overlay.png.x1y2z3.tmp").write_bytes(b"half an image")  # as a kill mid-write leaves
    r = imlf("ensemble", folder, "--priors", priors, "-o", part, "--resume")
    assert r.returncode == 0, r.stderr
    assert f"{finished} of 9 image(s) already done" in r.stderr
    assert _outputs(part) == _outputs(whole)
    assert not list(part.glob(".*.tmp"))
