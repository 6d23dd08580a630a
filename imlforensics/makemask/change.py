"""Change detection between the registered, detail- and tone-matched copies.

Recompression and resampling leave a difference everywhere; an edit leaves a large one in a
region. Three measures, each at three scales (full, 1/2, 1/4 resolution):

* colour: the CIELAB distance between the copies, made *sampling insensitive*: a value that lies
  within the range of the other copy's values one pixel around counts as explained, both ways
  (a resampled or slightly misregistered edge is; an edit is not). Its chroma is weighted by the
  ratio of the lightness noise to the chroma noise on the reference pixels (at most 1, at least
  CHROMA_LEAST): JPEG stores colour at half resolution and quantizes it more coarsely, so a
  recompressed pair differs far more in chroma than in lightness along every saturated edge, and
  an unweighted distance marks those edges as change; a lossless pair keeps full weight;
* structure: one minus the contrast-structure term of the local SSIM of the gray images (Wang
  et al., IEEE TIP 2004), which sees texture that was replaced by texture of the same colour;
* edges: the shift-tolerant difference of the gradient magnitudes.

Each measure is read against its own distribution on the unchanged pixels, which depends on
local activity (texture and edges err more): per activity class, where the tail of that
distribution starts and how fast it decays (:func:`tail_model`), so that evidence is the
log-probability that unchanged noise reaches the difference, comparable between measures however
heavy their tails. The first pass, without known unchanged pixels, takes the lowest quarter of
each class's differences as its unit (robust while most of a class is unedited), bounded by the
noise of the two images' own high frequencies when most of the image is edited. The coarse
scales (their evidence averaged, measures combined by their maximum) say *whether* a region
changed, the full scale (colour and edges, no SSIM window) says *where* its outline runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

SCALES = (1, 2, 4)
MAX_SAMPLES = 60_000


@dataclass
class ChangeMap:
    fine: np.ndarray  # (H, W) float32: evidence at full resolution (colour, edges), see tail_model
    coarse: np.ndarray  # (H, W) float32: evidence at 1/2 and 1/4 resolution (all measures), averaged
    noise: dict[str, float]  # median scale of each measure's noise at full resolution
    chroma_weight: float = 1.0  # the colour distance's weight of chroma at full resolution (colour_difference)

    @property
    def score(self) -> np.ndarray:
        """One map: the fine evidence where the coarse one agrees."""
        return np.minimum(self.fine, self.coarse)


def lab(rgb: np.ndarray) -> np.ndarray:
    """CIELAB (L 0..100) of an RGB image in 0..255."""
    return cv2.cvtColor(np.clip(rgb, 0, 255).astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)


def _outside_range(a: np.ndarray, b: np.ndarray, radius: int, norm: bool = True) -> np.ndarray:
    """Per channel, how far ``a`` lies outside the range of ``b`` over the (2 radius + 1)^2
    neighbourhood, and (``norm``) the Euclidean norm over channels. ``a``, ``b``: (H, W) or
    (H, W, C) float32."""
    k = np.ones((2 * radius + 1, 2 * radius + 1), np.uint8)
    lo, hi = cv2.erode(b, k, borderType=cv2.BORDER_REPLICATE), cv2.dilate(b, k, borderType=cv2.BORDER_REPLICATE)
    d = cv2.max(cv2.max(cv2.subtract(a, hi), cv2.subtract(lo, a)), 0.0)
    return d if d.ndim == 2 or not norm else cv2.sqrt(squared_norm(d))


def squared_norm(d: np.ndarray) -> np.ndarray:
    """The sum over channels of the squares of an (H, W, C) float32 image: (H, W)."""
    return cv2.transform(cv2.multiply(d, d), np.ones((1, d.shape[2]), np.float32)).reshape(d.shape[:2])


def tolerant_difference(a: np.ndarray, b: np.ndarray, radius: int = 1) -> np.ndarray:
    """Sampling-insensitive distance (after Birchfield & Tomasi, IEEE PAMI 1998), both ways: a
    value that lies between the other copy's values within ``radius`` pixels is explained by a
    shift of an edge or by resampling and counts as no difference; only what neither copy's
    neighbourhood explains remains."""
    return np.maximum(_outside_range(a, b, radius), _outside_range(b, a, radius))


CHROMA_QUANTILE = 0.9  # the noise of lightness and of chroma: this quantile of their differences
CHROMA_LEAST = 0.25  # chroma never counts less than this (an edit that only recolours still shows)
LIGHTNESS_FLOOR = 0.5  # lightness noise below this (CIELAB L, about 8-bit rounding) counts as this


def colour_difference(a: np.ndarray, b: np.ndarray, reference: np.ndarray, radius: int = 1) -> tuple[np.ndarray, float]:
    """The sampling-insensitive CIELAB distance of :func:`tolerant_difference` between ``a`` and
    ``b`` ((H, W, 3) CIELAB), its chroma weighted by the ratio of the lightness noise to the chroma
    noise on the ``reference`` pixels (each the CHROMA_QUANTILE of its differences there), between
    CHROMA_LEAST and 1; and that weight."""
    one = (_outside_range(a, b, radius, False), _outside_range(b, a, radius, False))
    where = np.flatnonzero(reference)
    where = where[:: where.size // MAX_SAMPLES + 1]  # quantiles of a regular subsample are as good
    weight = 1.0
    if where.size:
        x, y = (d.reshape(-1, 3)[where] for d in one)  # (the sampled reference pixels, both ways)
        lightness = np.maximum(x[:, 0], y[:, 0])
        chroma = np.maximum(np.hypot(x[:, 1], x[:, 2]), np.hypot(y[:, 1], y[:, 2]))
        noise_l = max(float(np.quantile(lightness, CHROMA_QUANTILE)), LIGHTNESS_FLOOR)
        noise_c = float(np.quantile(chroma, CHROMA_QUANTILE))
        weight = float(np.clip(noise_l / max(noise_c, 1e-6), CHROMA_LEAST, 1.0))
    w = np.array([1.0, weight, weight], np.float32).reshape(1, 1, 3)
    return np.maximum(*(cv2.sqrt(squared_norm(cv2.multiply(d, w))) for d in one)), weight


def _structure_dissimilarity(x: np.ndarray, y: np.ndarray, sigma: float = 1.5) -> np.ndarray:
    """One minus the contrast-structure term of SSIM (Wang et al., IEEE TIP 2004) of two gray
    images in 0..255, local Gaussian windows. The luminance term is left out: the colour
    distance measures brightness, and that term is hypersensitive in dark areas."""
    c2 = (0.03 * 255) ** 2
    blur = lambda z: cv2.GaussianBlur(z, (0, 0), sigma)  # noqa: E731
    mx, my = blur(x), blur(y)
    vx = blur(x * x) - mx * mx
    vy = blur(y * y) - my * my
    cxy = blur(x * y) - mx * my
    return np.clip(1.0 - (2 * cxy + c2) / (vx + vy + c2), 0.0, 2.0)


def _gradient(g: np.ndarray) -> np.ndarray:
    gx = cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3)
    return cv2.magnitude(gx, gy)


def _hf_noise(g: np.ndarray, valid: np.ndarray) -> float:
    """Noise of one gray image from its finest details (median absolute Laplacian / 0.6745)."""
    lap = cv2.Laplacian(g, cv2.CV_32F, ksize=1)
    v = np.abs(lap[valid])
    v = v[:: v.size // MAX_SAMPLES + 1]  # a median of a regular subsample is as good
    return float(np.median(v) / 0.6745) if v.size else 0.0


def activity(g: np.ndarray, sigma: float = 1.5) -> np.ndarray:
    """Local standard deviation of a gray image (Gaussian window)."""
    m = cv2.GaussianBlur(g, (0, 0), sigma)
    return np.sqrt(np.maximum(cv2.GaussianBlur(g * g, (0, 0), sigma) - m * m, 0.0))


TAIL = 0.05  # the reference's upper tail: its share beyond the quantile where the tail starts
TAIL_FROM = 0.25  # its decay is measured from the quantile 1 - TAIL_FROM (an edit the reference holds lies beyond)
ROBUST_QUANTILE = 0.25  # a reference that may hold an edit: the noise is its lowest quarter


class ActivityClasses:
    """The reference pixels of one scale split into ``bins`` classes of equal size by local
    activity, and every pixel's place between the classes' median activities (for a linear
    interpolation of per-class values), computed once for all the measures of a scale."""

    def __init__(self, act: np.ndarray, ref: np.ndarray, bins: int = 8):
        self.ref = ref
        a = act[ref]
        self.step = a.size // MAX_SAMPLES + 1  # quantiles of a regular subsample are as good and far cheaper
        a = a[:: self.step]
        self.classes: list[np.ndarray] = []
        if a.size < 16 * bins:
            self.lower, self.upper, self.weight = None, None, None
            return
        edges = np.quantile(a, np.linspace(0, 1, bins + 1))
        cls = np.clip(np.searchsorted(edges, a, side="right") - 1, 0, bins - 1)
        centres = []
        for k in range(bins):
            sel = cls == k
            if sel.sum() >= 16 and (not centres or float(np.median(a[sel])) > centres[-1]):
                centres.append(float(np.median(a[sel])))
                self.classes.append(sel)
        c = np.array(centres, np.float32)
        if len(c) == 1:  # (a constant activity)
            self.lower = self.upper = np.zeros(act.shape, np.int8)
            self.weight = np.zeros(act.shape, np.float32)
            return
        # each pixel between two neighbouring classes (clamped beyond the first and last)
        self.upper = np.clip(np.searchsorted(c, act, side="right"), 1, len(c) - 1).astype(np.int8)
        self.lower = self.upper - 1
        span = np.maximum(c[self.upper] - c[self.lower], 1e-6)
        self.weight = np.clip((act - c[self.lower]) / span, 0.0, 1.0).astype(np.float32)

    def spread(self, values: np.ndarray) -> np.ndarray:
        """Per-class ``values`` interpolated at every pixel."""
        v = values.astype(np.float32)
        return v[self.lower] + (v[self.upper] - v[self.lower]) * self.weight


def tail_model(d: np.ndarray, classes: ActivityClasses, robust: bool,
               monotone: bool = True) -> tuple[np.ndarray | float, np.ndarray | float]:
    """Where the upper tail of the unchanged pixels' difference ``d`` starts, and how fast it
    decays, at every pixel, as functions of local activity (recompression and resampling err
    more in texture and on edges than in flat areas): per activity class of the reference
    pixels (``classes``), interpolated between them.

    With ``robust`` False, the reference holds unchanged pixels: per class, the tail starts at the
    quantile 1 - TAIL and decays exponentially (the peaks-over-threshold model of extreme values,
    Pickands 1975) with the scale that the quantiles 1 - TAIL_FROM and 1 - TAIL imply, so a
    heavy-tailed measure (edges of aliased texture) needs larger differences to count than a
    light-tailed one, and a missed part of an edit in the reference (beyond both quantiles)
    moves neither much. (d - start) / scale then reads as a log-probability: 1 is 1.8% of the
    unchanged pixels, 2 is 0.7%, 6 is 0.01%. With ``robust`` True, the reference may hold an edit
    too: the start is 0 and the scale the class's lowest quarter (robust while most of a class
    is unedited). Returns (start, scale), maps or numbers. ``monotone``: a class's values are at
    most those of every busier class (the lower envelope: a class that is mostly edited, a large
    flat region repainted, takes those of the classes above it).
    """
    v = d[classes.ref][:: classes.step]

    def fit(x: np.ndarray) -> tuple[float, float]:
        if not x.size:
            return 0.0, 0.0
        if robust:
            return 0.0, float(np.quantile(x, ROBUST_QUANTILE))
        lo, hi = np.quantile(x, [1 - TAIL_FROM, 1 - TAIL])
        return float(hi), float(hi - lo) / float(np.log(TAIL_FROM / TAIL))

    if classes.weight is None:
        return fit(v)
    starts, scales = (np.array(z) for z in zip(*(fit(v[sel]) for sel in classes.classes)))
    if monotone:
        starts = np.minimum.accumulate(starts[::-1])[::-1]
        scales = np.minimum.accumulate(scales[::-1])[::-1]
    return (0.0 if robust else classes.spread(starts)), classes.spread(scales)


def _down(img: np.ndarray, f: int) -> np.ndarray:
    if f == 1:
        return img
    h, w = img.shape[:2]
    return cv2.resize(img, (max(1, w // f), max(1, h // f)), interpolation=cv2.INTER_AREA)


def _up(img: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    if img.shape[:2] == shape:
        return img
    return cv2.resize(img, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)


def _evidence(m: np.ndarray, classes: ActivityClasses, robust: bool, floor: float, bound: float | None,
              monotone: bool) -> tuple[np.ndarray, np.ndarray | float]:
    """The evidence of one measure ``m`` against its tail (:func:`tail_model`), whose start and
    scale are at most ``bound`` (if given) and whose scale is at least ``floor``; and that scale."""
    start, scale = tail_model(m, classes, robust, monotone=monotone)
    if bound is not None:
        start, scale = np.minimum(start, bound), np.minimum(scale, bound)
    scale = np.maximum(scale, floor)
    return (np.maximum(m - start, 0.0) / scale).astype(np.float32), scale


def change_map(original: np.ndarray, tampered: np.ndarray, valid: np.ndarray, unchanged: np.ndarray | None = None,
               floors: dict[str, float] | None = None, learned: np.ndarray | None = None) -> ChangeMap:
    """Evidence of change at every pixel (see the module docstring).

    ``original``, ``tampered``: (H, W, 3) float32 RGB in 0..255 on the same grid, already tone
    and detail matched; ``valid``: the pixels both cover. ``unchanged``: the valid pixels a first
    pass found unedited, the reference of :func:`tail_model` (without it, all valid pixels are,
    read robustly). ``floors``: the smallest tail scale per measure (defaults keep 8-bit rounding
    from counting as change).
    ``learned``: a distance map of the two copies' deep features (:mod:`.features`), one more
    coarse measure.
    """
    floors = {"colour": 1.0, "structure": 0.01, "edges": 2.0, "features": 0.01, **(floors or {})}
    shape = tampered.shape[:2]
    la, lb = lab(original), lab(tampered)
    ga = cv2.cvtColor(np.clip(original, 0, 255).astype(np.float32), cv2.COLOR_RGB2GRAY)
    gb = cv2.cvtColor(np.clip(tampered, 0, 255).astype(np.float32), cv2.COLOR_RGB2GRAY)
    hf = float(np.hypot(_hf_noise(ga, valid), _hf_noise(gb, valid)))
    fine = np.zeros(shape, np.float32)
    coarse = {k: np.zeros(shape, np.float32) for k in ("colour", "structure", "edges")}
    deep = np.zeros(shape, np.float32)  # the learned measure's evidence, when there is one
    noise: dict[str, float] = {}
    chroma_weight = 1.0
    used = 0
    for f in SCALES:
        va = _down(valid.astype(np.uint8), f) > 0
        if va.sum() < 256:
            continue
        quiet, robust = va, True
        if unchanged is not None:
            un = _down(unchanged.astype(np.uint8), f) > 0
            if (un & va).sum() >= 256:
                quiet, robust = un & va, False
        xa, xb = _down(la, f), _down(lb, f)
        ya, yb = _down(ga, f), _down(gb, f)
        classes = ActivityClasses(np.maximum(activity(ya), activity(yb)), quiet)
        colour, weight = colour_difference(xa, xb, quiet)
        if f == 1:
            chroma_weight = weight
        maps = {"colour": colour, "edges": tolerant_difference(_gradient(ya), _gradient(yb))}
        if f > 1:  # SSIM's window would blur the outline at full resolution
            maps["structure"] = _structure_dissimilarity(ya, yb)
        if f == 1 and learned is not None:
            maps["features"] = learned
        for k, m in maps.items():
            # a mostly edited image: its own high-frequency noise bounds the colour tail
            bound = max(3.0 * hf / f, floors[k]) if k == "colour" else None
            # the structure term is noisiest in flat areas: its tail need not grow with activity
            z, level = _evidence(m, classes, robust, floors[k], bound, monotone=k != "structure")
            z[~va] = 0.0
            if f > 1:
                coarse[k] += _up(z, shape)
                continue
            noise[k] = float(np.median(level[va])) if np.ndim(level) else float(level)
            if k == "features":  # coarse in itself: it says whether, not where
                deep = z
            else:
                fine = np.maximum(fine, z)
        used += f > 1
    both = np.maximum(np.maximum(coarse["colour"], coarse["structure"]), coarse["edges"]) / max(used, 1)
    both = np.maximum(both, deep)
    fine[~valid] = 0.0
    both[~valid] = 0.0
    return ChangeMap(fine, both.astype(np.float32), noise, chroma_weight)
