"""Blind localization from a Noiseprint residual: block statistics, then EM with an outlier class.

Follows the official post-processing of D. Cozzolino, L. Verdoliva, "Noiseprint: a CNN-based camera
model fingerprint", IEEE TIFS 15, 2020 (grip-unina/noiseprint, ``post_em.py``, ``feat_spam``,
``utility/gaussianMixture.py``), reimplemented with vectorized numpy:

1. Valid pixels: the residual's local variance (5x5) is not tiny, the image is not saturated
   (> 253/256, opened by a radius-3 disk), then every invalid pixel invalidates a 35x35 square.
2. Features: the residual quantized to 4 levels; horizontal and vertical co-occurrences of 4
   neighbours (256 codes each) counted on an 8x8 block grid, averaged over 64x64 windows (8x8
   blocks, stride 8), square-rooted: 512 features per window. Windows with < 95% valid pixels are
   left out of the fit (and 2 windows of border on each side dropped).
3. PCA to 32 whitened components, then EM (100 iterations, 10 random starts from a fixed seed) for
   one full-covariance Gaussian plus an outlier class of fixed likelihood (-log = 42).
4. The map is each window's Mahalanobis distance to the Gaussian, on the window-centre grid
   (``range0``, ``range1``); :func:`grid_to_image` brings it to pixels (nearest window).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from threadpoolctl import threadpool_limits

QUANT_VALUES = np.asarray([-0.8, -0.28, 0.16, 0.7])
BLOCK = 8            # histogram block (the grid stride)
WINDOW = 64          # feature window (8 x 8 blocks)
VALID_FRACTION = 0.95
MIN_VALID = 50       # fewer valid windows: no map (the official code returns None)
COMPONENTS = 32
OUTLIER_NLOGL = 42.0
OUTLIER_PRIOR = 0.01


@dataclass
class BlindResult:
    """The official outputs: the map on the window grid and what the EM found."""

    grid: np.ndarray | None          # Mahalanobis distance per window (None: too few valid windows)
    valid: np.ndarray                # windows used for the fit
    range0: np.ndarray               # window centres (rows), in pixels
    range1: np.ndarray               # window centres (columns)
    outlier_prob: float = float("nan")  # the outlier class's prior after EM
    inlier_nlogl: np.ndarray | None = None  # -log likelihood of each window under the Gaussian


def valid_pixels(res: np.ndarray, gray01: np.ndarray) -> np.ndarray:
    """Pixels whose neighbourhood is textured and unsaturated (the official ``getWeights``)."""
    from scipy import ndimage  # scipy is imported when first needed (it costs 0.6 s at start-up)

    mean = ndimage.uniform_filter(res, 5)
    var = ndimage.uniform_filter(np.square(res), 5) - np.square(mean)
    bad = var < 0.005
    bad[:1, :] = bad[-1:, :] = True
    bad[:, :1] = bad[:, -1:] = True
    yy, xx = np.mgrid[-3:4, -3:4]
    disk = xx * xx + yy * yy <= 9
    sat = ndimage.binary_erosion(gray01 > 253.0 / 256, disk, border_value=1)
    sat = ndimage.binary_dilation(sat, disk, border_value=0)
    bad = ndimage.maximum_filter(bad | sat, (35, 35))
    return ~bad


def cooccurrence_features(res: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Window features (rows, cols, 512), valid fraction per window, window centres (the official ``getSpamRes``)."""
    th = (QUANT_VALUES[1:] + QUANT_VALUES[:-1]) / 2
    q = (res[..., None] > th).sum(-1, dtype=np.int16)  # 0..3; codes below are 0..255, 256 = invalid
    h, w = q.shape[0] - 4, q.shape[1] - 4
    code_h = sum(q[2:2 + h, p:p + w] << (2 * p) for p in range(4))
    code_v = sum(q[p:p + h, 2:2 + w] << (2 * p) for p in range(4))
    ok = valid[2:2 + h, 2:2 + w]
    code_h[~ok] = 256
    code_v[~ok] = 256
    nb0, nb1 = (h - BLOCK) // BLOCK + 1, (w - BLOCK) // BLOCK + 1
    blocks = np.arange(nb0 * nb1).reshape(nb0, 1, nb1, 1)

    def hist(codes: np.ndarray) -> np.ndarray:
        c = codes[:nb0 * BLOCK, :nb1 * BLOCK].reshape(nb0, BLOCK, nb1, BLOCK)
        idx = (blocks * 257 + c).ravel()  # int64
        return np.bincount(idx, minlength=nb0 * nb1 * 257).reshape(nb0, nb1, 257).astype(np.float32)

    spam_h, spam_v = hist(code_h), hist(code_v)
    count = BLOCK * BLOCK - spam_h[..., -1]
    denom = np.maximum(count, np.float32(1e-20))[..., None]
    spam = np.concatenate([spam_h[..., :-1] / denom, spam_v[..., :-1] / denom], axis=2)
    weight = count / np.float32(BLOCK * BLOCK)
    range0 = np.arange(0, h - BLOCK + 1, BLOCK) + 2 + (BLOCK - 1) / 2
    range1 = np.arange(0, w - BLOCK + 1, BLOCK) + 2 + (BLOCK - 1) / 2

    from scipy import ndimage

    k = WINDOW // BLOCK
    weight = np.maximum(ndimage.uniform_filter(weight, (k, k), mode="constant", cval=0.0), 0.0)
    spam = np.maximum(ndimage.uniform_filter(spam, (k, k, 1), mode="constant", cval=0.0), 0.0)
    spam = spam / np.maximum(weight[..., None], np.float32(1e-20))
    lo, hi = (k - 1) // 2, k // 2  # floor and ceil of (k - 1) / 2
    range0 = (range0[lo:-hi] + range0[hi:-lo]) / 2
    range1 = (range1[lo:-hi] + range1[hi:-lo]) / 2
    weight = weight[hi:-lo, hi:-lo]
    spam = spam[hi:-lo, hi:-lo]
    return spam, weight, range0, range1


