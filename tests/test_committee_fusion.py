"""Issue 15: members abstain without their trace; several datasets weigh equally; the learned voter
reproduces itself from its file; the evaluation protocols against hand-computed cases."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imlforensics import load_detector
from imlforensics.committee.calibrate import calibrate, priors_document
from imlforensics.committee.detector import Committee
from imlforensics.committee.fusion import Stacker, fit_logistic
from imlforensics.evaluation.datasets import Sample
from imlforensics.evaluation.metrics import pixel_scores, soft_f1

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def _textured(seed: int = 0, size: int = 256) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (size // 8, size // 8, 3), dtype=np.uint8)
    img = np.asarray(Image.fromarray(base).resize((size, size), Image.BICUBIC)).astype(np.int16)
    return np.clip(img + rng.integers(-6, 7, img.shape), 0, 255).astype(np.uint8)


def _jpeg(rgb: np.ndarray, q: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=q)
    return buf.getvalue()


# --- applicability: each detector says whether it saw its kind of trace ---------------------------

def test_dq_abstains_on_single_compression_and_applies_on_double():
    once = load_detector("dq").predict(EXAMPLES / "Au" / "astronaut.jpg")  # compressed once
    assert not once.applicable and once.heatmap.max() == 0
    spliced = load_detector("dq").predict(EXAMPLES / "Tp" / "splice.jpg")  # double-compressed background
    assert spliced.applicable and spliced.heatmap.max() > 0.5


def test_copymove_applies_only_where_it_finds_a_duplicated_region():
    det = load_detector("copymove")
    assert det.predict(EXAMPLES / "Tp" / "copymove.jpg").applicable
    assert not det.predict(EXAMPLES / "Tp" / "splice.jpg").applicable


def test_jpeg_grid_abstains_on_a_never_compressed_image(tmp_path):
    png = tmp_path / "raw.png"
    Image.fromarray(_textured(1)).save(png)
    det = load_detector("jpeg-grid")
    assert not det.predict(png).applicable
    assert det.predict(EXAMPLES / "Tp" / "splice.jpg").applicable
    assert load_detector("ela").predict(png).applicable  # ELA always looks


def test_committee_counts_a_member_without_its_trace_as_abstaining():
    com = Committee(members="ela,noise,dq,copymove", voter="equal")
    pred = com.predict(EXAMPLES / "Tp" / "copymove.jpg")
    rows = {r["name"]: r for r in pred.extras["members"]}
    assert not rows["dq"]["voted"] and "no trace" in rows["dq"]["reason"]  # no double compression here
    assert rows["copymove"]["voted"] and rows["copymove"]["weight"] > 0
    # its abstention is neutral: the committee fuses exactly as if it were not a member
    without = Committee(members="ela,noise,copymove", voter="equal").predict(EXAMPLES / "Tp" / "copymove.jpg")
    assert np.allclose(pred.heatmap, without.heatmap, atol=1e-6)


def test_default_committee_flags_the_copy_move_example_on_both_copies():
    pred = Committee().predict(EXAMPLES / "Tp" / "copymove.jpg")
    gt = np.asarray(Image.open(EXAMPLES / "Gt" / "copymove_gt.png").convert("L")) > 127
    src = np.asarray(Image.open(EXAMPLES / "Gt" / "copymove_source.png").convert("L")) > 127
    mask = pred.heatmap >= 0.5
    assert pred.score >= 0.5
    assert (mask & gt).sum() > 0.5 * gt.sum() and (mask & src).sum() > 0.5 * src.sum()


# --- several datasets weigh equally ---------------------------------------------------------------

def _synthetic_set(tag: str, n: int, slope: float, seed: int):
    """Images whose member map is the ground truth blurred by noise; ``slope``: how sharp the member is."""
    rng = np.random.default_rng(seed)
    maps, samples = {}, []
    for i in range(n):
        gt = np.zeros((24, 24), bool)
        y, x = rng.integers(0, 12, 2)
        gt[y:y + 10, x:x + 10] = True
        a = np.clip(0.5 + slope * (gt - 0.5) + rng.normal(0, 0.2, gt.shape), 0, 1).astype(np.float32)
        b = np.clip(0.5 + 0.2 * (gt - 0.5) + rng.normal(0, 0.3, gt.shape), 0, 1).astype(np.float32)
        path = Path(f"/nonexistent/{tag}{i}.png")
        maps[str(path)] = (gt, a, b)
        samples.append(Sample(path, path.with_suffix(".mask")))
    return samples, maps


@pytest.fixture()
def two_sets(monkeypatch):
    s1, m1 = _synthetic_set("a", 12, 0.8, 0)
    s2, m2 = _synthetic_set("b", 12, 0.1, 1)
    maps = {**m1, **m2}
    import imlforensics.committee.calibrate as cal

    monkeypatch.setattr(cal, "read_mask", lambda p, shape=None: maps[str(p.with_suffix(".png"))][0])
    members = {"a": lambda p: (maps[str(p)][1], True), "b": lambda p: (maps[str(p)][2], True)}
    return s1, s2, members


def test_calibration_weighs_each_dataset_the_same(two_sets):
    s1, s2, members = two_sets
    kw = dict(pixels_per_image=10_000, heldout_share=0.0)
    once = calibrate([("one", s1), ("two", s2)], members, **kw)
    # the second dataset four times over (same images): an equal-weight fit does not move
    many = calibrate([("one", s1), ("two", s2 * 4)], members, **kw)
    for n in ("a", "b"):
        assert once["members"][n]["calibration"] == many["members"][n]["calibration"]
        assert once["members"][n]["prior"] == pytest.approx(many["members"][n]["prior"], abs=1e-3)
    assert once["fusion"]["stacker"]["coef"] == pytest.approx(many["fusion"]["stacker"]["coef"], abs=1e-4)
    # the prior is the mean of the per-dataset figures, not the pooled one
    per = once["members"]["a"]["per_dataset"]
    assert once["members"]["a"]["f1_best_fixed"] == pytest.approx(np.mean([per["one"]["f1_best_fixed"],
                                                                            per["two"]["f1_best_fixed"]]), abs=2e-4)
    pooled = calibrate([("both", s1 + s2 * 4)], members, **kw)
    assert pooled["members"]["a"]["calibration"] != many["members"]["a"]["calibration"]


def test_learned_voter_reproduces_itself_from_its_file(two_sets, tmp_path):
    s1, s2, members = two_sets
    res = calibrate([("one", s1), ("two", s2)], members, pixels_per_image=400)
    again = calibrate([("one", s1), ("two", s2)], members, pixels_per_image=400)
    assert res["fusion"] == again["fusion"]  # deterministic fit
    assert res["fusion"]["default_voter"] in ("prior", "equal", "learned")
    doc = priors_document("synthetic", res["members"], {}, "f1", 48, fusion=res["fusion"])
    path = tmp_path / "priors.json"
    path.write_text(json.dumps(doc))
    stacker = Stacker.from_json(json.loads(path.read_text())["fusion"]["stacker"])
    assert stacker.to_json() == res["fusion"]["stacker"]
    from imlforensics.committee.fusion import Calibration, combine, member_llr, sigmoid

    cals = {n: Calibration.from_json(m["calibration"]) for n, m in doc["members"].items()}
    rng = np.random.default_rng(5)
    raw = {"a": rng.random((16, 16), dtype=np.float32), "b": rng.random((16, 16), dtype=np.float32)}
    fused = combine(raw, cals, {n: 0.5 for n in cals}, {n: 50.0 for n in cals}, stacker, "learned", 5.0, (16, 16))
    z = res["fusion"]["stacker"]["intercept"] + sum(
        c * member_llr(cals[n](raw[n]), cals[n].base) + d
        for n, c, d in zip(res["fusion"]["stacker"]["names"], res["fusion"]["stacker"]["coef"],
                           res["fusion"]["stacker"]["shift"]))
    assert np.allclose(fused.heatmap, sigmoid(z), atol=1e-5)


def test_logistic_fit_recovers_known_coefficients():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20000, 2))
    y = rng.random(20000) < 1 / (1 + np.exp(-(0.5 + 2.0 * x[:, 0] - 1.0 * x[:, 1])))
    beta = fit_logistic(x, y, np.ones(20000), l2=0.0)
    assert beta == pytest.approx([0.5, 2.0, -1.0], abs=0.1)


# --- evaluation protocols, hand-computed ----------------------------------------------------------

def test_protocols_against_hand_computed_cases():
    gt = np.array([[1, 1, 0, 0]], bool)
    heat = np.array([[0.9, 0.3, 0.6, 0.1]], np.float32)
    ps = pixel_scores(heat, gt, 0.5)
    # fixed 0.5: predicted {0, 2}, tp 1, fp 1, fn 1 -> F1 = 2/4
    assert ps.f1 == pytest.approx(0.5)
    # best threshold 0.3: predicted {0, 1, 2}: tp 2, fp 1 -> 4/5
    assert ps.f1_best == pytest.approx(0.8)
    # soft: 2 (0.9 + 0.3) / (1.9 + 2) = 2.4 / 3.9
    assert ps.f1_soft == pytest.approx(2.4 / 3.9, abs=1e-6)
    assert soft_f1(heat, gt) == pytest.approx(2.4 / 3.9, abs=1e-6)
    # an inverted map: only the GRIP/TruFor protocol gives it the full score
    inv = pixel_scores(1.0 - gt.astype(np.float32), gt, 0.5)
    assert inv.f1 == 0.0 and inv.f1_best == pytest.approx(2 / 3)  # best: everything flagged, 2 tp of 4
    assert inv.f1_grip_fixed == 1.0 and inv.f1_grip_best == 1.0
    assert ps.f1_grip_fixed == pytest.approx(0.5) and ps.f1_grip_best == pytest.approx(0.8)


def test_calibrate_command_takes_several_datasets_and_records_them(tmp_path):
    import subprocess
    import sys

    second = tmp_path / "second.json"  # the examples again, listed from elsewhere: a second dataset
    second.write_text(json.dumps([[str(EXAMPLES / "Tp" / "splice.jpg"), str(EXAMPLES / "Gt" / "splice_gt.png")],
                                  [str(EXAMPLES / "Tp" / "copymove.jpg"), str(EXAMPLES / "Gt" / "copymove_gt.png")],
                                  [str(EXAMPLES / "Au" / "coffee.jpg"), "Negative"]]))
    out = tmp_path / "priors.json"
    r = subprocess.run([sys.executable, "-m", "imlforensics", "calibrate", str(EXAMPLES), str(second),
                        "--models", "ela,noise", "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    doc = json.loads(out.read_text())
    assert [d["name"] for d in doc["datasets"]] == ["examples", "second"]
    assert [d["tampered"] for d in doc["datasets"]] == [3, 2] and all(len(d["fingerprint"]) == 16 for d in doc["datasets"])
    assert set(doc["members"]["ela"]["per_dataset"]) == {"examples", "second"}
    assert doc["fusion"]["default_voter"] in ("prior", "equal", "learned")
    assert "default voter" in r.stderr
    pred = Committee(priors=out).predict(EXAMPLES / "Tp" / "splice.jpg")  # the file drives a committee
    assert pred.extras["voter"] == doc["fusion"]["default_voter"]


def test_a_damaged_learned_voter_is_refused_when_the_file_is_read(tmp_path):
    from imlforensics.committee.detector import DEFAULT_PRIORS
    from imlforensics.errors import ImlfError

    doc = json.loads(DEFAULT_PRIORS.read_text())
    doc["fusion"]["stacker"]["coef"][0] = float("nan")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc))
    with pytest.raises(ImlfError, match="learned voter"):
        Committee(priors=bad)
    doc["fusion"]["stacker"]["coef"][0] = 0.5
    doc["fusion"]["decision"]["learned"] = 1.5
    bad.write_text(json.dumps(doc))
    with pytest.raises(ImlfError, match="decision threshold"):
        Committee(priors=bad)
    doc["fusion"]["decision"]["learned"] = 0.2
    doc["fusion"]["relative"] = {"equal": 1.5}
    bad.write_text(json.dumps(doc))
    with pytest.raises(ImlfError, match="relative decision"):
        Committee(priors=bad)


def test_relative_decision_cuts_at_a_share_of_the_peak_and_keeps_each_images_ranking():
    from imlforensics.committee.fusion import relative_decision

    heat = np.linspace(0, 1, 1001, dtype=np.float32)
    out = relative_decision(heat, 0.8)
    assert np.all(np.diff(out) >= 0)  # monotone: per-image best-threshold F1 and AUC cannot change
    peak = float(np.quantile(heat, 0.995))
    assert (out >= 0.5).sum() == (heat >= 0.8 * peak).sum()
    weak = np.linspace(0, 0.55, 1001, dtype=np.float32)  # 0.8 x peak < 0.5: the global decision stands
    assert np.array_equal(relative_decision(weak, 0.8), weak)
    assert relative_decision(heat, 0.0) is heat


def _preset_images(monkeypatch, maps):
    import imlforensics.committee.calibrate as cal

    images = [cal._Image(d, False, bool(gt.any()), gt.ravel(), {"m": h.ravel()}, {"m": True}) for d, h, gt in maps]
    table = {id(im): h.ravel() for im, (_, h, _) in zip(images, maps)}
    monkeypatch.setattr(cal, "fused_pixels", lambda im, *a, **k: table[id(im)])
    return cal, images


def test_relative_decision_is_fitted_where_evidence_spills_around_the_region(monkeypatch):
    gt = np.zeros((40, 40), bool)
    gt[15:25, 15:25] = True
    ring = np.zeros_like(gt)
    ring[10:30, 10:30] = True
    spill = np.where(gt, 0.97, np.where(ring, 0.75, 0.1)).astype(np.float32)  # the whole ring passes 0.5
    cal, images = _preset_images(monkeypatch, [(0, spill, gt)] * 4)
    share = cal.fit_relative(images, "equal", None, None, None, None, 1, 5.0, 0.2)
    assert 0.75 / 0.97 < share < 1  # the ring drops out, the region stays
    # graded evidence inside the region (its edge weaker than its core): cutting near the peak loses it
    yy, xx = np.mgrid[0:40, 0:40]
    graded = np.where(gt, 1.0 - 0.05 * np.maximum(abs(yy - 19.5), abs(xx - 19.5)), 0.1).astype(np.float32)
    cal, images = _preset_images(monkeypatch, [(0, graded, gt)] * 4)
    assert cal.fit_relative(images, "equal", None, None, None, None, 1, 5.0, 0.2) == 0.0


def test_the_relative_decision_leaves_the_image_score_alone():
    com = load_detector("committee")
    rng = np.random.default_rng(0)
    raw = {n: rng.random((64, 64)).astype(np.float32) for n in ("ela", "noise")}
    for n in raw:
        raw[n][20:40, 20:40] = 0.95
    com.relative = None
    plain, score = com.combine(raw, (64, 64))
    com.relative = 0.9
    cut, score_cut = com.combine(raw, (64, 64))
    assert score_cut == pytest.approx(score, abs=1e-9)
    order = np.argsort(plain.heatmap, axis=None, kind="stable")
    assert np.all(np.diff(cut.heatmap.ravel()[order]) >= -1e-6)  # the same ranking of pixels
    assert (cut.heatmap >= 0.5).sum() < (plain.heatmap >= 0.5).sum()


def _lossless_copy_move(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A disc from the upper left third pasted, moved only, into the lower right; the pasted disc is the truth."""
    h, w = rgb.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    r, (sy, sx), (ty, tx) = min(h, w) // 9, (h // 3, w // 4), (2 * h // 3, 3 * w // 4)
    target = (yy - ty) ** 2 + (xx - tx) ** 2 <= r * r
    out = rgb.copy()
    out[target] = rgb[yy[target] - (ty - sy), xx[target] - (tx - sx)]
    return out, target


@pytest.mark.parametrize("name", ["astronaut", "coffee", "rocket"])
def test_default_committee_keeps_up_with_its_members_on_a_lossless_copy_move(name, tmp_path):
    rgb = np.asarray(Image.open(EXAMPLES / "Au" / f"{name}.jpg").convert("RGB"))
    fake, gt = _lossless_copy_move(rgb)
    path = tmp_path / f"{name}.png"
    Image.fromarray(fake).save(path)
    f1 = {m: pixel_scores(load_detector(m).predict(path).heatmap, gt, 0.5).f1 for m in ("copymove", "ela", "noise")}
    pred = Committee().predict(path)
    mask = pred.heatmap >= 0.5
    # every member here sees the paste (copymove its twin, ela its misaligned JPEG grid); their
    # evidence adds up around it, and the relative decision keeps the mask near the paste's size
    assert pixel_scores(pred.heatmap, gt, 0.5).f1 >= max(f1.values()) - 0.02
    assert mask.mean() <= 2.0 * gt.mean()
