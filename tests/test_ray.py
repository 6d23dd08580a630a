"""``--engine ray``: the same outputs as the local engine, resume after the driver is killed,
failures and abstentions as locally. One local Ray instance (2 CPUs) serves the whole module: the
commands join it with ``--address``."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imlforensics.detectors.base import Detector
from imlforensics.errors import NotApplicable

ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'imlforensics[ray]')")

ROOT = Path(__file__).resolve().parents[1]
EX = ROOT / "examples"


def imlf(*args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "imlforensics", *map(str, args)], capture_output=True, text=True,
                          timeout=600, **kw)


@pytest.fixture(scope="module")
def address() -> str:
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=300 * 2**20, log_to_driver=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """20 images: 18 JPEGs (some in a sub-folder), a PNG (dq abstains) and a corrupt JPEG."""
    src = tmp_path_factory.mktemp("twenty")
    (src / "sub").mkdir()
    sources = sorted(EX.glob("*/*.jpg"))
    for i in range(18):
        im = Image.open(sources[i % len(sources)]).convert("RGB")
        im = im.resize((im.width * (6 + i % 4) // 10, im.height * (6 + i % 4) // 10))
        im.save((src / "sub" if i % 3 else src) / f"img{i:02d}.jpg", quality=80 + i)
    Image.open(EX / "Tp" / "splice.jpg").save(src / "photo.png")
    (src / "broken.jpg").write_bytes((EX / "Tp" / "splice.jpg").read_bytes()[:2000])
    return src


@pytest.fixture(scope="module")
def local_twenty(folder, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """The local engine's run over the 20 images (``--jobs 2``), shared by the tests that compare."""
    out = tmp_path_factory.mktemp("local-twenty") / "out"
    return out, imlf("ensemble", folder, "-o", out, "--jobs", "2")


def outputs(out: Path) -> dict[str, bytes]:
    """Every output file's bytes, JSON without its timings and with the output folder's name
    replaced, summary.csv without its seconds column (timings differ between any two runs)."""
    keep = {}
    for p in sorted(out.rglob("*")):
        name = str(p.relative_to(out))
        if p.suffix in (".png", ".npy"):
            keep[name] = p.read_bytes()
        elif p.suffix == ".json":
            rec = json.loads(p.read_text().replace(str(out), "OUT").replace(f'"{out.name}/', '"OUT/'))
            for k in ("seconds", "detector_seconds"):
                rec.pop(k, None)
            for m in rec.get("details", {}).get("members", []):
                m.pop("seconds", None)
            keep[name] = json.dumps(rec, sort_keys=True).encode()
        elif p.name == "summary.csv":
            rows = list(csv.reader(io.StringIO(p.read_text())))
            keep[name] = json.dumps([r[:5] + r[6:] for r in rows]).encode()
    return keep


def test_ensemble_on_the_examples_is_identical(address, tmp_path):
    """Relative paths (inputs and --out) mean in Ray's workers what they mean where imlf runs."""
    local, distributed = tmp_path / "local", tmp_path / "ray"
    inputs = [os.path.relpath(EX / "Tp", tmp_path), os.path.relpath(EX / "Au", tmp_path)]
    a = imlf("ensemble", *inputs, "-o", "local", "--save-raw", cwd=tmp_path)
    b = imlf("ensemble", *inputs, "-o", "ray", "--save-raw", "--engine", "ray", "--address", address, cwd=tmp_path)
    assert a.returncode == 0 and b.returncode == 0, b.stderr
    assert len(b.stderr.strip().splitlines()) == len(a.stderr.strip().splitlines())  # no Ray noise
    assert "done 6, failed 0, flagged 3" in b.stderr  # every tampered example, no authentic one (issue 15)
    got, want = outputs(distributed), outputs(local)
    assert len(want) == 6 * 7 + 1 and got == want


def test_detect_on_the_examples_is_identical(address, tmp_path):
    local, distributed = tmp_path / "local", tmp_path / "ray"
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join(str(p) for p in sorted(EX.glob("*/*.jpg"))) + "\n\n# a comment\n")
    a = imlf("detect", "--input-list", listing, "-o", local, "--json")
    b = imlf("detect", "--input-list", listing, "-o", distributed, "--json", "--engine", "ray", "--address", address)
    assert a.returncode == 0 and b.returncode == 0, b.stderr
    assert len(a.stdout.splitlines()) == len(b.stdout.splitlines()) == 6
    assert outputs(distributed) == outputs(local) and len(outputs(local)) == 6 * 4


