"""``imlf make-mask``: the ground-truth mask of an edit from the original and the tampered copy.

After MMM, the Manipulation Mask Manufacturer (arXiv 2407.03695): internet before/after pairs
differ in resolution, framing, compression and colour, so the pair is treated as change detection
after bringing the two copies onto one another:

1. :mod:`.register` — the original onto the tampered copy's geometry (features, robust fit, ECC);
2. :mod:`.detail` — the same level of detail in both (or :mod:`.sr`, a learned super-resolution);
3. :mod:`.photometric` — global colour, gamma and contrast changes undone;
4. :mod:`.change` — shift-tolerant colour, structure and edge differences, as log-probabilities
   of the unchanged pixels' noise;
5. :mod:`.cleanup` — a contrast-sensitive graph cut, hysteresis, seams and specks removed, holes
   filled, edges snapped.

Steps 3-5 run twice: the second pass refits the registration, the tone curves and the noise on
the pixels the first pass (on copies of at most 0.5 MP) found unchanged, so that the edit cannot
pull any of them.

``make_mask(original, tampered)`` takes paths, arrays or PIL images and returns a
:class:`MaskResult` at the tampered image's resolution and framing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from ..io.image import ImageLike, as_image
from .change import change_map, lab, squared_norm
from .cleanup import FINE, FIRST_HIGH, FIRST_LOW, HIGH, LOW, carve_bays, clean, refine_outline
from .detail import budget_factor, match_blur, resample_like
from .photometric import fit_tone
from .register import (
    Registration,
    RegistrationError,
    copied,
    gray,
    refine,
    register,
    warp,
)

__all__ = ["MaskResult", "RegistrationError", "make_mask"]

FIRST_PASS_PIXELS = 500_000  # the first pass compares copies at most this large
MIN_SEEDS = 2000  # copied pixels enough to fit the tone curves on in the first pass
IDENTICAL_LEVELS = 2  # copies whose pixels all agree within this many levels are the same picture


@dataclass
class MaskResult:
    mask: np.ndarray  # (H, W) bool at the tampered image's resolution
    soft: np.ndarray  # (H, W) float32 in [0, 1]: the change map
    registration: Registration
    report: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def fraction(self) -> float:
        return float(self.mask.mean())


def _identical(original: np.ndarray, tampered: np.ndarray) -> bool:
    return original.shape == tampered.shape and int(
        np.abs(original.astype(np.int16) - tampered.astype(np.int16)).max()) <= IDENTICAL_LEVELS


def make_mask(original: ImageLike, tampered: ImageLike, upscaler: Any = None, features: Any = None) -> MaskResult:
    """The mask of what changed from ``original`` to ``tampered`` (see the module docstring).

    ``upscaler``: an :class:`imlforensics.makemask.sr.Upscaler` to enlarge a smaller original
    with a learned model instead of the classical detail matching. ``features``: an
    :class:`imlforensics.makemask.features.FeatureComparer` whose deep features of both copies
    are compared as one more measure of change (the second pass). Raises RegistrationError when
    the two are not copies of one picture.
    """
    start = time.perf_counter()
    o_img, t_img = as_image(original), as_image(tampered)
    o, t = o_img.pixels, t_img.pixels
    h, w = t.shape[:2]
    warnings: list[str] = []
    if _identical(o, t):
        reg = Registration(np.eye(3), False, "identity", correlation=1.0)
        warnings.append("the two images are identical: the mask is empty")
        return MaskResult(np.zeros((h, w), bool), np.zeros((h, w), np.float32), reg,
                          _report(reg, None, 0.0, {}, {}, np.zeros((h, w), bool), start, 1.0), warnings)
    reg = register(o, t)
    unchanged = None
    for rnd in range(2):
        if rnd == 1 and reg.model != "identity":
            reg = refine(o, t, reg, unchanged)
        source, reg_used, sr_note = o, reg, None
        if upscaler is not None and reg.scale < 0.9:
            source, reg_used, sr_note = upscaler.enlarge(o, reg)
        warped, cover = warp(source, reg_used, (h, w), cv2.INTER_CUBIC if reg_used.scale < 1 else cv2.INTER_LINEAR)
        a, b = np.clip(warped, 0, 255).astype(np.float32), t.astype(np.float32)
        if reg_used.scale < 0.9:  # the original was enlarged: take the tampered copy down to its detail
            b = resample_like(b, reg_used.scale)
        if unchanged is None:  # the first pass: where the texture is copied, whatever the grading
            keep = cover & _copied_texture(a, b, cover)
            trusted = bool(keep.sum() >= MIN_SEEDS)
            keep = keep if trusted else cover
        else:
            keep, trusted = cover & unchanged, True
        tone = fit_tone(a, b, keep, previous=None if rnd == 0 else tone, trusted=trusted)
        a = tone.apply_saturated(a, b)
        toned = a
        a, b, blur = match_blur(a, b, keep, None if rnd == 0 else blur)
        spread = 1.0 / min(reg_used.scale, 1.0)
        if rnd == 0:
            mask, coarse, score = _first_pass(a, b, cover, t, spread)
            # for the second pass: the fits use pixels well below the low threshold away from what
            # was found, the noise every pixel outside it and its coarse evidence
            grown = cv2.dilate(mask.astype(np.uint8), np.ones((7, 7), np.uint8)) > 0
            quiet = cover & ~grown & ~(cv2.dilate((coarse >= FIRST_LOW).astype(np.uint8), np.ones((7, 7), np.uint8)) > 0)
            unchanged = quiet & ~(cv2.dilate((score >= FIRST_LOW).astype(np.uint8), np.ones((7, 7), np.uint8)) > 0)
        else:
            ch = change_map(a, b, cover, quiet, learned=None if features is None else features.distance(a, b))
            mask, soft = clean(ch.fine, ch.coarse, t, cover, LOW, HIGH, spread=spread)
            diff = outline_difference(toned, t)
            mask = carve_bays(refine_outline(mask, diff, cover), diff, cover)
    stages = {"tone_max_shift": round(tone.strength(), 2), "blur": blur, "noise": ch.noise, "super_resolution": sr_note,
              "features": None if features is None else {"model": features.name, "device": features.device}}
    coverage = float(cover.mean())
    if coverage < 0.999:
        warnings.append(f"the original covers {100 * coverage:.1f}% of the tampered image: "
                        "the rest cannot be compared and is left out of the mask")
    if not mask.any():
        warnings.append("no change found: the mask is empty")
    thresholds = {"unit": "ln(0.05 / share of the unchanged pixels beyond)", "low": LOW, "high": HIGH, "fine": FINE}
    return MaskResult(mask, soft, reg, _report(reg, ch, coverage, stages, thresholds, mask, start,
                                               unchanged.mean() / max(cover.mean(), 1e-9)), warnings)


# L, a, b weights of the outline's difference: a JPEG copy's colour is stored at half resolution
# and bleeds a pixel or two across every pasted edge; its lightness holds the edge
OUTLINE_WEIGHTS = np.array([1.0, 0.5, 0.5], np.float32).reshape(1, 1, 3)


def outline_difference(a: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Distance in CIELAB, chroma at half weight, between the registered, tone-matched original
    ``a`` and the tampered image ``t`` as it is (not taken down to the original's detail: its own
    edges stay sharp)."""
    d = cv2.multiply(cv2.subtract(lab(a), lab(t.astype(np.float32))), OUTLINE_WEIGHTS)
    return cv2.sqrt(squared_norm(d))


