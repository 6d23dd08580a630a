"""Copy-move detection by SIFT keypoint matching, after Amerini et al. (TIFS 2011).

A copy-move forgery duplicates a part of an image inside the same image, possibly rotated or
scaled. This module finds such duplicates in four steps:

1. **Keypoints.** SIFT keypoints and descriptors (OpenCV) on the luma, with half of OpenCV's
   default contrast threshold so that small and low-contrast pictures still get keypoints
   (OpenCV's SIFT already doubles the image for its first octave). Images above 3 MP are
   analysed downscaled and at most 10000 keypoints are kept, which bounds the matching cost.
2. **Generalized 2NN matching (g2NN).** For each keypoint the distances d_1 <= d_2 <= ... to the
   other descriptors are sorted, after removing the keypoint itself and every keypoint closer in
   the image than 10 pixels (SIFT's several orientations and scales at one spot). Successive
   neighbours are accepted while d_i / d_{i+1} < 0.5, so one keypoint may match several copies.
   Matches repeating the same pair of places count once.
3. **Clustering and geometric verification.** The matched points are grouped by agglomerative
   (Ward) clustering of their positions. For each pair of clusters linked by matches, for each
   single cluster (a copy near its source) and for all matches together, a RANSAC fit looks for
   a similarity transform (two-match hypotheses), replaced by a full affine one when that
   explains clearly more matches. Hypotheses must be plausible for a copy: orientation kept,
   scale within 1/4..4, a displacement of at least 12 pixels (not a small shift inside a
   texture). The best-supported transforms then claim every match they explain, each match
   once, and need at least 4 distinct inliers.
4. **Dense localisation** (after the localisation step of Amerini et al.'s released code and of
   Pan & Lyu 2010). The image is warped by each transform and by its inverse; where the image
   agrees with its warp (zero-mean normalised cross-correlation over 7x7 windows, with a floor on
   the variance so that flat areas do not agree by chance, at or above 0.6) in connected areas
   that touch the inlier keypoints, both the copy and its original are marked, after opening,
   closing, hole filling and growth by half a window (the rim the correlation window loses).

Natural repetitions (tiles, windows, printed fabric, wallpaper) also produce verified
transforms. They are told apart by three checks on the dense regions: the pattern agrees again
one step further (the transform applied twice), the region overlaps its own shifted copy, or it
agrees over most of the textured area where a comparison is possible. Such transforms are
discounted in the strength below.

The map is 0 outside the duplicated regions. Inside, it is the strength of the transform that
explains the region, a probability-like value from its inlier count, the correlation between the
image and its warp at the inliers and the natural-repetition checks (see :func:`copy_strength`;
0.5 means clearly duplicated content), shaded by the local correlation (down to 0.9 times the
strength). Both the source and the target are marked: keypoint matching cannot tell which is
the original. The one exception is a copy that was rotated without rescaling: it was
interpolated once, so its original predicts it better than it predicts its original, and the
side judged to be the original is shaded down by up to 20 %. The image score is the strength of
the best transform, 0 when none is verified.

Reference: I. Amerini, L. Ballan, R. Caldelli, A. Del Bimbo and G. Serra, "A SIFT-based forensic
method for copy-move attack detection and transformation recovery", IEEE Transactions on
Information Forensics and Security 6(3):1099-1110, 2011. Dense localisation by correlation with
the warped image: X. Pan and S. Lyu, "Region duplication detection using image feature
matching", IEEE Transactions on Information Forensics and Security 5(4):857-867, 2010.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from ..io.image import ImageData
from .base import Detector
from .registry import register_detector


@dataclass
class Keypoints:
    """SIFT keypoints: positions (x, y) in the image's own pixels, L2-normalised descriptors."""

    xy: np.ndarray  # (N, 2) float32
    desc: np.ndarray  # (N, 128) float32

    def __len__(self) -> int:
        return int(self.xy.shape[0])


@dataclass
class Duplicate:
    """A verified copy: ``matrix`` (2x3 affine) maps source points onto target points."""

    matrix: np.ndarray
    src: np.ndarray  # (n, 2) inlier source points
    dst: np.ndarray  # (n, 2) inlier target points
    match_ids: np.ndarray  # indices of the inlier matches
    strength: float = 0.0
    agreement: float = 0.0

    @property
    def inliers(self) -> int:
        return int(self.src.shape[0])