def blind_map(res: np.ndarray, gray01: np.ndarray, seed: int = 0) -> BlindResult:
    """The official blind localization of a Noiseprint residual ``res`` (image luminance in [0, 1))."""
    res = np.asarray(res, dtype=np.float32)
    spam, weight, range0, range1 = cooccurrence_features(res, valid_pixels(res, gray01))
    valid = weight >= VALID_FRACTION
    spam = np.sqrt(np.abs(spam))[2:-2, 2:-2]
    valid, range0, range1 = valid[2:-2, 2:-2], range0[2:-2], range1[2:-2]
    if valid.sum() < MIN_VALID:
        return BlindResult(None, valid, range0, range1)
    feats = spam.reshape(-1, spam.shape[2])
    eigval, eigvec = np.linalg.eigh(_covariance(feats[valid.ravel()]))
    order = np.argsort(eigval)[::-1][:COMPONENTS]
    proj = eigvec[:, order] / np.sqrt(eigval[order])
    feats = np.concatenate([f @ proj for f in _chunks(feats)])  # float64, as float32 @ float64 gives
    fit = feats[valid.ravel()]
    rng = np.random.RandomState(seed)
    best = None
    with threadpool_limits(1, "blas"):  # small products: threads only contend (5-10x slower on 2 cores)
        for _ in range(10):
            model = _GaussianWithOutliers(fit, rng)
            loglik = model.em(fit, max_iter=100)
            if best is None or loglik > best[0]:
                best = (loglik, model)
        model = best[1]
        nlogl, mahal = model.nlogl(feats)
    return BlindResult(mahal.reshape(valid.shape), valid, range0, range1,
                       float(model.outlier_prob), nlogl.reshape(valid.shape))


