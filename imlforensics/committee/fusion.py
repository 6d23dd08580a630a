"""Committee voting over detector maps, after CV-DD.

CV-DD, committee voting for dataset distillation (arXiv 2501.07575): each expert i has a
prior score a_i (its measured performance, in percent) and votes with weight
``w_i = exp(a_i / T) / sum_j exp(a_j / T)``; T large gives equal voting, T small picks the best
expert. Classical maps are not probabilities, so each member is first calibrated: a monotone
(isotonic) map from raw value to the probability p_i that the pixel is tampered, fitted on
labelled pixels whose tampered share is the member's base rate pi_i. Calibrated members are then
fused:

* ``logit`` (default): evidence adds up in log-odds. Member i's evidence is its log-likelihood
  ratio ``logit(p_i) - logit(pi_i)``, counted with the relative weight ``r_i = w_i / max_j w_j``:
  ``sigmoid(logit(pi) + sum_i r_i (logit(p_i) - logit(pi_i)))``, ``pi = sum_i w_i pi_i``. The
  strongest member's evidence counts once, as its own calibration says; with equal weights this
  is naive Bayes over independent members; a lone member gives back its calibrated probability.
* ``mean``: ``sum_i w_i p_i``;
* ``vote``: ``sum_i w_i [raw_i >= t_i]``, each member's mask at its own calibrated threshold.

The ``learned`` voter stacks the members instead (Wolpert, "Stacked generalization", Neural
Networks 5, 1992): a logistic regression over each member's calibrated log-likelihood ratio and its
applicability flag, ``sigmoid(b + sum_i (c_i a_i llr_i + d_i a_i))`` with ``a_i`` = 1 when member i
saw its kind of trace in the image, fitted by ``imlf calibrate`` on labelled pixels of several
datasets weighted equally (:func:`fit_logistic`) and stored in the priors file (:class:`Stacker`).

Alongside the fused map: the agreement map (weighted share of members voting tampered) and the
disagreement map (weighted variance of the members' probabilities).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

FUSIONS = ("logit", "mean", "vote")
VOTERS = ("prior", "equal", "learned")
_EPS = 1e-4
_GRID = 1024  # calibration lattice: fit_isotonic's bin centres lie on it for bins dividing 512


@dataclass
class Calibration:
    """Monotone piecewise-linear map from raw map value to probability of tampering.

    ``base``: the tampered share of the pixels it was fitted on (None when unknown).
    """

    knots: list[float]
    probs: list[float]
    base: float | None = None

    def __post_init__(self) -> None:
        # knots on the 1/_GRID lattice (every fit_isotonic curve): a table of the curve at the
        # lattice points, interpolated linearly, is the curve itself, and far faster than np.interp
        k = np.asarray(self.knots, np.float64) * _GRID
        self._table: np.ndarray | None = None
        # (files keep knots to 6 decimals: within 1e-6 of the lattice counts as on it)
        if k.size and np.all(np.abs(k - np.rint(k)) < 1e-6 * _GRID) and k[0] <= 0 and k[-1] >= _GRID:
            grid = np.arange(_GRID + 2, dtype=np.float64) / _GRID  # one extra point: x = 1 needs no branch
            self._table = np.interp(grid, self.knots, self.probs).astype(np.float32)

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        if self._table is None:
            return np.interp(raw, self.knots, self.probs).astype(np.float32)
        x = np.multiply(raw, np.float32(_GRID), dtype=np.float32)
        np.clip(x, 0.0, _GRID, out=x)
        i = x.astype(np.intp)
        x -= i
        lo = self._table.take(i)
        out = self._table[1:].take(i)
        out -= lo
        out *= x
        out += lo
        return out

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"knots": [round(k, 6) for k in self.knots], "probs": [round(p, 6) for p in self.probs]}
        if self.base is not None:
            out["base"] = round(self.base, 6)
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any], base: float | None = None) -> "Calibration":
        """``base``: the base rate to assume when the file does not record one."""
        b = data.get("base", base)
        return cls(list(map(float, data["knots"])), list(map(float, data["probs"])), None if b is None else float(b))


def fit_isotonic(values: np.ndarray, labels: np.ndarray, bins: int = 128,
                 weights: np.ndarray | None = None) -> Calibration:
    """Isotonic regression (pool-adjacent-violators) of ``labels`` on ``values`` in [0, 1].

    The pixels are first pooled into ``bins`` equal-width bins (counts and positives per bin), so
    millions of pixels cost one histogram; the monotone fit runs on the bins' weighted means.
    ``weights``: one per pixel (``imlf calibrate`` gives every dataset the same total weight).
    """
    values = np.clip(np.asarray(values, np.float64).ravel(), 0.0, 1.0)
    labels = np.asarray(labels, bool).ravel()
    wts = np.ones(values.size) if weights is None else np.asarray(weights, np.float64).ravel()
    idx = np.minimum((values * bins).astype(np.int64), bins - 1)
    n = np.bincount(idx, weights=wts, minlength=bins)
    pos = np.bincount(idx, weights=wts * labels, minlength=bins)
    centers = (np.arange(bins) + 0.5) / bins
    keep = n > 0
    if not keep.any():
        return Calibration([0.0, 1.0], [0.0, 1.0])
    base = float(pos.sum() / n.sum())
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
    return Calibration([float(knots[i]) for i in order], [float(np.clip(probs[i], 0, 1)) for i in order], base)


LLR_CLIP = 8.0  # a member's evidence is bounded: one pixel's calibration cannot be surer than this


def member_llr(p: np.ndarray, base: float | None) -> np.ndarray:
    """Log-likelihood ratio of calibrated probabilities ``p`` against the member's base rate."""
    b = 0.5 if base is None else min(max(base, _EPS), 1 - _EPS)
    q = np.clip(np.asarray(p, np.float32), _EPS, 1 - _EPS)
    out = _logit(q.copy())
    out -= np.float32(np.log(b / (1 - b)))
    return np.clip(out, -LLR_CLIP, LLR_CLIP, out=out)