def _shrink(shape: tuple[int, int], pixels: int = FIRST_PASS_PIXELS):
    """(shrink, grow): functions taking an image of ``shape`` to at most ``pixels`` pixels (area
    averaging; a boolean map keeps the pixels wholly inside it) and back (``interpolation``), or
    None when it is small enough already."""
    h, w = shape
    f = budget_factor(shape, pixels)
    if f >= 1.0:
        return None
    size = (max(1, round(w * f)), max(1, round(h * f)))

    def shrink(x: np.ndarray) -> np.ndarray:
        if x.dtype == bool:
            return cv2.resize(x.astype(np.float32), size, interpolation=cv2.INTER_AREA) >= 1.0
        return cv2.resize(x, size, interpolation=cv2.INTER_AREA)

    def grow(x: np.ndarray, interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
        if x.dtype == bool:
            return cv2.resize(x.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST) > 0
        return cv2.resize(x, (w, h), interpolation=interpolation)

    return shrink, grow


def _copied_texture(a: np.ndarray, b: np.ndarray, cover: np.ndarray) -> np.ndarray:
    """The pixels near texture that one copy shares with the other (the tone curves' first
    sample), found on copies of at most FIRST_PASS_PIXELS."""
    resize = _shrink(cover.shape)
    if resize is not None:
        a, b, cover = (resize[0](x) for x in (a, b, cover))
    u8 = lambda x: gray(np.clip(x, 0, 255).astype(np.uint8))  # noqa: E731
    seeds = cv2.dilate(copied(u8(a), u8(b), cover).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    return seeds if resize is None else resize[1](seeds)


def _first_pass(a: np.ndarray, b: np.ndarray, cover: np.ndarray, t: np.ndarray,
                spread: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where the first pass finds change (the mask, the coarse evidence and the score), in units
    of the lowest quarter of the differences, at full size. It only has to tell the edit from
    what the second pass may fit its curves and noise on: a large pair is compared at
    FIRST_PASS_PIXELS."""
    resize = _shrink(cover.shape)
    if resize is not None:
        a, b, t, cover = (resize[0](x) for x in (a, b, t, cover))
    ch = change_map(a, b, cover)
    mask, _ = clean(ch.fine, ch.coarse, t, cover, FIRST_LOW, FIRST_HIGH, spread=spread)
    if resize is None:
        return mask, ch.coarse, ch.score
    return resize[1](mask), resize[1](ch.coarse), resize[1](ch.score)


def _report(reg: Registration, ch: Any, coverage: float, stages: dict, thresholds: dict, mask: np.ndarray,
            start: float, unchanged_share: float) -> dict[str, Any]:
    from ..io.outputs import components

    return {
        "registration": reg.to_json(),
        "scale_factor": round(1.0 / reg.scale, 4) if reg.scale > 0 else None,
        "coverage": round(coverage, 4),
        "unchanged_share": round(float(unchanged_share), 4),
        "thresholds": thresholds,
        "noise": {k: round(v, 4) for k, v in (ch.noise if ch is not None else {}).items()},
        "chroma_weight": round(ch.chroma_weight, 3) if ch is not None else None,
        **{k: v for k, v in stages.items() if k != "noise"},
        "tampered_fraction": round(float(mask.mean()), 6),
        "boxes": components(mask, mask.astype(np.float32)),
        "seconds": round(time.perf_counter() - start, 3),
    }