def test_twenty_images_identical_failure_reported_abstention_kept(address, folder, local_twenty, tmp_path):
    (local, a), distributed = local_twenty, tmp_path / "ray"
    b = imlf("ensemble", folder, "-o", distributed, "--engine", "ray", "--address", address)
    # the corrupt file is one line of error; the 19 others are done
    for r in (a, b):
        assert r.returncode == 1 and "Traceback" not in r.stderr
        assert "broken.jpg" in r.stderr and "done 19, failed 1" in r.stderr
    assert outputs(distributed) == outputs(local) and len(outputs(local)) == 19 * 6 + 1
    rec = json.loads((distributed / "photo.json").read_text())  # dq does not apply to a PNG: it abstains
    dq = next(m for m in rec["details"]["members"] if m["name"] == "dq")
    assert not dq["voted"] and dq["weight"] == 0 and "abstained: dq" in rec["notes"][-1]
    assert any(",failed," in r and "broken.jpg" in r for r in (distributed / "summary.csv").read_text().splitlines())


def test_resume_after_the_driver_is_killed(address, folder, local_twenty, tmp_path):
    whole = local_twenty[0]
    part = tmp_path / "part"
    proc = subprocess.Popen([sys.executable, "-m", "imlforensics", "ensemble", str(folder), "-o", str(part),
                             "--engine", "ray", "--address", address], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ledger = part / "ledger.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and (not ledger.exists() or len(ledger.read_text().splitlines()) < 4):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    lines = ledger.read_text().splitlines()
    assert 4 <= len(lines) < 20, "the driver was not killed midway"
    finished = sum(json.loads(line)["status"] == "done" for line in lines if line.endswith("}"))
    r = imlf("ensemble", folder, "-o", part, "--resume", "--engine", "ray", "--address", address)
    assert r.returncode == 1 and f"{finished} of 20 image(s) already done" in r.stderr
    got, want = outputs(part), outputs(whole)
    del got["summary.csv"], want["summary.csv"]  # a resumed run lists the earlier images first
    assert got == want
    assert not list(part.rglob(".*.tmp"))


def test_eval_and_make_mask_pairs_are_identical(address, tmp_path):
    local, distributed = tmp_path / "local.json", tmp_path / "ray.json"
    assert imlf("eval", EX, "-m", "ela", "--report", local).returncode == 0
    r = imlf("eval", EX, "-m", "ela", "--report", distributed, "--engine", "ray", "--address", address)
    assert r.returncode == 0, r.stderr

    def strip(p: Path) -> dict:
        doc = json.loads(p.read_text())
        doc.pop("seconds_median")
        for rec in doc["records"]:
            rec.pop("seconds")
        return doc

    assert strip(distributed) == strip(local) and len(strip(local)["records"]) == 6
    pairs = tmp_path / "pairs.csv"
    pairs.write_text(f"original,tampered\n{EX / 'Au' / 'coffee.jpg'},{EX / 'Tp' / 'splice.jpg'}\n"
                     f"{EX / 'Au' / 'rocket.jpg'},{EX / 'Tp' / 'copymove.jpg'}\n")  # the second is unrelated: fails
    a = imlf("make-mask", "--pairs", pairs, "--out", tmp_path / "ds-local")
    b = imlf("make-mask", "--pairs", pairs, "--out", tmp_path / "ds-ray", "--engine", "ray", "--address", address)
    assert a.returncode == b.returncode == 1 and "done 1, failed 1" in b.stderr
    for name in ("Tp/splice.jpg", "Gt/splice_gt.png", "dataset.json", "failed.csv"):
        assert (tmp_path / "ds-ray" / name).read_bytes() == (tmp_path / "ds-local" / name).read_bytes(), name
    reports = [json.loads((tmp_path / d / "reports" / "splice.json").read_text()) for d in ("ds-local", "ds-ray")]
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in reports][0] == \
        {k: v for k, v in reports[1].items() if k != "seconds"}