@dataclass
class Stacker:
    """Logistic regression over members: ``sigmoid(intercept + sum_i a_i (coef_i llr_i + shift_i))``.

    ``a_i`` is 1 when member i voted on the image (ran, applied and saw its kind of trace), else 0,
    so an abstaining member adds nothing. Coefficients are stored in the priors file exactly.
    """

    names: list[str]
    coef: list[float]
    shift: list[float]
    intercept: float

    def logit(self, llr: dict[str, np.ndarray], shape: tuple[int, ...]) -> np.ndarray:
        z = np.full(shape, np.float32(self.intercept), np.float32)
        for n, c, d in zip(self.names, self.coef, self.shift):
            if n in llr:
                z += np.float32(c) * llr[n] + np.float32(d)
        return z

    def __call__(self, llr: dict[str, np.ndarray], shape: tuple[int, ...]) -> np.ndarray:
        return sigmoid(self.logit(llr, shape))

    def to_json(self) -> dict[str, Any]:
        return {"names": list(self.names), "coef": [float(c) for c in self.coef],
                "shift": [float(d) for d in self.shift], "intercept": float(self.intercept)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Stacker":
        names, coef, shift = list(data["names"]), list(map(float, data["coef"])), list(map(float, data["shift"]))
        if not (len(names) == len(coef) == len(shift)):
            raise ValueError("stacker: names, coef and shift differ in length")
        vals = coef + shift + [float(data["intercept"])]
        if not all(np.isfinite(vals)):
            raise ValueError("stacker: coefficients must be finite")
        return cls(names, coef, shift, float(data["intercept"]))


def sigmoid(z: np.ndarray) -> np.ndarray:
    z = np.clip(np.asarray(z, np.float32), -60, 60)
    return (1.0 / (1.0 + np.exp(-z))).astype(np.float32)


def fit_logistic(x: np.ndarray, y: np.ndarray, w: np.ndarray, l2: float = 1e-3, iters: int = 50) -> np.ndarray:
    """Weighted L2-regularised logistic regression by Newton's method; returns [intercept, coef...].

    Deterministic (no random start); ``w`` is normalised to sum 1 so ``l2`` does not depend on
    how many pixels were sampled. The intercept is not penalised.
    """
    x = np.asarray(x, np.float64)
    a = np.concatenate([np.ones((x.shape[0], 1)), x], axis=1)
    y = np.asarray(y, np.float64)
    w = np.asarray(w, np.float64) / np.sum(w)
    beta = np.zeros(a.shape[1])
    pen = np.full(a.shape[1], l2)
    pen[0] = 0.0
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-np.clip(a @ beta, -60, 60)))
        grad = a.T @ (w * (p - y)) + pen * beta
        hess = (a * (w * p * (1 - p))[:, None]).T @ a + np.diag(pen) + 1e-9 * np.eye(a.shape[1])
        step = np.linalg.solve(hess, grad)
        beta -= step
        if np.max(np.abs(step)) < 1e-9:
            break
    return beta


