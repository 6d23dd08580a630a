"""Committee voting: isotonic calibration, CV-DD weights, fusion that beats its members."""

from __future__ import annotations

import numpy as np
import pytest

from imlforensics.committee import fit_isotonic, fuse, member_weights
from imlforensics.metrics import pixel_scores


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