def sift_keypoints(gray: np.ndarray, scale: float = 1.0, contrast_threshold: float = 0.02,
                   max_keypoints: int = 0) -> Keypoints:
    """SIFT keypoints of a uint8 gray image analysed at ``scale``; positions in the image's pixels."""
    work = gray
    if scale != 1.0:
        h, w = gray.shape
        size = (max(1, int(round(w * scale))), max(1, int(round(h * scale))))
        work = cv2.resize(gray, size, interpolation=cv2.INTER_CUBIC if scale > 1 else cv2.INTER_AREA)
        sx, sy = size[0] / w, size[1] / h
    else:
        sx = sy = 1.0
    sift = cv2.SIFT_create(nfeatures=max(0, int(max_keypoints)), contrastThreshold=contrast_threshold)
    kps, desc = sift.detectAndCompute(work, None)
    if desc is None or len(kps) == 0:
        return Keypoints(np.zeros((0, 2), np.float32), np.zeros((0, 128), np.float32))
    xy = np.array([k.pt for k in kps], dtype=np.float32)
    xy[:, 0] = (xy[:, 0] + 0.5) / sx - 0.5
    xy[:, 1] = (xy[:, 1] + 0.5) / sy - 0.5
    desc = desc.astype(np.float32)
    desc /= np.maximum(np.linalg.norm(desc, axis=1, keepdims=True), 1e-6)
    return Keypoints(xy, desc)


def g2nn_matches(kp: Keypoints, ratio: float = 0.5, min_distance: float = 10.0, neighbours: int = 10,
                 spare: int = 12, chunk: int = 512) -> np.ndarray:
    """Generalized 2NN matching of a keypoint set against itself.

    For each keypoint the nearest descriptors are sorted, ignoring itself and every keypoint
    closer than ``min_distance`` pixels (among the ``neighbours + spare`` nearest descriptors);
    neighbour ``i`` is a match while d_1/d_2, ..., d_i/d_{i+1} are all below ``ratio``.
    Returns unique pairs (i, j), i < j, as an (M, 2) int array.
    """
    n = len(kp)
    if n < 3:
        return np.zeros((0, 2), np.int64)
    k = min(neighbours + spare, n - 1)
    desc, xy = kp.desc, kp.xy
    pairs = []
    for s in range(0, n, chunk):
        e = min(n, s + chunk)
        sim = desc[s:e] @ desc.T  # cosine similarity: d^2 = 2 - 2 sim
        idx = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        d2 = np.maximum(2.0 - 2.0 * np.take_along_axis(sim, idx, axis=1), 0.0)
        near = np.sum((xy[idx] - xy[s:e, None, :]) ** 2, axis=2) < min_distance * min_distance
        d2[near] = np.inf  # the keypoint itself and its scale-space neighbours
        order = np.argsort(d2, axis=1)[:, : min(neighbours + 1, k)]
        idx = np.take_along_axis(idx, order, axis=1)
        d = np.sqrt(np.take_along_axis(d2, order, axis=1))
        ok = np.isfinite(d[:, :-1]) & (d[:, :-1] < ratio * d[:, 1:])
        accept = np.cumprod(ok, axis=1).astype(bool)
        rows, cols = np.nonzero(accept)
        if rows.size:
            pairs.append(np.stack([rows + s, idx[rows, cols]], axis=1))
    if not pairs:
        return np.zeros((0, 2), np.int64)
    pairs = np.sort(np.concatenate(pairs), axis=1)
    return np.unique(pairs, axis=0).astype(np.int64)


def distinct_matches(xy: np.ndarray, pairs: np.ndarray, cell: float = 2.0) -> np.ndarray:
    """Drop matches that repeat another one's pair of places (SIFT puts several keypoints, with
    different orientations or scales, at one spot; they are one piece of evidence, not several)."""
    if pairs.shape[0] == 0:
        return pairs
    cells = np.floor(xy / cell).astype(np.int64)
    key = np.concatenate([cells[pairs[:, 0]], cells[pairs[:, 1]]], axis=1)
    a, b = key[:, :2], key[:, 2:]
    swap = (a[:, 0] > b[:, 0]) | ((a[:, 0] == b[:, 0]) & (a[:, 1] > b[:, 1]))
    key = np.where(swap[:, None], np.concatenate([b, a], axis=1), key)
    _, first = np.unique(key, axis=0, return_index=True)
    return pairs[np.sort(first)]