def test_fanned_out_outputs_from_both_engines_merge(address, folder, tmp_path):
    """Two-level sub-folders (as runs of more than 10,000 images get): half the files by the local
    engine, half by Ray, into one folder; the same files as one local run, and resume cleans up."""
    from imlforensics.detectors.registry import load_detector
    from imlforensics.io.inputs import expand_inputs, fanout_stem, output_stems
    from imlforensics.runs.batch import remove_stale_temporaries, run_batch
    from imlforensics.runs.ray import run_committee

    files = [f for f in expand_inputs([str(folder)], recursive=True)[0] if f.name != "broken.jpg"][:8]
    stems = output_stems(files, fanout=True)
    assert stems[files[0]] == fanout_stem(files[0].stem) and stems[files[0]].count("/") == 2
    items = [(str(f), stems[f]) for f in files]
    committee = load_detector("committee")

    def job(out: Path) -> dict:
        return {"out_dir": str(out), "threshold": 0.5, "overwrite": False, "save_raw": False,
                "max_pixels": 10**8, "protected": [str(f.resolve()) for f in files]}

    one, merged = tmp_path / "one", tmp_path / "merged"
    assert all(r["status"] == "done" for r in run_batch(items, lambda: committee, job(one), 1, committee))
    assert all(r["status"] == "done" for r in run_batch(items[:4], lambda: committee, job(merged), 1, committee))
    ray_results = list(run_committee(items[4:], committee, {}, job(merged), 1, 0.0))
    assert [r["image"] for r in ray_results] == [p for p, _ in items[4:]]  # in input order
    assert outputs(merged) == outputs(one) and len(outputs(one)) == 8 * 6
    assert all(p.parent.parent.parent == merged for p in merged.rglob("*.json"))
    stale = merged / (fanout_stem(files[0].stem) + ".x")
    stale = stale.with_name(f".{files[0].stem}.mask.png.abc.tmp")
    stale.write_bytes(b"half")
    assert remove_stale_temporaries(merged, stems.values()) == 1 and not stale.exists()


def test_missing_ray_is_one_line_of_error(tmp_path):
    code = ("import sys; sys.modules['ray'] = None; from imlforensics.cli import main; "
            f"sys.argv = ['imlf', 'detect', {str(EX / 'Tp' / 'splice.jpg')!r}, '-o', {str(tmp_path)!r}, '--engine', 'ray']; main()")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == ["imlf: error: --engine ray needs Ray: pip install 'imlforensics[ray]'"]
    assert not list(tmp_path.iterdir())



class ToyDeep(Detector):
    """A stand-in for a deep member that needs no weights: abstains on PNGs; its map is the smoothed
    luma. Ray's workers get this class by value (the tests folder is not importable there)."""

    name, kind = "toy-deep", "deep"

    def __init__(self, device: str = "auto"):
        self.device = device

    def analyse(self, img):
        import cv2

        if img.format == "PNG":
            raise NotApplicable("toy-deep reads JPEGs only")
        heat = cv2.GaussianBlur(img.gray.astype(np.float32) / 255.0, (0, 0), 3)
        return heat, float(heat.max()), {"notes": ["toy-deep"]}


def test_a_deep_member_in_an_actor_stage_votes_and_abstains_as_locally(address, folder, tmp_path, monkeypatch):
    from functools import partial

    from imlforensics.committee.detector import DEFAULT_PRIORS
    from imlforensics.detectors import registry
    from imlforensics.io.inputs import expand_inputs, output_stems
    from imlforensics.runs.batch import run_batch
    from imlforensics.runs.ray import run_detect

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    monkeypatch.setitem(registry._DETECTORS, "toy-deep", ToyDeep)
    doc = json.loads(DEFAULT_PRIORS.read_text())
    doc["members"]["toy-deep"] = doc["members"]["ela"]
    priors = tmp_path / "priors.json"
    priors.write_text(json.dumps(doc))
    opts = {"members": "ela,dq,toy-deep", "priors": str(priors)}
    files = [f for f in expand_inputs([str(folder)], recursive=True)[0] if f.name != "broken.jpg"][:5]
    files.append(folder / "photo.png")
    stems = output_stems(files)
    items = [(str(f), stems[f]) for f in files]

    def job(out: Path) -> dict:
        out.mkdir()
        return {"out_dir": str(out), "threshold": 0.5, "overwrite": False, "save_raw": True,
                "max_pixels": 10**8, "protected": [str(f.resolve()) for f in files]}

    local = registry.load_detector("committee", **opts)
    assert all(r["status"] == "done" for r in run_batch(items, None, job(tmp_path / "local"), 1, local))
    final = partial(registry.load_detector, "committee", **opts, external=["toy-deep"])
    results = list(run_detect(items, job(tmp_path / "ray"), final, {"toy-deep": ToyDeep}, 1, 0.0))
    assert [r["status"] for r in results] == ["done"] * 6
    assert outputs(tmp_path / "ray") == outputs(tmp_path / "local") and len(outputs(tmp_path / "local")) == 6 * 7
    png = {m["name"]: m for m in json.loads((tmp_path / "ray" / "photo.json").read_text())["details"]["members"]}
    assert not png["toy-deep"]["voted"] and not png["dq"]["voted"] and png["ela"]["voted"]
    jpg = {m["name"]: m for m in results[0]["record"]["details"]["members"]}
    assert jpg["toy-deep"]["voted"] and jpg["toy-deep"]["weight"] > 0