def _chunks(x: np.ndarray, rows: int = 8192):
    return (x[i:i + rows] for i in range(0, x.shape[0], rows))


def _covariance(x: np.ndarray) -> np.ndarray:
    """``np.cov(x, rowvar=False, bias=True)`` in float64, accumulated over row chunks (a 12 MP image
    has 190,000 windows x 512 features: a float64 copy would be 0.8 GB)."""
    mean = x.mean(axis=0, dtype=np.float64)
    cov = np.zeros((x.shape[1], x.shape[1]))
    for chunk in _chunks(x):
        d = chunk.astype(np.float64) - mean
        cov += d.T @ d
    return cov / x.shape[0]


class _GaussianWithOutliers:
    """One full-covariance Gaussian + an outlier class of fixed -log likelihood (official ``gm``, K = 1)."""

    def __init__(self, x: np.ndarray, rng: np.random.RandomState) -> None:
        self.prior = 1.0 - OUTLIER_PRIOR
        self.outlier_prob = OUTLIER_PRIOR
        self.mu = x[rng.randint(0, x.shape[0], size=1)[0]]
        var = np.var(x, axis=0)
        self.sigma = np.diag(var + np.abs(np.spacing(np.max(var))))

    def nlogl(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        from scipy.linalg import solve_triangular

        low = _cholesky(self.sigma)
        z = solve_triangular(low, (x - self.mu).T, lower=True).T
        mahal = np.sum(z * z, axis=1)
        logdet = 2 * np.sum(np.log(np.diag(low)))
        return 0.5 * (mahal + logdet + x.shape[1] * np.log(2 * np.pi)), mahal

    def expectation(self, x: np.ndarray) -> tuple[np.ndarray, float]:
        nl, _ = self.nlogl(x)
        logit = np.stack([np.log(self.prior) - nl, np.full_like(nl, np.log(self.outlier_prob) - OUTLIER_NLOGL)], 1)
        top = logit.max(1, keepdims=True)
        prob = np.exp(logit - top)
        dem = prob.sum(1, keepdims=True)
        return prob / dem, float(np.mean(np.log(dem) + top))

    def maximization(self, x: np.ndarray, post: np.ndarray) -> None:
        p_in = post[:, 0].sum()
        self.mu = post[:, 0] @ x / p_in
        xm = np.sqrt(post[:, :1]) * (x - self.mu)
        sigma = xm.T @ xm / p_in
        top = np.linalg.eigvalsh(sigma)[-1]
        self.sigma = sigma + np.abs(np.spacing(top)) * np.eye(x.shape[1])
        p_out = post[:, 1].sum()
        self.prior, self.outlier_prob = p_in / (p_in + p_out), p_out / (p_in + p_out)

    def em(self, x: np.ndarray, max_iter: int, rel_err: float = 1e-5) -> float:
        post, old = self.expectation(x)
        loglik = old
        for _ in range(max_iter):
            self.maximization(x, post)
            post, loglik = self.expectation(x)
            diff = loglik - old
            if 0 <= diff < rel_err * abs(loglik):
                break
            old = loglik
        return loglik


def _cholesky(sigma: np.ndarray) -> np.ndarray:
    for _ in range(3):
        try:
            return np.linalg.cholesky(sigma)
        except np.linalg.LinAlgError:  # the official code's exceptional regularization
            w, v = np.linalg.eigh(np.real(sigma))
            w = np.maximum(w, np.spacing(np.max(w)))
            sigma = (v * w) @ v.T
    return np.linalg.cholesky(sigma)


def grid_to_image(grid: np.ndarray, range0: np.ndarray, range1: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-window resampling of a grid map to the image (the official ``resizeMapWithPadding``)."""
    def nearest(centres: np.ndarray, n: int) -> np.ndarray:
        mids = (centres[1:] + centres[:-1]) / 2
        return np.searchsorted(mids, np.arange(n), side="left")

    return grid[np.ix_(nearest(range0, shape[0]), nearest(range1, shape[1]))]