def cluster_positions(xy: np.ndarray, cutoff: float) -> np.ndarray:
    """Agglomerative (Ward) clustering of points; clusters are cut at merge height ``cutoff``."""
    from scipy.cluster.hierarchy import fcluster, linkage

    if xy.shape[0] < 2:
        return np.zeros(xy.shape[0], np.int64)
    z = linkage(xy.astype(np.float64), method="ward")
    return fcluster(z, t=cutoff, criterion="distance").astype(np.int64) - 1


def apply_affine(m: np.ndarray, xy: np.ndarray) -> np.ndarray:
    return xy @ m[:, :2].T + m[:, 2]


def invert_affine(m: np.ndarray) -> np.ndarray:
    return cv2.invertAffineTransform(np.asarray(m, np.float64))


def compose_affine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The affine map x -> a(b(x))."""
    return np.concatenate([a[:, :2] @ b[:, :2], (a[:, :2] @ b[:, 2] + a[:, 2])[:, None]], axis=1)


def fit_similarity_lsq(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) src -> dst as a 2x3 matrix."""
    n = src.shape[0]
    a = np.zeros((2 * n, 4))
    a[0::2] = np.stack([src[:, 0], -src[:, 1], np.ones(n), np.zeros(n)], axis=1)
    a[1::2] = np.stack([src[:, 1], src[:, 0], np.zeros(n), np.ones(n)], axis=1)
    p = np.linalg.lstsq(a, dst.reshape(-1).astype(np.float64), rcond=None)[0]
    return np.array([[p[0], -p[1], p[2]], [p[1], p[0], p[3]]])


