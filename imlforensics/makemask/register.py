"""Registration: bring the original onto the tampered image's geometry.

Before/after pairs found on the internet differ in size, framing (crops, offsets), small
rotations and mirroring. The transform is found as MMM prescribes for such pairs (Manipulation
Mask Manufacturer, arXiv 2407.03695): sparse features first, then a dense refinement.

1. SIFT keypoints (Lowe, IJCV 2004) on both images, and on the mirrored original; descriptor
   matches that pass Lowe's ratio test. When they settle nothing, low-contrast keypoints too
   (small, faint or mostly repainted copies keep their features there).
2. A robust fit (RANSAC) of a similarity, an affine map and a homography to the matches; the
   simplest model that explains nearly as many matches as the richest one wins, so a changed
   region, whose matches disagree with the rest, cannot pull the fit.
3. Dense refinement by ECC (Evangelidis & Psarakis, PAMI 2008) on the pixels the caller marks as
   unchanged, from the sparse estimate.

Pairs that are already pixel-aligned, and pairs with too few features whose aspect ratios agree
(plain resizes), are recognised directly. Fits of a few matches compete with the plain resize
and with a dense search (band-passed template matching over scales): the explanation under
which the largest share of the frame is a verbatim copy of the original wins. When nothing
explains the pair, registration fails with a one-line reason: the images are not of the same
scene.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Iterator

import cv2
import numpy as np

from ..errors import ImlfError

MAX_FEATURE_SIDE = 700  # features are found on copies at most this large (ECC refines at full detail)
MAX_ECC_PIXELS = 400_000  # the dense refinement runs on copies at most this large
MIN_INLIERS = 8  # below this many agreeing matches, nothing is trusted
SURE_INLIERS = 25  # from this many, the fit needs no further check
MAX_WEAK = 3  # fits with fewer inliers that compete with the dense search
MIN_FEATURE_SIDE = 640  # smaller images are enlarged before their features are found


class RegistrationError(ImlfError):
    """The two images could not be brought onto each other."""


@dataclass
class Registration:
    """Where each pixel of the tampered image lies in the original.

    ``matrix`` (3x3) maps tampered pixel coordinates (x, y, 1) to coordinates in the original,
    after mirroring it left-right when ``flip`` is set.
    """

    matrix: np.ndarray
    flip: bool
    model: str  # identity | resize | similarity | affine | homography
    matches: int = 0
    inliers: int = 0
    residual_px: float = 0.0  # RMS distance of the inlier matches, in tampered pixels
    refined: bool = False
    correlation: float = float("nan")  # of the two images over unchanged pixels, after warping

    @property
    def scale(self) -> float:
        """Original pixels per tampered pixel (> 1: the original is the larger one)."""
        return float(np.sqrt(abs(np.linalg.det(self.matrix[:2, :2]))))

    @property
    def rotation_deg(self) -> float:
        return float(np.degrees(np.arctan2(self.matrix[1, 0] - self.matrix[0, 1], self.matrix[0, 0] + self.matrix[1, 1])))

    def to_json(self) -> dict:
        return {"model": self.model, "flip": self.flip, "matrix": np.round(self.matrix, 6).tolist(),
                "scale": round(self.scale, 4), "rotation_deg": round(self.rotation_deg, 3),
                "matches": self.matches, "inliers": self.inliers, "residual_px": round(self.residual_px, 3),
                "refined": self.refined, "correlation": None if np.isnan(self.correlation) else round(self.correlation, 4)}


def gray(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)


def oriented(original: np.ndarray, flip: bool) -> np.ndarray:
    return np.ascontiguousarray(original[:, ::-1]) if flip else original


def _resized(img: np.ndarray, max_side: int, min_side: int = 0) -> tuple[np.ndarray, float]:
    """A copy whose longer side is at most ``max_side`` (and, enlarged by a whole factor, at least
    ``min_side``), and its scale (new / old)."""
    longest = max(img.shape[:2])
    f = min(1.0, max_side / longest)
    if min_side and longest < min_side:
        f = float(np.ceil(min_side / longest))
    if f == 1.0:
        return img, 1.0
    interpolation = cv2.INTER_AREA if f < 1 else cv2.INTER_CUBIC
    return cv2.resize(img, (round(img.shape[1] * f), round(img.shape[0] * f)), interpolation=interpolation), f


def _scaling(f: float) -> np.ndarray:
    """Pixel-centre coordinates of an image resized by ``f``: x' = (x + 0.5) f - 0.5."""
    return np.array([[f, 0, 0.5 * f - 0.5], [0, f, 0.5 * f - 0.5], [0, 0, 1.0]])


