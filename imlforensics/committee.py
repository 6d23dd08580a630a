"""Committee voting over detector maps, after CV-DD.

CV-DD, committee voting for dataset distillation (arXiv 2501.07575): each expert i has a
prior score a_i (its measured performance, in percent) and votes with weight
``w_i = exp(a_i / T) / sum_j exp(a_j / T)``; T large gives equal voting, T small picks the best
expert. Classical maps are not probabilities, so each member is first calibrated: a monotone
(isotonic) map from raw value to the probability that the pixel is tampered, fitted on labelled
pixels. Calibrated members are then fused:

* ``logit`` (default): ``sigmoid(sum_i w_i logit(p_i))``;
* ``mean``: ``sum_i w_i p_i``;
* ``vote``: ``sum_i w_i [raw_i >= t_i]``, each member's mask at its own calibrated threshold.

Alongside the fused map: the agreement map (weighted share of members voting tampered) and the
disagreement map (weighted variance of the members' probabilities).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

FUSIONS = ("logit", "mean", "vote")
VOTERS = ("prior", "equal")
_EPS = 1e-4


@dataclass
class Calibration:
    """Monotone piecewise-linear map from raw map value to probability of tampering."""

    knots: list[float]
    probs: list[float]

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        return np.interp(raw, self.knots, self.probs).astype(np.float32)

    def to_json(self) -> dict[str, Any]:
        return {"knots": [round(k, 6) for k in self.knots], "probs": [round(p, 6) for p in self.probs]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Calibration":
        return cls(list(map(float, data["knots"])), list(map(float, data["probs"])))


def fit_isotonic(values: np.ndarray, labels: np.ndarray, bins: int = 128) -> Calibration:
    """Isotonic regression (pool-adjacent-violators) of ``labels`` on ``values`` in [0, 1].

    The pixels are first pooled into ``bins`` equal-width bins (counts and positives per bin), so
    millions of pixels cost one histogram; the monotone fit runs on the bins' weighted means.
    """
    values = np.clip(np.asarray(values, np.float64).ravel(), 0.0, 1.0)
    labels = np.asarray(labels, bool).ravel()
    idx = np.minimum((values * bins).astype(np.int64), bins - 1)
    n = np.bincount(idx, minlength=bins).astype(np.float64)
    pos = np.bincount(idx, weights=labels.astype(np.float64), minlength=bins)
    centers = (np.arange(bins) + 0.5) / bins
    keep = n > 0
    if not keep.any():
        return Calibration([0.0, 1.0], [0.0, 1.0])
    x, w, y = centers[keep], n[keep], pos[keep] / n[keep]
    # pool adjacent violators on (y, w)
    blocks: list[list[float]] = []  # [mean, weight, x_first, x_last]
    for xi, yi, wi in zip(x, y, w):
        blocks.append([yi, wi, xi, xi])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            b2 = blocks.pop()
            b1 = blocks.pop()
            tot = b1[1] + b2[1]
            blocks.append([(b1[0] * b1[1] + b2[0] * b2[1]) / tot, tot, b1[2], b2[3]])
    knots, probs = [], []
    for mean, _, x0, x1 in blocks:
        knots += [x0, x1] if x1 > x0 else [x0]
        probs += [mean, mean] if x1 > x0 else [mean]
    knots = [0.0] + knots + [1.0]
    probs = [probs[0]] + probs + [probs[-1]]
    order = np.argsort(knots, kind="stable")
    return Calibration([float(knots[i]) for i in order], [float(np.clip(probs[i], 0, 1)) for i in order])


def member_weights(priors: list[float], voter: str = "prior", temperature: float = 5.0) -> np.ndarray:
    """CV-DD weights: softmax of the priors (percent) over ``temperature``, or equal."""
    if voter not in VOTERS:
        raise ValueError(f"unknown voter {voter!r} (use {' or '.join(VOTERS)})")
    n = len(priors)
    if n == 0:
        return np.zeros(0)
    if voter == "equal":
        return np.full(n, 1.0 / n)
    if temperature <= 0:
        raise ValueError("temperature must be positive")
    a = np.asarray(priors, np.float64) / temperature
    e = np.exp(a - a.max())
    return e / e.sum()


@dataclass
class Fused:
    heatmap: np.ndarray
    agreement: np.ndarray
    disagreement: np.ndarray
    weights: dict[str, float] = field(default_factory=dict)


def fuse(raw: dict[str, np.ndarray], calibrations: dict[str, Calibration], thresholds: dict[str, float],
         weights: dict[str, float], method: str = "logit") -> Fused:
    """Fuse the members' raw maps (same shape) with the given weights (renormalised over those present)."""
    if method not in FUSIONS:
        raise ValueError(f"unknown fusion {method!r} (use one of {', '.join(FUSIONS)})")
    names = [n for n in raw if weights.get(n, 0) > 0]
    if not names:
        raise ValueError("no member voted")
    w = np.array([weights[n] for n in names], np.float64)
    w = (w / w.sum()).astype(np.float32)
    probs = [np.clip(calibrations[n](raw[n]), _EPS, 1 - _EPS) for n in names]
    votes = [(raw[n] >= thresholds[n]).astype(np.float32) for n in names]
    agreement = sum(wi * v for wi, v in zip(w, votes))
    mean = sum(wi * p for wi, p in zip(w, probs))
    disagreement = sum(wi * (p - mean) ** 2 for wi, p in zip(w, probs))
    if method == "logit":
        z = sum(wi * np.log(p / (1 - p)) for wi, p in zip(w, probs))
        heat = 1.0 / (1.0 + np.exp(-z))
    elif method == "mean":
        heat = mean
    else:
        heat = agreement
    return Fused(np.asarray(heat, np.float32), np.asarray(agreement, np.float32),
                 np.asarray(disagreement, np.float32), {n: float(x) for n, x in zip(names, w)})
