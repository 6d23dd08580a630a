"""Metrics of the image-manipulation-localization field, in torch (CPU or GPU).

Pixel-level metrics are computed per image and averaged over the tampered images, as the field
does (see IMDL-BenCo). Two threshold conventions are reported and always labelled:

* ``fixed``: the heatmap is binarised at one threshold for every image (default 0.5);
* ``best``: for each image the threshold that maximises its F1 is used (an optimistic upper
  bound that many papers report; IoU is monotone in F1, so the same threshold maximises both).

Two more conventions, so that numbers from other papers can be compared with ours:

* ``grip`` (the GRIP/TruFor protocol): for each image the better of the map and the inverted map
  (``1 - map``), at the fixed threshold (``f1_grip_fixed``) and at the best threshold
  (``f1_grip_best``); a map that marks the authentic part instead of the forgery still scores;
  optimistic too;
* ``soft``: no threshold at all, the heatmap read as a probability per pixel:
  ``2 sum(h g) / (sum(h) + sum(g))`` (the Dice coefficient of the soft map).

A pixel AUC is the Mann-Whitney statistic with ties counted half, as scikit-learn computes it.

Images without tampered pixels (authentic images, empty masks) have no pixel F1, IoU or AUC: they
are left out of those averages and reported instead by the share of their pixels flagged at the
fixed threshold (a false-positive rate). Image-level AUC and balanced accuracy use the image score
with authentic = 0 and tampered = 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

ArrayLike = "np.ndarray | torch.Tensor"


def _t(x, device: str | torch.device | None = None, dtype=None) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        t = x
    else:
        t = torch.from_numpy(np.ascontiguousarray(x))
    if device is not None:
        t = t.to(device)
    return t.to(dtype) if dtype is not None else t


def f1_iou(pred: ArrayLike, gt: ArrayLike) -> tuple[float, float]:
    """F1 and IoU of a binary prediction against a binary ground truth (both 0 when both empty)."""
    p = _t(pred).bool().flatten()
    g = _t(gt, p.device).bool().flatten()
    tp = (p & g).sum().item()
    fp = (p & ~g).sum().item()
    fn = (~p & g).sum().item()
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
    iou = tp / (tp + fp + fn) if tp + fp + fn else 0.0
    return f1, iou


def best_f1(scores: ArrayLike, gt: ArrayLike) -> tuple[float, float]:
    """Highest F1 over all thresholds ``scores >= t``, and that threshold (exact, by sorting)."""
    s = _t(scores, dtype=torch.float64).flatten()
    g = _t(gt, s.device).bool().flatten()
    positives = g.sum().item()
    if positives == 0:
        return 0.0, float("inf")
    order = torch.argsort(s, descending=True)
    s_sorted = s[order]
    tp = torch.cumsum(g[order].to(torch.float64), 0)
    predicted = torch.arange(1, s.numel() + 1, device=s.device, dtype=torch.float64)
    # only the last index of each run of equal scores is a reachable threshold
    last = torch.ones_like(s_sorted, dtype=torch.bool)
    last[:-1] = s_sorted[:-1] != s_sorted[1:]
    f1 = 2 * tp[last] / (predicted[last] + positives)
    i = int(torch.argmax(f1))
    return float(f1[i]), float(s_sorted[last][i])


def auc(scores: ArrayLike, labels: ArrayLike) -> float:
    """ROC AUC (ties count one half); NaN when one class is missing."""
    s = _t(scores, dtype=torch.float64).flatten()
    y = _t(labels, s.device).bool().flatten()
    n_pos = int(y.sum().item())
    n_neg = y.numel() - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    _, inverse, counts = torch.unique(s, return_inverse=True, return_counts=True)
    # average rank of each distinct value (1-based): start + (count + 1) / 2
    starts = torch.cumsum(counts, 0) - counts
    avg_rank = starts.to(torch.float64) + (counts.to(torch.float64) + 1) / 2
    rank_sum_pos = avg_rank[inverse][y].sum().item()
    return (rank_sum_pos - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def balanced_accuracy(pred: ArrayLike, labels: ArrayLike) -> float:
    """Mean of the true-positive and true-negative rates; NaN when one class is missing."""
    p = _t(pred).bool().flatten()
    y = _t(labels, p.device).bool().flatten()
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    tpr = (p & y).sum().item() / n_pos
    tnr = (~p & ~y).sum().item() / n_neg
    return (tpr + tnr) / 2


@dataclass
class PixelScores:
    """Per-image pixel metrics. ``None`` where undefined (see the module docstring)."""

    f1: float | None
    iou: float | None
    f1_best: float | None
    iou_best: float | None
    threshold_best: float | None
    auc: float | None
    flagged: float  # share of pixels at or above the fixed threshold
    f1_grip_fixed: float | None = None  # GRIP/TruFor: best of map and inverted map, fixed threshold
    f1_grip_best: float | None = None  # GRIP/TruFor: best of map and inverted map, best threshold
    f1_soft: float | None = None  # threshold-free: heatmap as probability


def soft_f1(heatmap: ArrayLike, gt: ArrayLike) -> float:
    """Threshold-free F1 of a heatmap read as probabilities: ``2 sum(h g) / (sum(h) + sum(g))``."""
    h = _t(heatmap, dtype=torch.float64).flatten()
    g = _t(gt, h.device).bool().flatten().to(torch.float64)
    den = (h.sum() + g.sum()).item()
    return 2 * (h * g).sum().item() / den if den > 0 else 0.0


def pixel_scores(heatmap: ArrayLike, gt: ArrayLike, threshold: float = 0.5,
                 device: str | torch.device | None = None) -> PixelScores:
    """All pixel metrics of one heatmap against one boolean ground-truth mask."""
    h = _t(heatmap, device, torch.float32)
    g = _t(gt, h.device).bool()
    if h.shape != g.shape:
        raise ValueError(f"heatmap {tuple(h.shape)} and mask {tuple(g.shape)} differ in shape")
    pred = h >= threshold
    flagged = pred.float().mean().item()
    n_pos = int(g.sum().item())
    if n_pos == 0:
        return PixelScores(None, None, None, None, None, None, flagged)
    f1, iou = f1_iou(pred, g)
    fb, tb = best_f1(h, g)
    a = auc(h, g)
    inverted = 1.0 - h
    f1_inv, _ = f1_iou(inverted >= threshold, g)
    fb_inv, _ = best_f1(inverted, g)
    return PixelScores(f1, iou, fb, fb / (2 - fb), tb, None if np.isnan(a) else a, flagged,
                       max(f1, f1_inv), max(fb, fb_inv), soft_f1(h, g))