def _features(g: np.ndarray, sensitive: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """SIFT keypoints and descriptors; ``sensitive``: a quarter of the usual contrast threshold and
    twice as many keypoints, for pairs whose usual keypoints do not agree (small, blurred or
    mostly repainted copies keep their features in low-contrast texture)."""
    sift = cv2.SIFT_create(nfeatures=4000, contrastThreshold=0.01) if sensitive else cv2.SIFT_create(nfeatures=2000)
    kps, desc = sift.detectAndCompute(g, None)
    pts = np.array([k.pt for k in kps], np.float32).reshape(-1, 2)
    return pts, desc


def _matches(desc_t: np.ndarray | None, desc_o: np.ndarray | None, ratio: float = 0.85) -> np.ndarray:
    """Index pairs (i in tampered, j in original) passing the ratio test, one per original keypoint."""
    if desc_t is None or desc_o is None or len(desc_t) < 2 or len(desc_o) < 2:
        return np.zeros((0, 2), np.int64)
    # approximate nearest neighbours (randomised k-d trees, FLANN): the ratio test keeps the same matches
    cv2.setRNGSeed(0)  # (the trees are randomised: the same pair gives the same matches whatever ran before)
    knn = cv2.FlannBasedMatcher({"algorithm": 1, "trees": 4}, {"checks": 64}).knnMatch(desc_t, desc_o, k=2)
    pairs = [(m[0].queryIdx, m[0].trainIdx, m[0].distance) for m in knn
             if len(m) == 2 and m[0].distance < ratio * m[1].distance]
    best: dict[int, tuple[int, float]] = {}
    for i, j, d in pairs:  # an original keypoint matched twice keeps its closest match
        if j not in best or d < best[j][1]:
            best[j] = (i, d)
    return np.array([(i, j) for j, (i, _) in best.items()], np.int64).reshape(-1, 2)


def _fit(pt: np.ndarray, po: np.ndarray, threshold: float) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Robust fits of the three models: (name, 3x3 tampered -> original, inlier mask)."""
    out = []
    if len(pt) < 4:
        return out
    m, inl = cv2.estimateAffinePartial2D(pt, po, method=cv2.RANSAC, ransacReprojThreshold=threshold,
                                         maxIters=4000, confidence=0.999)
    if m is not None:
        out.append(("similarity", np.vstack([m, [0, 0, 1]]), inl.ravel().astype(bool)))
    m, inl = cv2.estimateAffine2D(pt, po, method=cv2.RANSAC, ransacReprojThreshold=threshold,
                                  maxIters=4000, confidence=0.999)
    if m is not None:
        out.append(("affine", np.vstack([m, [0, 0, 1]]), inl.ravel().astype(bool)))
    if len(pt) >= 8:
        m, inl = cv2.findHomography(pt, po, cv2.USAC_MAGSAC, threshold, maxIters=4000, confidence=0.999)
        if m is not None and abs(m[2, 2]) > 1e-12:
            out.append(("homography", m / m[2, 2], inl.ravel().astype(bool)))
    return out


def _plausible(matrix: np.ndarray, shape_t: tuple[int, int], shape_o: tuple[int, int]) -> bool:
    """A transform that keeps the tampered image's corners inside a generous frame around the
    original and distorts it little."""
    a = matrix[:2, :2]
    if np.linalg.det(a) <= 0:  # a mirror image is found by mirroring the original, with better matches
        return False
    s = np.linalg.svd(a, compute_uv=False)
    if s.min() <= 0 or s.max() / s.min() > 1.5 or not 0.05 < np.sqrt(s.max() * s.min()) < 20:
        return False
    if abs(matrix[2, 0]) > 1e-2 or abs(matrix[2, 1]) > 1e-2:  # strong perspective: not an edit's copy
        return False
    h, w = shape_t
    corners = np.array([[0, 0, 1], [w, 0, 1], [0, h, 1], [w, h, 1]], float) @ matrix.T
    if np.any(corners[:, 2] <= 0):
        return False
    corners = corners[:, :2] / corners[:, 2:]
    ho, wo = shape_o
    margin = 0.5 * max(ho, wo)
    return bool(np.all((corners > -margin) & (corners < np.array([wo, ho]) + margin)))


def _ordered(fits: list[tuple[str, np.ndarray, np.ndarray]], shape_t, shape_o) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """The plausible fits, best first: the simplest model with at least 90% of the most inliers,
    then the others by inlier count."""
    ok = [f for f in fits if _plausible(f[1], shape_t, shape_o)]
    if not ok:
        return []
    most = max(int(f[2].sum()) for f in ok)
    rank = {"similarity": 0, "affine": 1, "homography": 2}
    first = min((f for f in ok if f[2].sum() >= 0.9 * most), key=lambda f: rank[f[0]])
    rest = sorted((f for f in ok if f is not first), key=lambda f: -int(f[2].sum()))
    return [first] + rest


def _candidates(tampered: np.ndarray, original: np.ndarray, sensitive: bool = False) -> Iterator[Registration]:
    """Sparse registrations of the upright original, then of the mirrored one, best first
    (``sensitive``: from low-contrast keypoints too, see :func:`_features`)."""
    gt, ft = _resized(gray(tampered), MAX_FEATURE_SIDE, MIN_FEATURE_SIDE)
    pt_all, dt = _features(gt, sensitive)
    for flip in (False, True):
        go, fo = _resized(gray(oriented(original, flip)), MAX_FEATURE_SIDE, MIN_FEATURE_SIDE)
        po_all, do = _features(go, sensitive)
        idx = _matches(dt, do)
        if len(idx) < MIN_INLIERS:
            continue
        pt, po = pt_all[idx[:, 0]], po_all[idx[:, 1]]
        threshold = max(2.0, 0.004 * max(go.shape))
        for name, m, inl in _ordered(_fit(pt, po, threshold), gt.shape, go.shape):
            if inl.sum() < (MIN_INLIERS - 2 if name == "similarity" else MIN_INLIERS):
                continue  # a similarity has 4 degrees of freedom, not 6 or 8: fewer matches pin it
            # back to full-resolution coordinates: T -> T_small -> O_small -> O
            full = np.linalg.inv(_scaling(fo)) @ m @ _scaling(ft)
            proj = np.c_[pt[inl], np.ones(inl.sum())] @ m.T
            proj = proj[:, :2] / proj[:, 2:]
            rms_o = float(np.sqrt(np.mean(np.sum((proj - po[inl]) ** 2, axis=1)))) / fo  # in original pixels
            reg = Registration(full, flip, name, matches=len(idx), inliers=int(inl.sum()))
            reg.residual_px = rms_o / max(reg.scale, 1e-9)
            yield reg


def _resize_model(shape_t: tuple[int, int], shape_o: tuple[int, int]) -> np.ndarray:
    """The original stretched onto the tampered image's frame (pixel centres aligned)."""
    (ht, wt), (ho, wo) = shape_t, shape_o
    fx, fy = wo / wt, ho / ht
    return np.array([[fx, 0, 0.5 * fx - 0.5], [0, fy, 0.5 * fy - 0.5], [0, 0, 1.0]])


def warp(original: np.ndarray, reg: Registration, shape: tuple[int, int],
         interpolation: int = cv2.INTER_LINEAR) -> tuple[np.ndarray, np.ndarray]:
    """The (mirrored when ``reg.flip``) original resampled onto the tampered frame ``shape`` (h, w),
    and the boolean map of the tampered pixels it covers. A much larger original is first
    shrunk by area averaging, so that the resampling does not alias."""
    src = oriented(original, reg.flip)
    m = reg.matrix
    s = reg.scale
    if s > 1.25:  # shrink first: INTER_AREA averages, a direct warp would alias
        f = 1.0 / s
        small = cv2.resize(src, (max(1, round(src.shape[1] * f)), max(1, round(src.shape[0] * f))),
                           interpolation=cv2.INTER_AREA)
        fx, fy = small.shape[1] / src.shape[1], small.shape[0] / src.shape[0]
        m = np.array([[fx, 0, 0.5 * fx - 0.5], [0, fy, 0.5 * fy - 0.5], [0, 0, 1.0]]) @ m
        src = small
    h, w = shape
    flags = interpolation | cv2.WARP_INVERSE_MAP
    if reg.model == "homography":
        out = cv2.warpPerspective(src, m, (w, h), flags=flags, borderMode=cv2.BORDER_REPLICATE)
        cover = cv2.warpPerspective(np.ones(src.shape[:2], np.uint8), m, (w, h), flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP)
    else:
        out = cv2.warpAffine(src, m[:2], (w, h), flags=flags, borderMode=cv2.BORDER_REPLICATE)
        cover = cv2.warpAffine(np.ones(src.shape[:2], np.uint8), m[:2], (w, h), flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP)
    return out, cover > 0


def _ncc(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    if mask.sum() < 16:
        return float("nan")
    x, y = a[mask].astype(np.float64), b[mask].astype(np.float64)
    x -= x.mean()
    y -= y.mean()
    d = np.sqrt((x * x).sum() * (y * y).sum())
    return float((x * y).sum() / d) if d > 0 else float("nan")


def refine(original: np.ndarray, tampered: np.ndarray, reg: Registration,
           unchanged: np.ndarray | None = None) -> Registration:
    """Dense ECC refinement of ``reg`` on the tampered pixels marked ``unchanged`` (all when None).

    Without ``unchanged``, the pixels where the estimate already shows the original copied
    (:func:`agreement`, loosely) stand in for them, so that a large edit cannot pull the fit.
    Returns a new Registration (the old one when ECC does not converge or moves the estimate
    implausibly far); its ``correlation`` is measured on the same pixels.
    """
    if unchanged is None:
        copied = agreement(original, tampered, reg, least=0.5)
        if copied.mean() >= COPY_SHARE:
            unchanged = cv2.dilate(copied.astype(np.uint8), np.ones((9, 9), np.uint8)) > 0
    gt, ft = _resized(gray(tampered), int(np.sqrt(MAX_ECC_PIXELS * tampered.shape[1] / tampered.shape[0])))
    src = oriented(original, reg.flip)
    # the original at about the tampered copy's scale, so ECC compares like with like
    fo = min(1.0, ft / max(reg.scale, 1e-9))
    go = gray(src) if fo == 1.0 else cv2.resize(gray(src), (max(1, round(src.shape[1] * fo)), max(1, round(src.shape[0] * fo))),
                                                interpolation=cv2.INTER_AREA)
    fo_x, fo_y = go.shape[1] / src.shape[1], go.shape[0] / src.shape[0]
    to_small_o = np.array([[fo_x, 0, 0.5 * fo_x - 0.5], [0, fo_y, 0.5 * fo_y - 0.5], [0, 0, 1.0]])
    m_small = to_small_o @ reg.matrix @ np.linalg.inv(_scaling(ft))
    mask_t = np.ones(gt.shape, np.uint8) if unchanged is None else cv2.resize(
        unchanged.astype(np.uint8), (gt.shape[1], gt.shape[0]), interpolation=cv2.INTER_NEAREST)
    homography = reg.model == "homography"
    # ECC's mask lives on the input image (the original): carry the unchanged pixels over
    if homography:
        mask_o = cv2.warpPerspective(mask_t, m_small, (go.shape[1], go.shape[0]), flags=cv2.INTER_NEAREST)
    else:
        mask_o = cv2.warpAffine(mask_t, m_small[:2], (go.shape[1], go.shape[0]), flags=cv2.INTER_NEAREST)
    warp0 = (m_small if homography else m_small[:2]).astype(np.float32)
    motion = cv2.MOTION_HOMOGRAPHY if homography else cv2.MOTION_AFFINE
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 60, 1e-5)
    try:
        _, w = cv2.findTransformECC(gt.astype(np.float32), go.astype(np.float32), warp0.copy(), motion, criteria,
                                    mask_o, 5)
    except cv2.error:
        return reg
    m_new = w.astype(np.float64) if homography else np.vstack([w.astype(np.float64), [0, 0, 1]])
    full = np.linalg.inv(to_small_o) @ m_new @ _scaling(ft)
    # a refinement corrects by pixels, not by a large fraction of the image
    h, wdt = tampered.shape[:2]
    corners = np.array([[0, 0, 1], [wdt, 0, 1], [0, h, 1], [wdt, h, 1]], float)
    moved = _project(corners, full) - _project(corners, reg.matrix)
    if not _plausible(full, (h, wdt), src.shape[:2]) or np.abs(moved).max() > 0.05 * max(src.shape[:2]) + 3:
        return reg
    out = Registration(full, reg.flip, reg.model if reg.model != "identity" else "affine", reg.matches, reg.inliers,
                       reg.residual_px, refined=True)
    out.correlation = correlation(original, tampered, out, unchanged)
    before = correlation(original, tampered, reg, unchanged)
    if not out.correlation > before:  # ECC maximises a correlation too: keep it only if it agrees
        reg.correlation = before
        return reg
    return out


def _project(points: np.ndarray, m: np.ndarray) -> np.ndarray:
    p = points @ m.T
    return p[:, :2] / p[:, 2:]


def correlation(original: np.ndarray, tampered: np.ndarray, reg: Registration,
                unchanged: np.ndarray | None = None) -> float:
    """Normalised cross-correlation of the lightly blurred gray images over the covered
    ``unchanged`` pixels, after warping."""
    warped, cover = warp(original, reg, tampered.shape[:2])
    mask = cover if unchanged is None else cover & unchanged
    a = cv2.GaussianBlur(gray(warped), (0, 0), 1.0)
    b = cv2.GaussianBlur(gray(tampered), (0, 0), 1.0)
    return _ncc(a, b, mask)


def register(original: np.ndarray, tampered: np.ndarray) -> Registration:
    """Find where each tampered pixel lies in the original (RGB uint8 arrays); see the module docstring.

    Raises RegistrationError when the images do not show the same scene.
    """
    shape_t, shape_o = tampered.shape[:2], original.shape[:2]
    if shape_t == shape_o and _aligned(original, tampered):
        reg = Registration(np.eye(3), False, "identity")
        reg.correlation = correlation(original, tampered, reg)
        return reg
    partial = 0  # most matches that agreed on a transform the images' structure did not confirm
    weak: list[Registration] = []  # fits of a few matches that the images' structure confirms
    # the usual keypoints first; when they do not settle it, low-contrast ones too (generators:
    # the second pass is computed only when no fit of the first was sure)
    for reg in itertools.chain(_candidates(tampered, original), _candidates(tampered, original, sensitive=True)):
        # many agreeing matches are proof enough; a few must be confirmed by the images' structure
        if reg.inliers >= SURE_INLIERS:
            reg.correlation = correlation(original, tampered, reg)
            return reg
        if len(weak) < MAX_WEAK and structure_agrees(original, tampered, reg):
            weak.append(reg)
        else:
            partial = max(partial, reg.inliers)
    # a few matches can agree on a wrong transform (a repainted copy keeps few features, some of
    # them in the edit): every explanation the pair offers competes, the one under which the
    # largest share of the frame is a verbatim copy of the original wins
    # (each as found and as refined: on a mostly repainted copy the dense refinement can drift
    # towards the repainted part, which the share of copied pixels then tells)
    found = [r for reg in weak for r in (reg, refine(original, tampered, reg))]
    ratio = (shape_o[1] / shape_o[0]) / (shape_t[1] / shape_t[0])
    if abs(ratio - 1) < 0.02:  # same framing: a plain resize?
        reg = refine(original, tampered, Registration(_resize_model(shape_t, shape_o), False, "resize"))
        if structure_agrees(original, tampered, reg):
            found.append(reg)
    reg = _dense_search(original, tampered)
    if reg is not None:
        found.append(reg)
    if found:
        best = _most_copied(original, tampered, found)
        best.correlation = correlation(original, tampered, best)
        return best
    if partial >= 2 * MIN_INLIERS:
        raise RegistrationError(f"registration failed: {partial} features agree on a part of the images only; "
                                "the original looks like the source of an object pasted into another picture, "
                                "not the picture that was edited")
    raise RegistrationError("registration failed: the two images share no consistent features "
                            "(they do not look like copies of one picture)")


DENSE_SIDE = 160  # the dense search runs on copies this large
DENSE_TRIES = 3  # places refined and compared by their share of copied pixels, by each ranking
DENSE_PEAKS = 3  # places tried at each scale
RANK_SIDE = 400  # the places are ranked on copies at most this large
DENSE_AGREEMENT = 0.3  # band-pass correlation a dense-search result needs (features did not vouch for it)


def _dense_search(original: np.ndarray, tampered: np.ndarray) -> Registration | None:
    """When features fail (small, blurred, mostly repainted copies): where the band-passed
    tampered copy correlates with the original (template matching over a grid of scales, on
    small copies, the strongest few places at each scale). A largely repainted copy correlates
    little overall, at its true place too: the places are ranked both by that correlation and by
    the share of the frame that is a verbatim copy under them (:func:`agreement`, on copies at
    most RANK_SIDE large); the best few of each are refined by ECC, and the one, as found or as
    refined, under which most of the frame is a copy is kept if the structures agree well."""
    base = max(original.shape[1] / tampered.shape[1], original.shape[0] / tampered.shape[0])
    scales = base * np.exp(np.linspace(np.log(0.6), np.log(1.05), 24))
    gt, ft = _resized(gray(tampered), DENSE_SIDE)
    go_full = gray(original)

    def band(g: np.ndarray) -> np.ndarray:
        g = g.astype(np.float32)
        return cv2.GaussianBlur(g, (0, 0), 0.8) - cv2.GaussianBlur(g, (0, 0), 3.0)

    # the copies the places are ranked on, and their pixel maps from the full-size ones
    small_t, rt = _resized(tampered, RANK_SIDE)
    small_o, ro = _resized(original, max(1, round(RANK_SIDE * max(original.shape[:2]) / max(tampered.shape[:2]))))
    to_small = lambda m: _scaling(ro) @ m @ np.linalg.inv(_scaling(rt))  # noqa: E731

    bt = band(gt)
    found = []  # (correlation, copied share, tampered -> original)
    for s in scales:  # original pixels per tampered pixel
        f = ft / s  # original -> the search grid
        w, h = round(original.shape[1] * f), round(original.shape[0] * f)
        if w < bt.shape[1] or h < bt.shape[0] or w > 4 * bt.shape[1]:
            continue
        bo = band(cv2.resize(go_full, (w, h), interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR))
        res = cv2.matchTemplate(bo, bt, cv2.TM_CCOEFF_NORMED)
        fx, fy = w / original.shape[1], h / original.shape[0]
        for _ in range(DENSE_PEAKS):
            _, score, _, (x, y) = cv2.minMaxLoc(res)
            if score <= -1.0:
                break
            cv2.circle(res, (x, y), 3, -1.0, -1)  # the next peak is another place
            # tampered -> small tampered -> small original (offset x, y) -> original
            m = np.linalg.inv(np.array([[fx, 0, 0.5 * fx - 0.5], [0, fy, 0.5 * fy - 0.5], [0, 0, 1.0]])) @ \
                np.array([[1, 0, x], [0, 1, y], [0, 0, 1.0]]) @ _scaling(ft)
            share = float(agreement(small_o, small_t, Registration(to_small(m), False, "similarity")).mean())
            found.append((score, share, m))
    by_correlation = sorted(range(len(found)), key=lambda i: -found[i][0])[:DENSE_TRIES]
    by_share = sorted(range(len(found)), key=lambda i: -found[i][1])[:DENSE_TRIES]
    places = [Registration(found[i][2], False, "similarity") for i in dict.fromkeys(by_correlation + by_share)]
    best = _most_copied(original, tampered, [r for p in places for r in (p, refine(original, tampered, p))])
    if best is None or not structure_agrees(original, tampered, best, DENSE_AGREEMENT):
        return None
    return best  # (its correlation is measured by the caller, once the explanations have competed)


def _most_copied(original: np.ndarray, tampered: np.ndarray, regs: list[Registration]) -> Registration | None:
    """Of ``regs``, the one under which the largest share of the frame is a verbatim copy of the
    original (:func:`agreement`; the first of equals), None when there are none."""
    return max(regs, key=lambda r: float(agreement(original, tampered, r).mean()), default=None)


def _aligned(original: np.ndarray, tampered: np.ndarray) -> bool:
    """Whether two images of one size are pixel-aligned copies: most pixels of an edit's copy are
    nearly untouched, and even when almost all of it was regenerated, what is left is untouched
    exactly (pairs of unrelated pictures agree that well only where both are flat white or black)."""
    diff = np.abs(original.astype(np.int16) - tampered.astype(np.int16)).max(axis=2)
    if (diff <= 12).mean() >= 0.3:  # (a smooth picture shifted by a few pixels passes this too)
        return structure_agrees(original, tampered, Registration(np.eye(3), False, "identity"), 0.5)
    lo, hi = np.minimum(original, tampered).min(axis=2), np.maximum(original, tampered).max(axis=2)
    flat = (lo >= 250) | (hi <= 5)
    if ((diff <= 2) & ~flat).mean() >= 0.02:
        return True
    # recompressed: what is left of the picture is still a copy of its texture in place; with no
    # transform searched for, unrelated pictures of one size reach a tenth of this share at most
    return bool(agreement(original, tampered, Registration(np.eye(3), False, "identity")).mean() >= ALIGNED_COPY_SHARE)


def _band(g: np.ndarray) -> np.ndarray:
    g = g.astype(np.float32)
    return cv2.GaussianBlur(g, (0, 0), 1.0) - cv2.GaussianBlur(g, (0, 0), 4.0)


def structure_agrees(original: np.ndarray, tampered: np.ndarray, reg: Registration, least: float = 0.15) -> bool:
    """Whether the band-passed (difference of Gaussians) gray images correlate over the covered
    pixels once warped: copies of one picture do, even when much of it was edited; a fit to
    chance matches between unrelated pictures does not. A copy whose picture was mostly
    repainted may correlate little overall: it passes when a part of it, within a frame that the
    original covers, is a verbatim copy (see :func:`agreement`)."""
    warped, cover = warp(original, reg, tampered.shape[:2])
    if _ncc(_band(gray(warped)), _band(gray(tampered)), cover) >= least:
        return True
    return bool(cover.mean() >= MIN_COVER and agreement(original, tampered, reg).mean() >= COPY_SHARE)


ALIGNED_COPY_SHARE = 0.01  # ... in place, for two images of one size (no transform searched for)
COPY_LEAST = 0.8  # local band-pass correlation of a verbatim copy (recompressed, resampled)
COPY_SHARE = 0.05  # share of the frame that must be such a copy (unrelated pictures: under 0.01)
MIN_COVER = 0.95  # ... when the original covers this much of the frame (a donor pair covers less)


def agreement(original: np.ndarray, tampered: np.ndarray, reg: Registration, least: float = COPY_LEAST,
              sigma: float = 6.0) -> np.ndarray:
    """The tampered pixels where the original, warped by ``reg``, is a copy (see :func:`copied`)."""
    warped, cover = warp(original, reg, tampered.shape[:2])
    return copied(gray(warped), gray(tampered), cover, least, sigma)


def copied(a: np.ndarray, b: np.ndarray, cover: np.ndarray, least: float = COPY_LEAST,
           sigma: float = 6.0) -> np.ndarray:
    """The pixels where one gray image is a copy of the other on the same grid: textured pixels
    (away from the cover's border) whose band-passed neighbourhoods (Gaussian window ``sigma``)
    correlate at ``least``. Robust where a global correlation is not: a region that was repainted
    lowers nothing outside it, and chance alignments of unrelated pictures reach it almost
    nowhere. Blind to a global grading (a local correlation ignores gain and offset), so it also
    tells which pixels a tone curve may be fitted on."""
    a, b = _band(a), _band(b)
    blur = lambda z: cv2.GaussianBlur(z, (0, 0), sigma)  # noqa: E731
    ma, mb = blur(a), blur(b)
    va, vb = blur(a * a) - ma * ma, blur(b * b) - mb * mb
    r = (blur(a * b) - ma * mb) / np.sqrt(np.maximum(va * vb, 1e-6))
    inside = cv2.erode(cover.astype(np.uint8), np.ones((7, 7), np.uint8)) > 0
    textured = (va > 4.0) & (vb > 4.0)  # above the band-passed noise of flat, recompressed areas
    return (r >= least) & textured & inside
