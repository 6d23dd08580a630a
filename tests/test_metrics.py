"""Metrics agree with scikit-learn and handle the field's special cases explicitly."""

from __future__ import annotations

import numpy as np
import pytest

from imlforensics.evaluation.evaluate import ImageRecord, summarize
from imlforensics.evaluation.metrics import auc, balanced_accuracy, best_f1, f1_iou, pixel_scores

sk = pytest.importorskip("sklearn.metrics")


@pytest.mark.parametrize("seed", range(6))
def test_agree_with_sklearn_on_random_inputs(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(50, 20000))
    labels = rng.random(n) < rng.uniform(0.05, 0.6)
    # coarse values create many ties, which is where AUC implementations differ
    scores = np.round(rng.random(n) * rng.choice([1, 10, 100, 1000]) + labels * rng.uniform(0, 5), 0).astype(np.float32)
    assert auc(scores, labels) == pytest.approx(sk.roc_auc_score(labels, scores), abs=1e-12)
    pred = scores >= np.median(scores)
    f1, iou = f1_iou(pred, labels)
    assert f1 == pytest.approx(sk.f1_score(labels, pred), abs=1e-12)
    assert iou == pytest.approx(sk.jaccard_score(labels, pred), abs=1e-12)
    assert balanced_accuracy(pred, labels) == pytest.approx(sk.balanced_accuracy_score(labels, pred), abs=1e-12)
    p, r, _ = sk.precision_recall_curve(labels, scores)
    assert best_f1(scores, labels)[0] == pytest.approx(np.max(2 * p * r / np.maximum(p + r, 1e-300)), abs=1e-12)


def test_best_threshold_reproduces_best_f1():
    rng = np.random.default_rng(1)
    gt = np.zeros((64, 64), bool)
    gt[10:30, 20:50] = True
    heat = np.clip(gt * 0.6 + rng.normal(0.2, 0.15, gt.shape), 0, 1).astype(np.float32)
    f1, t = best_f1(heat, gt)
    assert f1 == pytest.approx(f1_iou(heat >= t, gt)[0])
    assert f1 >= f1_iou(heat >= 0.5, gt)[0]


def test_pixel_scores_of_a_perfect_and_an_inverted_map():
    gt = np.zeros((32, 32), bool)
    gt[4:12, 4:20] = True
    perfect = pixel_scores(gt.astype(np.float32), gt)
    assert perfect.f1 == perfect.iou == perfect.f1_best == perfect.auc == 1.0
    inverted = pixel_scores((~gt).astype(np.float32), gt)
    assert inverted.f1 == 0.0 and inverted.auc == 0.0
    # the best threshold may flag everything: F1 of "all tampered" = 2p/(1+p)
    p = gt.mean()
    assert inverted.f1_best == pytest.approx(2 * p / (1 + p))


def test_authentic_images_have_no_pixel_f1_but_a_false_positive_rate():
    heat = np.zeros((10, 10), np.float32)
    heat[:2] = 0.9
    s = pixel_scores(heat, np.zeros((10, 10), bool), threshold=0.5)
    assert s.f1 is None and s.auc is None and s.f1_best is None
    assert s.flagged == pytest.approx(0.2)


def test_summary_averages_tampered_only_and_scores_images():
    recs = [
        ImageRecord("t1", False, score=0.9, f1=0.8, iou=0.6, f1_best=0.9, iou_best=0.8, auc=0.95, flagged=0.1),
        ImageRecord("t2", False, score=0.4, f1=0.2, iou=0.1, f1_best=0.5, iou_best=0.3, auc=0.75, flagged=0.0),
        ImageRecord("a1", True, score=0.3, flagged=0.02),
        ImageRecord("a2", True, score=0.6, flagged=0.0),
        ImageRecord("bad", False, error="corrupt"),
    ]
    s = summarize(recs, 0.5)
    assert s["pixel"]["n"] == 2 and s["pixel"]["f1_fixed"] == pytest.approx(0.5)
    assert s["pixel"]["auc"] == pytest.approx(0.85)
    assert s["failed"] == 1 and s["errors"] == {"corrupt": 1}
    assert s["authentic_pixels"]["flagged_fixed"] == pytest.approx(0.01)
    assert s["image"]["auc"] == pytest.approx(sk.roc_auc_score([1, 1, 0, 0], [0.9, 0.4, 0.3, 0.6]))
    assert s["image"]["balanced_accuracy"] == pytest.approx(0.5)  # t1 right, t2 missed, a1 right, a2 wrong


def test_undefined_auc_is_nan():
    assert np.isnan(auc(np.ones(5), np.ones(5, bool)))
    assert np.isnan(balanced_accuracy(np.ones(5, bool), np.zeros(5, bool)))