def fit_affine_lsq(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares affine map src -> dst as a 2x3 matrix."""
    a = np.concatenate([src, np.ones((src.shape[0], 1))], axis=1).astype(np.float64)
    return np.linalg.lstsq(a, dst.astype(np.float64), rcond=None)[0].T


def plausible_transform(m: np.ndarray, max_scale: float = 4.0, max_anisotropy: float = 2.0) -> bool:
    """A transform a copy-move can have: orientation kept (SIFT does not match mirror images),
    scale within [1/max_scale, max_scale], not much more stretched along one axis than the other."""
    a = m[:, :2]
    if not np.all(np.isfinite(m)) or np.linalg.det(a) <= 0:
        return False
    sv = np.linalg.svd(a, compute_uv=False)
    return bool(sv[0] <= max_scale and sv[1] >= 1.0 / max_scale and sv[0] <= max_anisotropy * sv[1])


def ransac_copy(src: np.ndarray, dst: np.ndarray, threshold: float, min_shift: float, max_scale: float = 4.0,
                hypotheses: int = 2000, seed: int = 0) -> tuple[np.ndarray | None, np.ndarray]:
    """Robust copy transform src -> dst: (2x3 matrix or None, boolean inliers).

    Similarity hypotheses from pairs of matches (all pairs when few, else a seeded random sample)
    that are plausible for a copy (scale in range, moved by at least ``min_shift``); the best one
    is refined by least squares, then replaced by a full affine fit when that explains at least
    two more matches and stays plausible.
    """
    n = src.shape[0]
    none = (None, np.zeros(n, bool))
    if n < 2:
        return none
    zp = src[:, 0].astype(np.float64) + 1j * src[:, 1]
    zq = dst[:, 0].astype(np.float64) + 1j * dst[:, 1]
    if n * (n - 1) // 2 <= hypotheses:
        i, j = np.triu_indices(n, 1)
    else:
        rng = np.random.default_rng(seed)
        i = rng.integers(0, n, hypotheses)
        j = (i + rng.integers(1, n, hypotheses)) % n
    dp = zp[j] - zp[i]
    ok = np.abs(dp) > 2.0 * threshold
    i, j, dp = i[ok], j[ok], dp[ok]
    if i.size == 0:
        return none
    rot = (zq[j] - zq[i]) / dp
    trans = zq[i] - rot * zp[i]
    scale = np.abs(rot)
    mid = 0.5 * (zp[i] + zp[j])
    ok = (scale <= max_scale) & (scale >= 1.0 / max_scale) & (np.abs(rot * mid + trans - mid) >= min_shift)
    rot, trans = rot[ok], trans[ok]
    if rot.size == 0:
        return none
    best_count, best = -1, 0
    for s in range(0, rot.size, 256):
        err = np.abs(rot[s:s + 256, None] * zp[None] + trans[s:s + 256, None] - zq[None])
        counts = (err < threshold).sum(axis=1)
        k = int(np.argmax(counts))
        if counts[k] > best_count:
            best_count, best = int(counts[k]), s + k
    r, t = rot[best], trans[best]
    m = np.array([[r.real, -r.imag, t.real], [r.imag, r.real, t.imag]])
    inl = np.linalg.norm(apply_affine(m, src) - dst, axis=1) < threshold
    for _ in range(3):  # least-squares refinement
        if inl.sum() < 2:
            break
        m2 = fit_similarity_lsq(src[inl], dst[inl])
        inl2 = np.linalg.norm(apply_affine(m2, src) - dst, axis=1) < threshold
        if inl2.sum() < inl.sum():
            break
        m, inl = m2, inl2
    if inl.sum() >= 6:
        near = np.linalg.norm(apply_affine(m, src) - dst, axis=1) < 3.0 * threshold
        a = fit_affine_lsq(src[near], dst[near])
        for _ in range(3):
            ina = np.linalg.norm(apply_affine(a, src) - dst, axis=1) < threshold
            if ina.sum() < 3:
                break
            a = fit_affine_lsq(src[ina], dst[ina])
        ina = np.linalg.norm(apply_affine(a, src) - dst, axis=1) < threshold
        if ina.sum() >= inl.sum() + 2 and plausible_transform(a, max_scale):
            m, inl = a, ina
    if not plausible_transform(m, max_scale):
        return none
    return m, inl


def find_duplicates(xy: np.ndarray, pairs: np.ndarray, cluster_cutoff: float, ransac_threshold: float,
                    min_inliers: int, min_shift: float, max_scale: float = 4.0) -> list[Duplicate]:
    """Cluster the matched points, verify a transform per cluster pair, return the distinct copies.

    Every match is used in both directions (p -> q and q -> p), so that a transform and its
    inverse are equally findable. Candidate transforms come from pairs of clusters, from single
    clusters (a copy close to its source) and from all matches together; each candidate then
    gathers all matches it explains, most supported first, a match being claimed only once.
    """
    m = pairs.shape[0]
    if m < min_inliers:
        return []
    p, q = xy[pairs[:, 0]].astype(np.float64), xy[pairs[:, 1]].astype(np.float64)
    used, inverse = np.unique(pairs, return_inverse=True)
    labels = cluster_positions(xy[used], cluster_cutoff)[inverse.reshape(pairs.shape)]
    la, lb = labels[:, 0], labels[:, 1]
    lo, hi = np.minimum(la, lb), np.maximum(la, lb)
    _, inv, counts = np.unique(lo * (labels.max() + 1) + hi, return_inverse=True, return_counts=True)
    groups = [np.arange(m)] + [np.nonzero(inv == g)[0] for g in np.nonzero(counts >= min_inliers)[0]
                               if counts[g] < m]

    src_all, dst_all = np.concatenate([p, q]), np.concatenate([q, p])
    ids_all = np.concatenate([np.arange(m), np.arange(m)])
    candidates: list[tuple[int, np.ndarray]] = []
    for ids in groups:
        if ids.size == m or la[ids[0]] == lb[ids[0]]:  # all matches, or one cluster: both directions
            src, dst = np.concatenate([p[ids], q[ids]]), np.concatenate([q[ids], p[ids]])
        else:  # from the lower-labelled cluster to the other
            forward = (la[ids] == lo[ids])[:, None]
            src, dst = np.where(forward, p[ids], q[ids]), np.where(forward, q[ids], p[ids])
        mat, inl = ransac_copy(src, dst, ransac_threshold, min_shift, max_scale)
        if mat is not None and inl.sum() >= min_inliers:
            candidates.append((int(inl.sum()), mat))
    candidates.sort(key=lambda c: -c[0])

    claimed = np.zeros(m, bool)
    found: list[Duplicate] = []
    for _, mat in candidates:
        free = ~claimed[ids_all]
        if free.sum() < min_inliers:
            break
        ok = free & (np.linalg.norm(apply_affine(mat, src_all) - dst_all, axis=1) < ransac_threshold)
        if ok.sum() < min_inliers:  # its matches went to a better-supported copy
            continue
        # least-squares fit on every free match it explains
        fit = fit_affine_lsq if _is_affine(mat) else fit_similarity_lsq
        refit = fit(src_all[ok], dst_all[ok])
        if plausible_transform(refit, max_scale):
            ok2 = free & (np.linalg.norm(apply_affine(refit, src_all) - dst_all, axis=1) < ransac_threshold)
            if ok2.sum() >= ok.sum():
                mat, ok = refit, ok2
        _, first = np.unique(ids_all[ok], return_index=True)  # one direction per match
        sel = np.nonzero(ok)[0][first]
        if sel.size < min_inliers:
            continue
        src, dst = src_all[sel], dst_all[sel]
        if float(np.median(np.linalg.norm(dst - src, axis=1))) < min_shift:
            continue
        claimed[ids_all[sel]] = True
        found.append(Duplicate(matrix=mat, src=src, dst=dst, match_ids=ids_all[sel]))
    return found


def _is_affine(m: np.ndarray) -> bool:
    a = m[:, :2]
    return not (abs(a[0, 0] - a[1, 1]) < 1e-9 and abs(a[0, 1] + a[1, 0]) < 1e-9)


def zncc_map(a: np.ndarray, b: np.ndarray, window: int, var_floor: float) -> np.ndarray:
    """Zero-mean normalised cross-correlation of two images over ``window`` x ``window`` boxes.

    ``var_floor`` is added to both local variances, so that flat areas (variance below the floor)
    correlate weakly whatever their content.
    """
    def box(x: np.ndarray) -> np.ndarray:
        return cv2.boxFilter(x, -1, (window, window), borderType=cv2.BORDER_REFLECT)

    ma, mb = box(a), box(b)
    va = np.maximum(box(a * a) - ma * ma, 0.0)
    vb = np.maximum(box(b * b) - mb * mb, 0.0)
    cab = box(a * b) - ma * mb
    return cab / np.sqrt((va + var_floor) * (vb + var_floor))


def warp_agreement(gray: np.ndarray, matrix: np.ndarray, window: int, var_floor: float,
                   min_shift: float) -> tuple[np.ndarray, np.ndarray]:
    """Correlation between the image and the image carried by ``matrix`` (source -> target).

    High at target pixels whose source looks the same. Pixels whose source lies outside the image,
    or less than ``min_shift`` away, get -1. Also returns where the source lies inside the image.
    """
    h, w = gray.shape
    warped = cv2.warpAffine(gray, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    corr = zncc_map(gray, warped, window, var_floor)
    corr = cv2.GaussianBlur(corr, (0, 0), window / 4.0)
    inv = invert_affine(matrix)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    sx = inv[0, 0] * xs + inv[0, 1] * ys + inv[0, 2]
    sy = inv[1, 0] * xs + inv[1, 1] * ys + inv[1, 2]
    outside = (sx < 0) | (sy < 0) | (sx > w - 1) | (sy > h - 1)
    corr[outside | ((sx - xs) ** 2 + (sy - ys) ** 2 < min_shift * min_shift)] = -1.0
    return corr, ~outside


def anchored_region(agree: np.ndarray, anchors: np.ndarray, radius: int = 2) -> np.ndarray:
    """Connected parts of the boolean ``agree`` that touch an anchor point (within ``radius``)."""
    h, w = agree.shape
    cand = cv2.morphologyEx(agree.astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    n, lab = cv2.connectedComponents(cand, connectivity=8)
    if n <= 1 or anchors.shape[0] == 0:
        return np.zeros((h, w), bool)
    keep = np.zeros(n, bool)
    for dy in (-radius, 0, radius):
        for dx in (-radius, 0, radius):
            ax = np.clip(np.rint(anchors[:, 0] + dx), 0, w - 1).astype(np.int64)
            ay = np.clip(np.rint(anchors[:, 1] + dy), 0, h - 1).astype(np.int64)
            keep[lab[ay, ax]] = True
    keep[0] = False
    return keep[lab]


def fill_region(region: np.ndarray, close: int = 5) -> np.ndarray:
    """Morphological closing and hole filling of a region mask."""
    if not region.any():
        return region
    closed = cv2.morphologyEx(region.astype(np.uint8), cv2.MORPH_CLOSE, np.ones((close, close), np.uint8))
    outside = np.pad(closed, 1)
    cv2.floodFill(outside, None, (0, 0), 1)  # everything reachable from the border
    return (closed > 0) | (outside[1:-1, 1:-1] == 0)


def grow_region(region: np.ndarray, grow: int) -> np.ndarray:
    """Dilate a region mask by ``grow`` pixels (a disc).

    This gives back the rim that the correlation window loses: a window centred less than half
    its size inside a copy's outline straddles foreign content and correlates less.
    """
    if grow <= 0 or not region.any():
        return region
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1, 2 * grow + 1))
    return cv2.dilate(region.astype(np.uint8), kernel) > 0


def local_variance(g: np.ndarray, window: int) -> np.ndarray:
    """Variance of ``g`` over ``window`` x ``window`` boxes."""
    mean = cv2.boxFilter(g, -1, (window, window), borderType=cv2.BORDER_REFLECT)
    return np.maximum(cv2.boxFilter(g * g, -1, (window, window), borderType=cv2.BORDER_REFLECT) - mean * mean, 0)


def coverage_share(region: np.ndarray, inside: np.ndarray, textured: np.ndarray) -> float:
    """Share of the comparable textured area (source inside the image) that the region covers.
    A pattern that repeats across the frame agrees nearly everywhere a comparison is possible;
    a copied object covers only its own part of that area."""
    ref = inside & textured
    return float((region & ref).sum()) / max(1, int(ref.sum()))


def sample_at(arr: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Values of ``arr`` at the (rounded, clipped) points ``xy``."""
    h, w = arr.shape
    x = np.clip(np.rint(xy[:, 0]), 0, w - 1).astype(np.int64)
    y = np.clip(np.rint(xy[:, 1]), 0, h - 1).astype(np.int64)
    return arr[y, x]


@register_detector
class CopyMoveDetector(Detector):
    """SIFT keypoint copy-move detection (g2NN matching, clustering, RANSAC, dense localisation).

    Options:
        ratio: g2NN threshold on successive descriptor distance ratios (0.5, as in the paper).
        contrast_threshold: SIFT contrast threshold (OpenCV's default is 0.04; half of it finds
            more keypoints on small and low-contrast images).
        max_pixels: larger images are analysed downscaled to this many pixels.
        max_keypoints: most keypoints kept (the strongest), which bounds the matching cost.
        min_inliers: distinct matches a transform must explain to be considered at all.
        min_shift: smallest displacement between a copy and its source, in analysed pixels.
        window: side of the correlation window of the dense localisation, in pixels.
        tau: correlation at or above which the image agrees with its warped self.
        var_floor: variance (gray levels squared) added in the correlation, so that flat areas
            do not agree by chance.
        dense_pixels: the dense localisation runs on at most this many pixels.
        max_copies: most duplicated region pairs localised (the best supported).
        grow: pixels added around each region after cleanup (default: half the window, the rim
            the correlation window loses at a copy's outline).
    """

    name = "copymove"
    version = "1"
    needs = "any image"
    cite = "Amerini, TIFS 2011"
    paper = "Amerini et al., A SIFT-based forensic method for copy-move attack detection, TIFS 2011"
    summary = "SIFT g2NN matching, clustering, RANSAC; marks duplicated regions (copy and original)"
    bytes_per_pixel = 80

    def __init__(self, ratio: float = 0.5, contrast_threshold: float = 0.02, max_pixels: int = 3_000_000,
                 max_keypoints: int = 10000, min_inliers: int = 4, min_shift: float = 12.0, window: int = 7,
                 tau: float = 0.6, var_floor: float = 9.0, dense_pixels: int = 1_000_000, max_copies: int = 8,
                 grow: int | None = None):
        self.ratio = float(ratio)
        self.contrast_threshold = float(contrast_threshold)
        self.max_pixels = int(max_pixels)
        self.max_keypoints = int(max_keypoints)
        self.min_inliers = max(2, int(min_inliers))
        self.min_shift = float(min_shift)
        self.window = max(3, int(window) | 1)
        self.tau = float(tau)
        self.var_floor = float(var_floor)
        self.dense_pixels = int(dense_pixels)
        self.max_copies = max(1, int(max_copies))
        self.grow = self.window // 2 if grow is None else max(0, int(grow))

    def analyse(self, img: ImageData) -> tuple[np.ndarray, float, dict[str, Any]]:
        h, w = img.height, img.width
        # applicable only once a duplicated region is found: no copy found is no evidence of a splice
        extras: dict[str, Any] = {"copies": 0, "keypoints": 0, "matches": 0, "applicable": False}
        empty = np.zeros((h, w), np.float32)
        if min(h, w) < 16:
            extras["notes"] = ["image too small to search for copied regions"]
            return empty, 0.0, extras
        scale = min(1.0, float(np.sqrt(self.max_pixels / (h * w))))
        gray = np.clip(img.gray + 0.5, 0, 255).astype(np.uint8)
        if scale < 1.0:
            gray = _resize(gray, scale)
        kp = sift_keypoints(gray, 1.0, self.contrast_threshold, self.max_keypoints)
        pairs = distinct_matches(kp.xy, g2nn_matches(kp, self.ratio, min_distance=10.0))
        extras["keypoints"], extras["matches"] = len(kp), int(pairs.shape[0])
        notes = []
        if len(kp) < 20:
            notes.append("few keypoints (flat or tiny image): copy-move search is nearly blind here")
        wh, ww = gray.shape
        dups = find_duplicates(kp.xy, pairs, cluster_cutoff=0.1 * float(np.hypot(wh, ww)), ransac_threshold=3.0,
                               min_inliers=self.min_inliers, min_shift=self.min_shift)[: self.max_copies]
        if not dups:
            extras["notes"] = notes
            return empty, 0.0, extras

        # dense localisation on at most dense_pixels: transforms and points rescaled to that grid
        ds = min(1.0, float(np.sqrt(self.dense_pixels / (wh * ww))))
        if ds < 1.0:
            gray = _resize(gray, ds)
            for d in dups:
                d.matrix = np.concatenate([d.matrix[:, :2], d.matrix[:, 2:] * ds], axis=1)
                d.src, d.dst = d.src * ds, d.dst * ds
        g = gray.astype(np.float32) - 128.0
        textured = local_variance(g, self.window) >= self.var_floor
        heat = np.zeros(g.shape, np.float32)
        to_image = 1.0 / (scale * ds)
        info = []
        for d in dups:
            regions, details = self._localise(g, textured, d, self.min_shift * ds)
            for region, shade in regions:
                np.maximum(heat, np.where(region, shade, 0.0).astype(np.float32), out=heat)
            m = d.matrix.copy()
            m[:, 2] *= to_image
            a = np.round(d.src.mean(axis=0) * to_image, 1).tolist()
            b = np.round(d.dst.mean(axis=0) * to_image, 1).tolist()
            lean = details.pop("lean")
            info.append({"inliers": d.inliers, "strength": round(d.strength, 3), "agreement": round(d.agreement, 3),
                         **details, "matrix": np.round(m, 4).tolist(), "points_xy": [a, b],
                         # the side judged to be the (resampled) copy, None when it cannot be told
                         "copy_xy": None if lean == 0 else (b if lean > 0 else a)})
        if heat.shape != (h, w):
            heat = cv2.resize(heat, (w, h), interpolation=cv2.INTER_LINEAR)
        strong = sum(d.strength >= 0.5 for d in dups)
        if strong:
            notes.append(f"{strong} duplicated region pair(s) found: both the copy and its original are marked")
        if any(t["discounted"] for t in info):
            notes.append("repeated content that looks like a natural pattern (texture, facade) was discounted")
        extras.update(copies=strong, candidates=len(dups), transforms=info, notes=notes, applicable=True)
        return heat, float(max(d.strength for d in dups)), extras

    def _localise(self, g: np.ndarray, textured: np.ndarray, d: Duplicate, min_shift: float
                  ) -> tuple[list[tuple[np.ndarray, np.ndarray]], dict[str, Any]]:
        """Dense regions of one copy (target and source side, each with its heat), and diagnostics.

        Sets ``d.agreement`` and ``d.strength``.
        """
        inv = invert_affine(d.matrix)
        args = (self.window, self.var_floor, min_shift)
        corr_t, in_t = warp_agreement(g, d.matrix, *args)
        corr_s, in_s = warp_agreement(g, inv, *args)
        tgt = anchored_region(corr_t >= self.tau, d.dst)
        src = anchored_region(corr_s >= self.tau, d.src)
        d.agreement = float(np.median(np.concatenate([sample_at(corr_t, d.dst), sample_at(corr_s, d.src)])))
        # natural repetition: the pattern agrees again one step further, overlaps its shifted self,
        # or agrees nearly everywhere a comparison is possible
        rep_t = warp_agreement(g, compose_affine(d.matrix, d.matrix), *args)[0]
        rep_s = warp_agreement(g, compose_affine(inv, inv), *args)[0]
        n_t, n_s = int(tgt.sum()), int(src.sum())
        repeat = float(((rep_t >= self.tau) & tgt).sum() + ((rep_s >= self.tau) & src).sum()) / max(1, n_t + n_s)
        overlap = float((tgt & src).sum()) / max(1, min(n_t, n_s))
        full_t, full_s = fill_region(tgt), fill_region(src)
        coverage = min(coverage_share(full_t, in_t, textured), coverage_share(full_s, in_s, textured))
        d.strength = copy_strength(d.inliers, d.agreement, max(repeat, overlap), coverage)
        discounted = d.strength < 0.5 <= copy_strength(d.inliers, d.agreement, 0.0, 0.0)
        # which side is the copy: a rotated copy was interpolated once, so its original predicts
        # it better than it predicts its original. Unshifted copies carry no such trace, and for
        # rescaled ones the comparison is ambiguous (enlarging keeps all the information).
        lean = 0.0
        if rotated_only(d.matrix) and n_t and n_s:
            lean = float(corr_t[tgt].mean() - corr_s[src].mean())
        doubt = 1.0 - 0.2 * float(np.clip(abs(lean) / 0.02, 0.0, 1.0))
        f_t, f_s = (1.0, doubt) if lean >= 0 else (doubt, 1.0)
        tgt, src = grow_region(full_t, self.grow), grow_region(full_s, self.grow)
        regions = [(tgt, d.strength * f_t * (0.9 + 0.1 * np.clip(corr_t, 0.0, 1.0))),
                   (src, d.strength * f_s * (0.9 + 0.1 * np.clip(corr_s, 0.0, 1.0)))]
        details = {"repeat": round(repeat, 3), "overlap": round(overlap, 3), "coverage": round(coverage, 3),
                   "discounted": bool(discounted), "lean": lean,
                   "area": round(float(tgt.sum() + src.sum()) / g.size, 4)}
        return regions, details


def copy_strength(inliers: int, agreement: float, self_similarity: float, coverage: float) -> float:
    """Confidence in [0, 1] that a verified transform is a copy-move.

    Duplicated content: logistic(log2(inliers / 8) / 0.5 + (agreement - 0.7) / 0.1), so that 8
    matches need the image to agree with its warp at a correlation of 0.7, 4 matches need 0.9 and
    16 matches 0.5. Times the chance that it is not a natural repetition, which is judged by
    ``self_similarity`` (share of the region that repeats one step further or overlaps its own
    shifted self; 0.5 at 0.3) and ``coverage`` (share of the comparable textured area that agrees;
    0.5 at 0.6, i.e. a pattern agreeing over most of the frame).
    """
    z = np.log2(max(inliers, 1) / 8.0) / 0.5 + (agreement - 0.7) / 0.1
    duplicated = 1.0 / (1.0 + np.exp(-z))
    natural = max(1.0 / (1.0 + np.exp(-(self_similarity - 0.3) / 0.05)),
                  1.0 / (1.0 + np.exp(-(coverage - 0.6) / 0.05)))
    return float(duplicated * (1.0 - natural))


def rotated_only(m: np.ndarray, min_angle: float = 2.0, scale_tol: float = 0.05) -> bool:
    """Whether a copy transform is a rotation (by at least ``min_angle`` degrees) without rescaling."""
    a = np.asarray(m)[:, :2]
    sv = np.linalg.svd(a, compute_uv=False)
    angle = abs(np.degrees(np.arctan2(a[1, 0] - a[0, 1], a[0, 0] + a[1, 1])))
    return bool(angle >= min_angle and np.max(np.abs(sv - 1.0)) <= scale_tol)


def _resize(gray: np.ndarray, factor: float) -> np.ndarray:
    h, w = gray.shape
    size = (max(1, int(round(w * factor))), max(1, int(round(h * factor))))
    return cv2.resize(gray, size, interpolation=cv2.INTER_AREA if factor < 1 else cv2.INTER_CUBIC)