def member_weights(priors: list[float], voter: str = "prior", temperature: float = 5.0) -> np.ndarray:
    """CV-DD weights: softmax of the priors (percent) over ``temperature``, or equal."""
    if voter not in VOTERS:
        raise ValueError(f"unknown voter {voter!r} (use {' or '.join(VOTERS)})")
    n = len(priors)
    if n == 0:
        return np.zeros(0)
    if voter in ("equal", "learned"):  # the learned voter weighs inside its stacker
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
    peak: float | None = None  # the map's 99.5th percentile before the relative decision, when one was applied


def _logit(p: np.ndarray) -> np.ndarray:
    q = 1 - p
    np.divide(p, q, out=q)
    return np.log(q, out=q)


def fuse(raw: dict[str, np.ndarray], calibrations: dict[str, Calibration], thresholds: dict[str, float],
         weights: dict[str, float], method: str = "logit") -> Fused:
    """Fuse the members' raw maps (same shape) with the given weights (renormalised over those present)."""
    if method not in FUSIONS:
        raise ValueError(f"unknown fusion {method!r} (use one of {', '.join(FUSIONS)})")
    names = [n for n in raw if weights.get(n, 0) > 0]
    if not names:
        raise ValueError("no member voted")
    w = np.array([weights[n] for n in names], np.float64)
    w /= w.sum()
    shape = raw[names[0]].shape
    agreement, mean, square = (np.zeros(shape, np.float32) for _ in range(3))
    z = np.zeros(shape, np.float32) if method == "logit" else None
    flat = np.zeros(4)  # what members with a constant map add everywhere: agreement, mean, square, z
    bases = [0.5 if calibrations[n].base is None else min(max(calibrations[n].base, _EPS), 1 - _EPS) for n in names]
    for n, wi, ri, base in zip(names, w.astype(np.float32), (w / w.max()).astype(np.float32), bases):
        m = raw[n]
        prior_logit = np.float32(np.log(base / (1 - base)))
        lo, hi = float(m.min()), float(m.max())
        if lo == hi:  # a member that found nothing anywhere (dq without double compression, ...)
            p = float(np.clip(calibrations[n](np.array([lo], np.float32))[0], _EPS, 1 - _EPS))
            flat += [wi * (lo >= thresholds[n]), wi * p, wi * p * p, ri * (np.log(p / (1 - p)) - prior_logit)]
            continue
        p = np.clip(calibrations[n](m), _EPS, 1 - _EPS, dtype=np.float32)
        agreement += wi * (m >= thresholds[n])
        wp = wi * p
        mean += wp
        wp *= p
        square += wp
        if z is not None:  # evidence of member n: its log-likelihood ratio against its base rate
            lp = _logit(p)
            lp -= prior_logit
            lp *= ri
            z += lp
    agreement += np.float32(flat[0])
    mean += np.float32(flat[1])
    square += np.float32(flat[2])
    disagreement = np.maximum(square - mean * mean, 0.0)
    if z is not None:
        base = float(np.dot(w, bases))
        z += np.float32(flat[3] + np.log(base / (1 - base)))
        np.negative(z, out=z)
        np.exp(z, out=z)
        z += 1.0
        heat = np.reciprocal(z, out=z)
    elif method == "mean":
        heat = mean
    else:
        heat = agreement
    return Fused(np.asarray(heat, np.float32), agreement, disagreement, {n: float(x) for n, x in zip(names, w)})


