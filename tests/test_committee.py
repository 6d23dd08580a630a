"""Committee voting: isotonic calibration, CV-DD weights, fusion that beats its members."""

from __future__ import annotations

import numpy as np
import pytest

from imlforensics.committee.fusion import Calibration, fit_isotonic, fuse, member_weights
from imlforensics.evaluation.metrics import pixel_scores


def test_isotonic_calibration_is_monotone_and_agrees_with_scikit_learn():
    from sklearn.isotonic import IsotonicRegression

    rng = np.random.default_rng(0)
    x = rng.random(20000)
    y = rng.random(20000) < x**2  # true probability x^2
    cal = fit_isotonic(x, y, bins=64)
    grid = np.linspace(0, 1, 201)
    p = cal(grid)
    assert np.all(np.diff(p) >= -1e-7)
    centers = (np.arange(64) + 0.5) / 64
    idx = np.minimum((x * 64).astype(int), 63)
    ref = IsotonicRegression(out_of_bounds="clip").fit(centers[idx], y).predict(centers)
    assert np.abs(cal(centers) - ref).max() < 1e-6
    assert abs(float(cal(np.array([0.9]))[0]) - 0.81) < 0.05


def test_prior_weights_are_a_softmax_over_the_temperature():
    w = member_weights([50.0, 40.0], "prior", 5.0)
    assert w[0] / w[1] == pytest.approx(np.exp(2.0))
    assert np.allclose(member_weights([50.0, 40.0, 10.0], "equal"), 1 / 3)
    assert member_weights([50.0, 40.0], "prior", 1e3)[0] == pytest.approx(0.5, abs=0.01)
    with pytest.raises(ValueError):
        member_weights([1.0], "majority")


def _members(rng, gt):
    """Three noisy detectors of one forgery: two see it in different halves (on different scales),
    one is mostly noise."""
    h, w = gt.shape
    a = rng.normal(0.3, 0.12, (h, w)) + 0.35 * gt * (np.arange(w) < w // 2)  # sees the left half
    b = rng.normal(0.2, 0.08, (h, w)) + 0.25 * gt * (np.arange(w) >= w // 2)  # sees the right half
    c = rng.normal(0.5, 0.2, (h, w)) + 0.1 * gt
    return {k: np.clip(v, 0, 1).astype(np.float32) for k, v in zip("abc", (a, b, c))}


def test_calibrated_logit_committee_beats_its_best_member():
    rng = np.random.default_rng(1)
    gt = np.zeros((96, 128), bool)
    gt[30:70, 20:110] = True
    train = [_members(rng, gt) for _ in range(4)]
    cals = {k: fit_isotonic(np.concatenate([m[k].ravel() for m in train]), np.tile(gt.ravel(), 4)) for k in "abc"}
    members = _members(rng, gt)
    best = {k: pixel_scores(members[k], gt).f1_best for k in "abc"}
    priors = {k: 100 * v for k, v in best.items()}
    thresholds = {k: 0.5 for k in "abc"}
    w_prior = dict(zip("abc", member_weights([priors[k] for k in "abc"], "prior", 5.0)))
    w_equal = dict(zip("abc", member_weights([priors[k] for k in "abc"], "equal")))
    fused = fuse(members, cals, thresholds, w_prior, "logit")
    equal = fuse(members, cals, thresholds, w_equal, "logit")
    f_prior, f_equal = pixel_scores(fused.heatmap, gt), pixel_scores(equal.heatmap, gt)
    assert f_prior.f1_best >= max(best.values()) + 0.03
    assert f_prior.auc > max(pixel_scores(members[k], gt).auc for k in "abc")
    assert f_equal.f1_best > max(best.values())  # calibration alone already makes members comparable
    assert fused.agreement.shape == gt.shape and 0 <= fused.agreement.min() and fused.agreement.max() <= 1
    assert fused.disagreement.min() >= 0 and set(fused.weights) == set("abc")


def test_members_that_abstain_are_left_out_and_weights_renormalised():
    cal = fit_isotonic(np.array([0.1, 0.9]), np.array([0, 1]))
    raw = {"a": np.full((4, 4), 0.9, np.float32)}
    out = fuse(raw, {"a": cal, "b": cal}, {"a": 0.5, "b": 0.5}, {"a": 0.3, "b": 0.7}, "mean")
    assert out.weights == {"a": 1.0} and np.allclose(out.agreement, 1.0)


def test_calibration_table_equals_the_piecewise_linear_curve():
    rng = np.random.default_rng(3)
    x = rng.random(50000)
    cal = fit_isotonic(x, rng.random(50000) < x**3)
    assert cal._table is not None  # fit_isotonic's knots lie on the lattice: the fast path
    raw = np.concatenate([rng.random(10000), [0.0, 1.0, 1.0 - 1e-7, 0.5, -0.2, 1.3]]).astype(np.float32)
    ref = np.interp(np.clip(raw, 0, 1), cal.knots, cal.probs)
    assert np.abs(cal(raw) - ref).max() < 1e-6
    # a curve from elsewhere, knots off the lattice: interpolated exactly all the same
    odd = Calibration([0.0, 0.3333, 0.71, 1.0], [0.01, 0.2, 0.6, 0.9], 0.1)
    assert odd._table is None
    assert np.abs(odd(raw) - np.interp(raw, odd.knots, odd.probs)).max() < 1e-6
    # the rounding of a priors file keeps the fast path and the curve
    again = Calibration.from_json(cal.to_json())
    assert again._table is not None and again.base == pytest.approx(cal.base, abs=1e-6)
    assert np.abs(again(raw) - ref).max() < 1e-5


def test_fit_records_the_base_rate_and_old_files_fall_back():
    cal = fit_isotonic(np.linspace(0, 1, 1000), np.arange(1000) >= 900)
    assert cal.base == pytest.approx(0.1)
    assert Calibration.from_json({"knots": [0, 1], "probs": [0, 1]}, base=0.2).base == 0.2
    assert Calibration.from_json({"knots": [0, 1], "probs": [0, 1], "base": 0.3}, base=0.2).base == 0.3


def test_logit_fusion_adds_log_likelihood_ratios():
    a = Calibration([0.0, 1.0], [0.02, 0.9], 0.05)
    b = Calibration([0.0, 1.0], [0.03, 0.6], 0.05)
    raw = {"a": np.array([[0.0, 0.5, 1.0]], np.float32), "b": np.array([[1.0, 0.5, 0.0]], np.float32)}
    th = {"a": 0.5, "b": 0.5}
    lone = fuse({"a": raw["a"]}, {"a": a}, th, {"a": 1.0})
    assert np.allclose(lone.heatmap, a(raw["a"]), atol=1e-6)  # one member: its calibrated probability

    def logit(p):
        return np.log(p / (1 - p))

    llr = [logit(c(raw[k])) - logit(0.05) for k, c in (("a", a), ("b", b))]
    equal = fuse(raw, {"a": a, "b": b}, th, {"a": 0.5, "b": 0.5})
    assert np.allclose(equal.heatmap, 1 / (1 + np.exp(-(logit(0.05) + llr[0] + llr[1]))), atol=1e-5)  # naive Bayes
    skewed = fuse(raw, {"a": a, "b": b}, th, {"a": 0.8, "b": 0.2})
    assert np.allclose(skewed.heatmap, 1 / (1 + np.exp(-(logit(0.05) + llr[0] + 0.25 * llr[1]))), atol=1e-5)
    assert skewed.weights == pytest.approx({"a": 0.8, "b": 0.2})
    # a member whose map is constant (it found nothing) takes the shortcut, with the same result
    flat = {"a": raw["a"], "b": np.full_like(raw["b"], 0.25)}
    both = fuse(flat, {"a": a, "b": b}, th, {"a": 0.5, "b": 0.5})
    llr_b = logit(b(flat["b"])) - logit(0.05)
    assert np.allclose(both.heatmap, 1 / (1 + np.exp(-(logit(0.05) + llr[0] + llr_b))), atol=1e-5)
    p = np.stack([a(raw["a"]), b(flat["b"])])
    assert np.allclose(both.disagreement, p.var(axis=0), atol=1e-6)
    assert np.allclose(both.agreement, 0.5 * (raw["a"] >= 0.5), atol=1e-6)


def _calibrated_scene(gt: np.ndarray, seed: int = 1):
    rng = np.random.default_rng(seed)
    train = [_members(rng, gt) for _ in range(4)]
    cals = {k: fit_isotonic(np.concatenate([m[k].ravel() for m in train]), np.tile(gt.ravel(), 4)) for k in "abc"}
    members = _members(rng, gt)
    return members, cals, {k: pixel_scores(cals[k](members[k]), gt).f1 for k in "abc"}


def test_every_voter_gives_a_map_that_can_be_thresholded_at_one_half():
    """Averaging log-odds kept an equal committee under 0.5 on a small forgery (fixed-threshold F1
    0.22 here, 0 on CASIA); adding the members' evidence does not."""
    th = {k: 0.5 for k in "abc"}
    gt = np.zeros((96, 128), bool)
    gt[40:56, 40:80] = True  # 5% of the image, as CASIA's forgeries
    members, cals, fixed = _calibrated_scene(gt)
    equal = fuse(members, cals, th, dict(zip("abc", member_weights([60.0, 50.0, 20.0], "equal"))), "logit")
    assert pixel_scores(equal.heatmap, gt).f1 >= max(fixed.values()) + 0.1
    # prior voter: the strongest member's evidence counts as its own calibration says, the others' add to it
    gt = np.zeros((96, 128), bool)
    gt[30:70, 20:110] = True
    members, cals, fixed = _calibrated_scene(gt)
    prior = fuse(members, cals, th, dict(zip("abc", member_weights([60.0, 50.0, 20.0], "prior", 5.0))), "logit")
    assert pixel_scores(prior.heatmap, gt).f1 >= fixed["a"] + 0.02