def to_decision(heat: np.ndarray, t: float | None) -> np.ndarray:
    """Monotone remap that puts the decision threshold ``t`` at 0.5 ([0, t] -> [0, 0.5], [t, 1] -> [0.5, 1])."""
    if t is None or not 0.0 < t < 1.0:
        return heat
    lo = heat * np.float32(0.5 / t)
    hi = np.float32(0.5) + (heat - np.float32(t)) * np.float32(0.5 / (1.0 - t))
    return np.where(heat < t, lo, hi).astype(np.float32)


def peak_of(heat: np.ndarray) -> float:
    """The map's 99.5th percentile: how strong the image's strongest evidence is (a few pixels
    count, a single one does not)."""
    return float(np.quantile(heat, 0.995)) if heat.size else 0.0


def relative_decision(heat: np.ndarray, relative: float | None, peak: float | None = None) -> np.ndarray:
    """Raise the decision from 0.5 to ``relative`` times the map's peak (:func:`peak_of`) where that is higher.

    Evidence adds up over members that see the same region (copy-move seen by ``copymove``,
    ``ela`` and ``jpeg-grid`` at once), so on a strongly tampered image everything near the region
    passes the global decision too; the region itself stands out against the image's own strongest
    evidence. Monotone within an image: per-image rankings (best-threshold F1, AUC) are unchanged.
    """
    if not relative:
        return heat
    t = float(relative_threshold(relative, peak_of(heat) if peak is None else peak))
    return heat if t <= 0.5 else to_decision(heat, t)


def relative_threshold(share: float | np.ndarray, peak: float) -> float | np.ndarray:
    """Where the relative decision cuts an image of this ``peak`` (in the map already moved so that
    the global decision is 0.5): ``share`` x peak, never below 0.5 nor at 1 (any array of shares)."""
    return np.minimum(np.maximum(0.5, np.multiply(share, peak)), 0.999)


def combine(raw: dict[str, np.ndarray], calibrations: dict[str, Calibration], thresholds: dict[str, float],
            priors: dict[str, float], stacker: Stacker | None, voter: str, temperature: float,
            shape: tuple[int, ...], method: str = "logit", decision: float | None = None,
            relative: float | None = None) -> Fused:
    """The committee's map from the raw maps of the members that voted (ran and saw their trace).

    ``prior``/``equal``: CV-DD weights over the voting members, then :func:`fuse`; ``learned``: the
    stacker over the members' log-likelihood ratios (agreement and disagreement as the equal voter's).
    With no member voting, nothing is found: a zero map. ``decision``: the fused probability at
    which to decide "tampered" (``imlf calibrate``'s F1-optimal one), moved to 0.5 by :func:`to_decision`;
    ``relative``: then raised to that share of the image's peak where higher (:func:`relative_decision`;
    ``Fused.peak`` keeps the peak before it, for the image score).
    """
    names = [n for n in raw if n in calibrations]
    if not names:
        zero = np.zeros(shape, np.float32)
        return Fused(zero, zero.copy(), zero.copy(), {})
    if voter == "learned":
        if stacker is None:
            raise ValueError("the learned voter needs a stacker (a priors file written by imlf calibrate 0.2+)")
        equal = {n: 1.0 / len(names) for n in names}
        base = fuse({n: raw[n] for n in names}, calibrations, thresholds, equal, "mean")
        llr = {n: member_llr(calibrations[n](raw[n]), calibrations[n].base) for n in names}
        base.heatmap = to_decision(stacker(llr, shape), decision)
        base.weights = {n: abs(c) for n, c in zip(stacker.names, stacker.coef) if n in llr}
        out = base
    else:
        w = member_weights([priors[n] for n in names], voter, temperature)
        out = fuse({n: raw[n] for n in names}, calibrations, thresholds, dict(zip(names, map(float, w))), method)
        out.heatmap = to_decision(out.heatmap, decision)
    if relative:
        out.peak = peak_of(out.heatmap)
        out.heatmap = relative_decision(out.heatmap, relative, out.peak)
    return out
