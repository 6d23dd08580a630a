"""`imlf make-mask`: each stage on its own, the pipeline on degraded pairs, the command as a user runs it."""

from __future__ import annotations

import csv
import importlib
import io
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from imlforensics.makemask import RegistrationError, make_mask
from imlforensics.makemask.change import ActivityClasses, colour_difference, lab, tail_model, tolerant_difference
from imlforensics.makemask.cleanup import (
    HIGH,
    carve_bays,
    fill_holes,
    hysteresis,
    refine_outline,
    remove_small,
    segment,
    significant,
)
from imlforensics.makemask.photometric import fit_tone
from imlforensics.makemask.register import Registration, register, warp

ROOT = Path(__file__).resolve().parents[1]
EX = ROOT / "examples"


def rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def gt(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("L")) > 127


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


@pytest.fixture(scope="module")
def splice():
    """The project's own splice and the picture it was made from, with the true mask."""
    return rgb(EX / "Au" / "coffee.jpg"), rgb(EX / "Tp" / "splice.jpg"), gt(EX / "Gt" / "splice_gt.png")


register_module = importlib.import_module("imlforensics.makemask.register")  # (the package exports the function)


def similarity(scale: float, angle_deg: float, tx: float, ty: float) -> np.ndarray:
    a = np.radians(angle_deg)
    return np.array([[scale * np.cos(a), -scale * np.sin(a), tx], [scale * np.sin(a), scale * np.cos(a), ty], [0, 0, 1.0]])


# ---------------------------------------------------------------- registration


@pytest.mark.parametrize("flip", [False, True])
def test_registration_recovers_scale_rotation_offset_and_mirroring(splice, flip):
    original = splice[0]
    truth = similarity(1.35, 3.0, 20.0, -12.0)  # tampered pixel -> original pixel
    h, w = 240, 380
    tampered = cv2.warpAffine(original, truth[:2], (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
    source = original[:, ::-1].copy() if flip else original
    reg = register(source, tampered)
    assert reg.flip == flip
    corners = np.array([[0, 0, 1], [w, 0, 1], [0, h, 1], [w, h, 1]], float)
    expected = corners @ truth.T  # (mirroring the mirrored original gives the original back)
    found = corners @ reg.matrix.T
    assert np.abs(found[:, :2] / found[:, 2:] - expected[:, :2]).max() < 1.5
    assert reg.scale == pytest.approx(1.35, rel=0.01) and reg.inliers >= 25


def test_registration_is_reproducible_whatever_ran_before(splice):
    original = splice[0]
    truth = similarity(1.6, -2.0, 15.0, 9.0)
    tampered = cv2.warpAffine(original, truth[:2], (220, 150), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
    first = register(original, jpeg(tampered, 70)).matrix
    register(rgb(EX / "Au" / "astronaut.jpg"), rgb(EX / "Tp" / "copymove.jpg"))  # other work in between
    assert np.array_equal(register(original, jpeg(tampered, 70)).matrix, first)


def test_unrelated_pictures_are_refused():
    with pytest.raises(RegistrationError, match="registration failed"):
        register(rgb(EX / "Au" / "rocket.jpg"), rgb(EX / "Au" / "astronaut.jpg"))
    with pytest.raises(RegistrationError):
        make_mask(EX / "Au" / "coffee.jpg", EX / "Au" / "astronaut.jpg")


def test_a_pasted_region_does_not_pull_the_fit(splice):
    original, tampered, mask = splice
    reg = register(original, tampered)  # pixel-aligned, 15% of the image replaced
    assert reg.model == "identity"
    shifted = np.ascontiguousarray(cv2.warpAffine(tampered, np.float32([[1, 0, -7], [0, 1, 4]]), tampered.shape[1::-1]))
    reg = register(original, shifted)
    assert np.allclose(reg.matrix[:2, 2], [7, -4], atol=0.5) and np.allclose(reg.matrix[:2, :2], np.eye(2), atol=0.01)


def test_a_few_matches_on_a_wrong_transform_lose_to_the_explanation_that_copies_most_of_the_frame(splice, monkeypatch):
    original = splice[0]
    truth = similarity(0.8, 0.0, 12.0, 7.0)
    tampered = jpeg(cv2.warpAffine(original, truth[:2], (256, 200), flags=cv2.INTER_AREA | cv2.WARP_INVERSE_MAP), 80)
    wrong = Registration(similarity(0.8, 0.0, 30.0, 7.0), False, "similarity", matches=20, inliers=10)
    # a repainted copy's few features agreed on the wrong fit, and its structure did not refute it
    monkeypatch.setattr(register_module, "_candidates", lambda t, o, sensitive=False: iter([] if sensitive else [wrong]))
    monkeypatch.setattr(register_module, "structure_agrees", lambda *a, **k: True)
    reg = register(original, tampered)
    corners = np.array([[0, 0, 1], [255, 0, 1], [0, 199, 1], [255, 199, 1]], float)
    assert np.abs(corners @ reg.matrix.T - corners @ truth.T).max() < 1.5


def _faint_repainted_copy() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A faint (a fifth of the contrast) picture, shrunk to 0.6 as the original, and the tampered
    copy at full size with all but its left quarter repainted, its top 15 and right 40 columns
    cropped away, JPEG 85: the kept part's keypoints are all of low contrast."""
    faint = np.clip(128 + (rgb(EX / "Au" / "coffee.jpg").astype(np.float32) - 128) * 0.2, 0, 255).astype(np.uint8)
    h, w = faint.shape[:2]
    original = cv2.resize(faint, (round(w * 0.6), round(h * 0.6)), interpolation=cv2.INTER_AREA)
    yy, xx = np.mgrid[0:h, 0:w]
    paint = (128 + 40 * np.sin(xx / 9.0) * np.cos(yy / 13.0)).astype(np.uint8)
    mask = xx >= w // 4
    tampered = faint.copy()
    tampered[mask] = paint[mask][:, None]
    return original, jpeg(np.ascontiguousarray(tampered[15:, :w - 40]), 85), mask[15:, :w - 40]


def test_a_faint_mostly_repainted_copy_is_registered_from_low_contrast_keypoints():
    original, tampered, mask = _faint_repainted_copy()
    usual = [r for r in register_module._candidates(tampered, original) if r.inliers >= 8]
    assert not usual  # the usual keypoints do not agree on anything
    reg = register(original, tampered)
    truth = np.array([[0.6, 0, 0.5 * 0.6 - 0.5], [0, 0.6, 0.5 * 0.6 - 0.5], [0, 0, 1.0]]) @ similarity(1.0, 0.0, 0.0, 15.0)
    h, w = tampered.shape[:2]
    corners = np.array([[0, 0, 1], [w - 1, 0, 1], [0, h - 1, 1], [w - 1, h - 1, 1]], float)
    assert np.abs(corners @ reg.matrix.T - corners @ truth.T).max() < 1.0  # in original pixels
    found = make_mask(original, tampered).mask
    assert (found & mask).sum() / (found | mask).sum() >= 0.9


def test_a_fit_the_dense_refinement_spoils_is_kept_as_found(splice, monkeypatch):
    original = splice[0]
    truth = similarity(0.8, 0.0, 12.0, 7.0)
    tampered = jpeg(cv2.warpAffine(original, truth[:2], (256, 200), flags=cv2.INTER_AREA | cv2.WARP_INVERSE_MAP), 80)
    right = Registration(truth.copy(), False, "similarity", matches=20, inliers=10)
    monkeypatch.setattr(register_module, "_candidates", lambda t, o, sensitive=False: iter([] if sensitive else [right]))
    # a refinement that drifts by six pixels, as ECC can towards a large repainted part
    drift = lambda o, t, reg, unchanged=None: Registration(  # noqa: E731
        reg.matrix @ similarity(1.0, 0.0, 6.0, 0.0), reg.flip, reg.model, reg.matches, reg.inliers, refined=True)
    monkeypatch.setattr(register_module, "refine", drift)
    monkeypatch.setattr(register_module, "_dense_search", lambda o, t: None)
    reg = register(original, tampered)
    corners = np.array([[0, 0, 1], [255, 0, 1], [0, 199, 1], [255, 199, 1]], float)
    assert np.abs(corners @ reg.matrix.T - corners @ truth.T).max() < 0.5


def test_a_mostly_repainted_cropped_copy_is_found_by_the_share_it_copies_when_features_fail(monkeypatch):
    """Four fifths of the rocket repainted with another picture, then cropped unevenly and
    recompressed: the whole-frame correlation peaks elsewhere; ranking the places by the share of
    the frame they show copied finds it."""
    original = rgb(EX / "Au" / "rocket.jpg")
    h, w = original.shape[:2]
    tampered = original.copy()
    cut = int(w * 0.2)
    tampered[:, cut:] = cv2.resize(rgb(EX / "Au" / "coffee.jpg"), (w, h))[:, cut:]
    mask = np.zeros((h, w), bool)
    mask[:, cut:] = True
    tampered = jpeg(np.ascontiguousarray(tampered[17:h - 9, 23:w - 31]), 90)
    mask = mask[17:h - 9, 23:w - 31]
    monkeypatch.setattr(register_module, "_candidates", lambda t, o, sensitive=False: iter([]))  # no features
    result = make_mask(original, tampered)
    assert np.allclose(result.registration.matrix[:2, 2], [23, 17], atol=0.5)
    assert (result.mask & mask).sum() / (result.mask | mask).sum() >= 0.95


# ---------------------------------------------------------------- stages


def test_outline_moves_to_the_pasted_edge_not_the_ringing_around_it():
    truth = np.zeros((80, 80), bool)
    truth[20:60, 20:60] = True
    diff = np.full((80, 80), 2.0, np.float32)  # recompression noise
    diff[18:62, 18:62] = 9.0  # ringing two pixels out from the pasted edge
    diff[20:60, 20:60] = 60.0  # the pasted object
    diff[20:60, 20] = 25.0  # its edge, blended with what was there
    valid = np.ones_like(truth)
    grown = cv2.dilate(truth.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0  # the evidence's halo
    assert (refine_outline(grown, diff, valid) == truth).all()
    shrunk = cv2.erode(truth.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    assert (refine_outline(shrunk, diff, valid) == truth).all()
    assert (refine_outline(grown, diff, grown) == grown).all()  # no unchanged pixels around: no level to go by


def test_unchanged_pixels_swallowed_in_a_bay_of_the_mask_are_given_back():
    rng = np.random.default_rng(0)
    truth = np.zeros((80, 80), bool)
    truth[20:60, 20:60] = True
    truth[20:24, 36:44] = False  # a notch 8 wide, 4 deep, in the top edge: a bay
    diff = rng.uniform(0, 3, truth.shape).astype(np.float32)  # recompression noise
    diff[truth] = rng.uniform(20, 60, int(truth.sum()))  # the edit
    hole = np.zeros_like(truth)
    hole[38:42, 38:42] = True  # inside the edit, 16 pixels that happen to match what was there
    diff[hole] = 1.0
    valid = np.ones_like(truth)
    filled = truth.copy()
    filled[20:24, 36:44] = True  # the smooth cut filled the bay
    carved = carve_bays(filled, diff, valid)
    assert carved[truth].all() and not carved[~filled].any()  # only the bay given back (the quiet pixels deep inside the edit kept) ...
    assert (filled & ~carved).sum() >= 0.9 * 32  # ... nearly all of it (a noisy pixel above the noise's 95th percentile stays)
    assert (carve_bays(truth, diff, valid) == truth).all()  # nothing to give back: unchanged
    # an edit whose difference is hardly above the noise: no level to tell a bay by, nothing carved
    faint = np.where(truth, 3.5, diff).astype(np.float32)
    assert (carve_bays(filled, faint, valid) == filled).all()




def test_tone_curves_undo_gamma_and_gain_on_unchanged_pixels(splice):
    original, _, mask = splice
    graded = np.clip(255.0 * np.array([1.08, 1.0, 0.93]) * (original / 255.0) ** 1.3, 0, 255).round()
    edited = graded.copy()
    edited[mask] = 255 - edited[mask]  # an edit the fit must not follow
    curves = fit_tone(original.astype(np.float32), edited, np.ones(mask.shape, bool))
    back = curves.apply(original)
    ok = ~mask & (graded.max(axis=2) < 250)
    assert np.abs(back[ok] - graded[ok]).mean() < 1.5
    assert np.abs(back[ok] - graded[ok]).mean() < 0.2 * np.abs(original[ok] - graded[ok]).mean()


def test_tone_fit_on_copied_texture_finds_a_strong_grading_despite_a_large_edit(splice):
    original, _, _ = splice
    graded = np.clip(255.0 * 1.12 * (original / 255.0) ** 1.35, 0, 255).round()
    edited = graded.copy()
    h, w = edited.shape[:2]
    edited[:, : int(0.45 * w)] = np.clip(edited[:, : int(0.45 * w)] * 0.6 + 90, 0, 255)  # 45% repainted
    copied = np.zeros((h, w), bool)
    copied[:, int(0.5 * w):] = True  # where the texture agrees: what make-mask's first pass fits on
    curves = fit_tone(original.astype(np.float32), edited, copied, trusted=True)
    ok = copied & (graded.max(axis=2) < 250)
    assert np.abs(curves.apply(original)[ok] - graded[ok]).mean() < 1.5


def test_tone_fit_keeps_no_change_when_a_large_edit_is_all_that_differs(splice):
    original, _, _ = splice
    edited = original.astype(np.float32).copy()
    h, w = edited.shape[:2]
    other = cv2.resize(rgb(EX / "Au" / "astronaut.jpg"), (w, h)).astype(np.float32)
    edited[:, : int(0.45 * w)] = np.clip(other[:, : int(0.45 * w)] * 0.7 + 80, 0, 255)  # brighter new content
    for trusted in (False, True):
        curves = fit_tone(original.astype(np.float32), edited, np.ones((h, w), bool), trusted=trusted)
        assert curves.strength() < 3.0


def test_a_curve_that_flattens_the_picture_is_not_taken_for_a_grading():
    rng = np.random.default_rng(0)
    original = rng.uniform(0, 255, (200, 300, 3))
    sky = np.clip(np.array([110.0, 140.0, 200.0]) + 0.08 * original + rng.normal(0, 2, (200, 300, 3)), 0, 255)
    curves = fit_tone(original, sky, np.ones((200, 300), bool), trusted=True)
    assert curves.strength() == 0.0  # a gain of 0.08 fits best, but no grading does that
    graded = np.clip(1.3 * original - 20, 0, 255)
    assert fit_tone(original, graded, np.ones((200, 300), bool), trusted=True).strength() > 20


def test_tail_model_reads_evidence_as_the_log_probability_of_unchanged_noise():
    rng = np.random.default_rng(0)
    ref = rng.exponential(2.0, (300, 300)).astype(np.float32)
    classes = ActivityClasses(np.ones(ref.shape, np.float32), np.ones(ref.shape, bool))
    start, scale = tail_model(ref, classes, robust=False)
    z = (rng.exponential(2.0, 400_000) - float(np.mean(start))) / float(np.mean(scale))
    assert (z >= 0).mean() == pytest.approx(0.05, abs=0.004)  # the tail holds 5% of the noise
    assert (z >= 2).mean() == pytest.approx(0.05 * np.exp(-2), rel=0.2)  # and decays by e per unit


def test_texture_needs_larger_differences_than_flat_areas():
    rng = np.random.default_rng(1)
    act = np.zeros((200, 400), np.float32)
    act[:, 200:] = 20.0
    noise = rng.exponential(1.0, act.shape).astype(np.float32)
    noise[:, 200:] *= 6.0  # recompression errs more in texture
    start, scale = tail_model(noise, ActivityClasses(act, np.ones(act.shape, bool)), robust=False)
    z = (10.0 - start) / scale  # one difference of 10 gray levels
    assert z[:, :200].min() > 4.0 and z[:, 200:].max() < 1.0


def test_a_missed_part_of_an_edit_in_the_reference_barely_moves_the_tail():
    rng = np.random.default_rng(2)
    clean = rng.exponential(2.0, (300, 300)).astype(np.float32)
    dirty = clean.copy()
    dirty.flat[rng.choice(dirty.size, dirty.size // 50, replace=False)] = 100.0  # 2% of it edited
    classes = ActivityClasses(np.ones(clean.shape, np.float32), np.ones(clean.shape, bool))
    (s0, c0), (s1, c1) = (tail_model(d, classes, robust=False) for d in (clean, dirty))
    assert np.mean(s1) < 1.25 * np.mean(s0) and np.mean(c1) < 1.5 * np.mean(c0)
    assert np.min((100.0 - s1) / c1) > HIGH


def test_graph_cut_outline_runs_along_the_image_edge_not_the_evidence_halo():
    rgb = np.full((80, 80, 3), 100.0, np.float32)
    evidence = np.full((80, 80), -3.0, np.float32)
    evidence[19:61, 19:61] = 0.8  # a one-pixel halo of weak evidence (recompression ringing)
    evidence[20:60, 20:60] = 3.0
    seeds = np.zeros((80, 80), bool)
    seeds[40, 40] = True
    flat = segment(evidence, rgb, seeds)
    assert flat[19:61, 19:61].all()  # nothing in the picture says where else to cut
    rgb[20:60, 20:60] = 200.0  # the pasted object, brighter than its surroundings
    cut = segment(evidence, rgb, seeds)
    assert cut[20:60, 20:60].all() and cut.sum() == 40 * 40


def test_graph_cut_closes_the_gaps_between_thin_changed_structures():
    rgb = np.full((80, 80, 3), 100.0, np.float32)
    evidence = np.full((80, 80), -3.0, np.float32)
    evidence[20:60, 20:60] = -0.3  # painted-in background that looks much like what was there
    evidence[20:60, 20:60:4] = 3.0  # the spokes of a painted-in wheel
    seeds = evidence >= 3.0
    cut = segment(evidence, rgb, seeds)
    assert cut[20:60, 20:57].all() and not cut[:18].any() and not cut[:, 62:].any()
    assert not segment(evidence, rgb, np.zeros_like(seeds)).any()  # no seed, no region


def _strokes(seed: int, h: int = 240, w: int = 360) -> np.ndarray:
    """Thin, saturated, anti-aliased strokes on white: the worst case for JPEG's half-resolution,
    coarsely quantized colour."""
    rng = np.random.default_rng(seed)
    img = np.full((h, w, 3), 250, np.uint8)
    colours = [(230, 0, 20), (0, 150, 40), (20, 30, 230), (240, 160, 0), (200, 0, 200)]
    for _ in range(60):
        pts = rng.integers(0, [w, h], size=(4, 2)).astype(np.int32)
        cv2.polylines(img, [pts], False, colours[rng.integers(len(colours))], int(rng.integers(1, 3)), cv2.LINE_AA)
    return img


def test_chroma_counts_for_less_where_recompression_made_it_noisier_than_lightness():
    o = _strokes(1)
    everywhere = np.ones(o.shape[:2], bool)
    same, weight = colour_difference(lab(o), lab(o), everywhere)
    assert weight == 1.0 and not same.any()
    shifted = np.roll(o, 1, axis=1).astype(np.float32)  # a lossless pair: chroma keeps full weight
    d, weight = colour_difference(lab(o), lab(shifted), everywhere)
    assert weight == 1.0 and np.allclose(d, tolerant_difference(lab(o), lab(shifted)))
    d, weight = colour_difference(lab(jpeg(o, 50)), lab(jpeg(o, 70)), everywhere)
    assert 0.25 <= weight < 0.5
    assert d.mean() < 0.6 * tolerant_difference(lab(jpeg(o, 50)), lab(jpeg(o, 70))).mean()


@pytest.mark.parametrize("scale, q_original, q_tampered", [(1.0, 50, 70), (0.7, 50, 60)])
def test_saturated_edges_of_a_recompressed_pair_are_not_taken_for_change(scale, q_original, q_tampered):
    o = _strokes(1)
    truth = np.zeros(o.shape[:2], np.uint8)
    cv2.ellipse(truth, (250, 110), (50, 40), 20, 0, 360, 1, -1)
    truth = truth > 0
    t = np.where(truth[..., None], _strokes(2), o)
    small = cv2.resize(o, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else o
    graded = np.clip(255.0 * (small / 255.0) ** 0.85, 0, 255).round().astype(np.uint8)
    res = make_mask(jpeg(graded, q_original), jpeg(t, q_tampered))
    assert iou(res.mask, truth) >= 0.93  # (the unweighted distance: 0.008 and 0.895)
    assert (res.mask & ~truth).sum() < 0.05 * truth.sum()
    assert res.report["chroma_weight"] < 0.5


@pytest.mark.parametrize("quality", [None, 75])
def test_an_edit_that_only_changes_colour_is_found(splice, quality):
    photo = splice[0]
    box = np.zeros(photo.shape[:2], bool)
    h, w = box.shape
    box[h // 4:h // 2, w // 3:2 * w // 3] = True
    cie = cv2.cvtColor(photo.astype(np.float32) / 255, cv2.COLOR_RGB2LAB)
    cie[box, 1:] = -cie[box, 1:]  # the opposite hue, the same lightness
    recoloured = (np.clip(cv2.cvtColor(cie, cv2.COLOR_LAB2RGB), 0, 1) * 255).round().astype(np.uint8)
    o, t = (photo, recoloured) if quality is None else (jpeg(photo, quality), jpeg(recoloured, quality + 10))
    res = make_mask(o, t)
    assert iou(res.mask, box) >= 0.9


def test_tolerant_difference_forgives_a_shifted_edge_but_not_an_edit():
    a = np.zeros((40, 40), np.float32)
    a[:, 20:] = 200.0
    b = np.zeros_like(a)
    b[:, 21:] = 200.0  # the edge one pixel further
    c = a.copy()
    c[10:20, 5:15] = 120.0  # an edit
    assert tolerant_difference(a, b).max() == 0.0
    assert np.abs(a - b).max() == 200.0
    assert tolerant_difference(a, c)[12:18, 7:13].min() >= 119.0


def test_cleanup_keeps_regions_with_evidence_drops_specks_and_fills_holes():
    weak = np.zeros((60, 60), bool)
    weak[10:40, 10:40] = True
    weak[50:52, 50:52] = True
    strong = np.zeros_like(weak)
    strong[20, 20] = True
    grown = hysteresis(weak, strong)
    assert grown[10:40, 10:40].all() and not grown[50:52, 50:52].any()
    ring = grown.copy()
    ring[20:30, 20:30] = False
    assert fill_holes(ring, 200)[20:30, 20:30].all() and not fill_holes(ring, 50)[20:30, 20:30].any()
    assert remove_small(weak, 10).sum() == 900
    evidence = np.where(weak, 1.0, 0.0)
    evidence[10:40, 10:40] = 9.0
    assert significant(weak, evidence, 3.0).sum() == 900


# ---------------------------------------------------------------- the pipeline


def test_mask_of_a_clean_pair(splice):
    original, tampered, mask = splice
    res = make_mask(original, tampered)
    assert iou(res.mask, mask) >= 0.9
    assert res.soft.dtype == np.float32 and res.soft.shape == mask.shape
    assert res.report["registration"]["model"] == "identity"
    assert res.report["tampered_fraction"] == pytest.approx(mask.mean(), abs=0.03)
    assert len(res.report["boxes"]) >= 1 and not res.warnings


def test_a_recompressed_splice_has_no_halo(splice):
    original, tampered, mask = splice
    res = make_mask(original, jpeg(tampered, 75))  # ringing around every pasted edge
    assert iou(res.mask, mask) >= 0.94
    assert res.mask.sum() / mask.sum() < 1.06  # (a one-pixel halo adds 3% here; the outline had two)


def test_a_small_mostly_regenerated_copy_is_registered_after_rescale_crop_and_jpeg(splice):
    base = cv2.resize(splice[0], (256, 180), interpolation=cv2.INTER_AREA)
    redone = base.copy()
    redone[:, 80:] = cv2.resize(rgb(EX / "Au" / "astronaut.jpg"), (256, 180), interpolation=cv2.INTER_AREA)[:, 80:]
    truth = np.zeros(base.shape[:2], bool)
    truth[:, 80:] = True  # 69% of the picture is new
    o = jpeg(cv2.resize(base, (180, 126), interpolation=cv2.INTER_AREA), 75)  # 0.7x (180 / 256 = 0.703)
    res = make_mask(o, jpeg(redone[8:-6, 5:-9], 85))
    fx, fy = 180 / 256, 126 / 180
    expected = np.array([[fx, 0, 0.5 * fx - 0.5], [0, fy, 0.5 * fy - 0.5], [0, 0, 1.0]]) @ \
        np.array([[1, 0, 5], [0, 1, 8], [0, 0, 1.0]])  # tampered pixel -> original pixel
    corners = np.array([[0, 0, 1], [241, 0, 1], [0, 165, 1], [241, 165, 1]], float)
    assert np.abs(corners @ res.registration.matrix.T - corners @ expected.T).max() < 1.0
    assert iou(res.mask, truth[8:-6, 5:-9]) >= 0.95


def test_mask_survives_rescale_crop_regrading_and_recompression_together(splice):
    original, tampered, mask = splice
    small = cv2.resize(original, None, fx=0.6, fy=0.6, interpolation=cv2.INTER_AREA)
    graded = np.clip(255.0 * 1.1 * (small / 255.0) ** 0.8, 0, 255).round().astype(np.uint8)
    o = jpeg(graded, 70)
    t = jpeg(tampered[18:-11, 25:-30], 85)
    m = mask[18:-11, 25:-30]
    res = make_mask(o, t)
    assert res.mask.shape == m.shape  # the tampered copy's resolution and framing
    assert iou(res.mask, m) >= 0.85
    assert res.report["scale_factor"] == pytest.approx(1 / 0.6, rel=0.02)
    naive = np.abs(cv2.resize(o, t.shape[1::-1]).astype(float) - t).mean(axis=2) >= 25
    assert iou(res.mask, m) > iou(naive, m) + 0.3


def test_identical_images_give_an_empty_mask_and_a_warning(splice):
    res = make_mask(splice[0], splice[0].copy())
    assert not res.mask.any() and "identical" in res.warnings[0]


# ---------------------------------------------------------------- the command


def imlf(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "imlforensics", *map(str, args)], capture_output=True, text=True,
                          timeout=300)


def test_one_pair_writes_mask_change_map_overlay_and_report(tmp_path):
    r = imlf("make-mask", EX / "Au" / "coffee.jpg", EX / "Tp" / "splice.jpg", "--out", tmp_path / "o")
    assert r.returncode == 0, r.stderr
    names = sorted(p.name for p in (tmp_path / "o").iterdir())
    assert names == ["splice.change.png", "splice.json", "splice.mask.png", "splice.overlay.png"]
    mask = gt(tmp_path / "o" / "splice.mask.png")
    assert iou(mask, gt(EX / "Gt" / "splice_gt.png")) >= 0.9
    rep = json.loads((tmp_path / "o" / "splice.json").read_text())
    for key in ("registration", "scale_factor", "thresholds", "noise", "tampered_fraction", "boxes"):
        assert key in rep
    assert rep["registration"]["correlation"] > 0.8
    again = imlf("make-mask", EX / "Au" / "coffee.jpg", EX / "Tp" / "splice.jpg", "--out", tmp_path / "o")
    assert again.returncode == 2 and "--overwrite" in again.stderr  # refused before any work
    single = imlf("make-mask", EX / "Au" / "coffee.jpg", EX / "Tp" / "splice.jpg", "-o", tmp_path / "m.png")
    assert single.returncode == 0 and (tmp_path / "m.png").read_bytes() == (tmp_path / "o" / "splice.mask.png").read_bytes()


def test_unrelated_pair_is_one_line_of_error_and_no_mask(tmp_path):
    r = imlf("make-mask", EX / "Au" / "rocket.jpg", EX / "Au" / "astronaut.jpg", "-o", tmp_path / "m.png")
    assert r.returncode == 1 and "registration failed" in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "m.png").exists()


@pytest.mark.parametrize("broken", ["missing", "text"])
def test_a_bad_original_is_named_in_its_one_line_of_error(tmp_path, broken):
    original = tmp_path / "before.jpg"
    if broken == "text":
        original.write_text("not a picture")
    r = imlf("make-mask", original, EX / "Tp" / "splice.jpg", "-o", tmp_path / "m.png")
    assert r.returncode == 1 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert f"original {original}:" in r.stderr  # the culprit, not only the pair's tampered image
    assert not (tmp_path / "m.png").exists()


def test_pairs_file_becomes_a_dataset_that_eval_reads(tmp_path):
    from imlforensics.evaluation.datasets import load_dataset

    small = tmp_path / "small.jpg"
    Image.fromarray(cv2.resize(rgb(EX / "Au" / "astronaut.jpg"), (336, 336), interpolation=cv2.INTER_AREA)).save(small, quality=90)
    pairs = tmp_path / "pairs.csv"
    with pairs.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["original", "tampered"])
        w.writerow([str(EX / "Au" / "coffee.jpg"), str(EX / "Tp" / "splice.jpg")])
        w.writerow(["small.jpg", str(EX / "Tp" / "copymove.jpg")])  # relative to the CSV
        w.writerow([str(EX / "Au" / "rocket.jpg"), str(EX / "Tp" / "splice.jpg")])  # unrelated: fails
    out = tmp_path / "ds"
    r = imlf("make-mask", "--pairs", pairs, "--out", out, "--jobs", "2")
    assert r.returncode == 1, r.stderr  # one pair failed; the others went on
    assert "done 2, failed 1" in r.stderr
    samples = load_dataset(out)
    assert sorted(Path(s.image).name for s in samples) == ["copymove.jpg", "splice.jpg"]
    assert (out / "Tp" / "splice.jpg").read_bytes() == (EX / "Tp" / "splice.jpg").read_bytes()
    copy_move = next(s for s in samples if Path(s.image).name == "copymove.jpg")
    assert iou(gt(Path(copy_move.mask)), gt(EX / "Gt" / "copymove_gt.png")) >= 0.8
    failed = (out / "failed.csv").read_text()
    assert "rocket.jpg" in failed and "registration failed" in failed
    ev = imlf("eval", out, "--model", "ela")
    assert ev.returncode == 0, ev.stderr


def test_two_folders_are_matched_by_name(tmp_path):
    (tmp_path / "before").mkdir()
    (tmp_path / "after").mkdir()
    (tmp_path / "before" / "splice.png").write_bytes((EX / "Au" / "coffee.jpg").read_bytes())  # same stem
    (tmp_path / "after" / "splice.jpg").write_bytes((EX / "Tp" / "splice.jpg").read_bytes())
    (tmp_path / "after" / "lonely.jpg").write_bytes((EX / "Tp" / "copymove.jpg").read_bytes())
    r = imlf("make-mask", tmp_path / "before", tmp_path / "after", "--out", tmp_path / "ds")
    assert r.returncode == 1 and "lonely.jpg: no original with this name" in r.stderr
    assert json.loads((tmp_path / "ds" / "dataset.json").read_text()) == [["Tp/splice.jpg", "Gt/splice_gt.png"]]


@pytest.mark.data
def test_clean_benchmark_pairs(shared_data):
    rows = list(csv.DictReader(open(shared_data / "casia1" / "pairs.csv", newline="")))[:12]
    scores = []
    for r in rows:
        res = make_mask(shared_data / "casia1" / r["original"], shared_data / "casia1" / r["tampered"])
        scores.append(iou(res.mask, gt(shared_data / "casia1" / r["mask"])))
    assert np.mean(scores) >= 0.85


# ---------------------------------------------------------------- learned super-resolution

SR_CARD = """
name = "tiny-esrgan"
kind = "super-resolution"
summary = "a 1-block ESRGAN with random weights (test double)"
paper = "none"
architecture = "spandrel"
arch_options = {{ arch = "ESRGAN", scale = {scale} }}
license = "MIT"
redistribution = true
training = "none"

[official]
files = ["tiny.pth"]
state_dict_key = "params_ema"
"""


@pytest.fixture
def sr_env(tmp_path):
    import os

    import torch
    from spandrel.architectures.ESRGAN import ESRGAN

    cards = tmp_path / "cards"
    cards.mkdir()
    (cards / "tiny-esrgan.toml").write_text(SR_CARD.format(scale=4))
    torch.manual_seed(0)
    net = ESRGAN(in_nc=3, out_nc=3, num_filters=8, num_blocks=1, scale=4)
    torch.save({"params_ema": net.state_dict(), "iter": 5}, tmp_path / "tiny.pth")
    env = dict(os.environ, IMLF_CACHE=str(tmp_path / "cache"), IMLF_CARDS=str(cards), NO_COLOR="1")
    return env, tmp_path / "tiny.pth", net


def test_a_super_resolution_checkpoint_is_imported_and_used_by_make_mask(sr_env, tmp_path, splice):
    env, checkpoint, _ = sr_env
    run = lambda *a: subprocess.run([sys.executable, "-m", "imlforensics", *map(str, a)], capture_output=True,  # noqa: E731
                                    text=True, timeout=300, env=env)
    r = run("weights", "import", "tiny-esrgan", checkpoint)
    assert r.returncode == 0, r.stderr
    assert "tiny-esrgan" not in run("models").stdout  # a super-resolution model is not a detector
    small = tmp_path / "small.png"
    Image.fromarray(cv2.resize(splice[0], None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)).save(small)
    r = run("make-mask", small, EX / "Tp" / "splice.jpg", "--sr", "tiny-esrgan", "--out", tmp_path / "o", "--json")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["super_resolution"] == {"model": "tiny-esrgan", "scale": 4, "device": "cpu"}
    assert gt(tmp_path / "o" / "splice.mask.png").shape == splice[2].shape
    # weights that are not the card's architecture are refused in one line
    torch = pytest.importorskip("torch")
    torch.save({"params_ema": {"conv.weight": torch.zeros(3, 3, 1, 1)}}, tmp_path / "other.pth")
    bad = run("weights", "import", "tiny-esrgan", tmp_path / "other.pth", "--overwrite")
    assert bad.returncode != 0 and "does not recognise them as ESRGAN" in bad.stderr and "Traceback" not in bad.stderr


def test_upscaler_tiles_give_the_whole_image_forward(sr_env):
    import torch

    from imlforensics.makemask.sr import Upscaler

    _, _, net = sr_env
    net.eval()
    img = np.random.default_rng(0).integers(0, 256, (70, 300, 3), dtype=np.uint8)
    up = Upscaler(type("D", (), {"scale": 4, "__call__": lambda self, x: net(x)})(), "tiny", "cpu")
    with torch.inference_mode():
        whole = net(torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255).clamp(0, 1)[0].permute(1, 2, 0).numpy()
    tiled = up.upscale(img)  # 256-px tiles with 16 px of context: seams only where context runs out
    assert tiled.shape == (280, 1200, 3)
    assert np.abs(tiled.astype(float) - np.rint(255 * whole)).mean() < 1.0


def _basicsr_rrdb_shapes(blocks: int = 23, nf: int = 64, gc: int = 32) -> dict[str, tuple[int, ...]]:
    """Key names and shapes of Real-ESRGAN's official x4plus checkpoint (BasicSR's RRDBNet naming)."""
    shapes = {"conv_first.weight": (nf, 3, 3, 3), "conv_first.bias": (nf,)}
    for b in range(blocks):
        for r in (1, 2, 3):
            for c in range(1, 6):
                out = nf if c == 5 else gc
                shapes[f"body.{b}.rdb{r}.conv{c}.weight"] = (out, nf + (c - 1) * gc, 3, 3)
                shapes[f"body.{b}.rdb{r}.conv{c}.bias"] = (out,)
    for name, out in (("conv_body", nf), ("conv_up1", nf), ("conv_up2", nf), ("conv_hr", nf), ("conv_last", 3)):
        shapes[f"{name}.weight"], shapes[f"{name}.bias"] = (out, nf, 3, 3), (out,)
    return shapes


def test_the_shipped_real_esrgan_card_accepts_the_official_key_layout():
    from imlforensics.weights.cards import all_cards
    from imlforensics.weights import WeightsError, check_state_dict

    card = all_cards()["realesrgan-x4plus"]
    assert card.kind == "super-resolution" and card.state_dict_key == "params_ema"
    shapes = _basicsr_rrdb_shapes()
    check_state_dict(shapes, card)
    assert sum(int(np.prod(s)) for s in shapes.values()) == 16_697_987  # Real-ESRGAN x4plus's parameter count
    with pytest.raises(WeightsError, match="does not recognise"):
        check_state_dict({"conv.weight": (3, 3, 1, 1)}, card)


# ---------------------------------------------------------------- learned feature comparison

FEATURES_CARD = """
name = "tiny-features"
kind = "features"
summary = "a ConvNeXt-atto with random weights (test double)"
paper = "none"
architecture = "imlforensics.makemask.features:backbone"
arch_options = { model = "convnext_atto" }
license = "MIT"
redistribution = true
training = "none"

[preprocess]
indices = [1, 2]
"""


@pytest.fixture
def features_env(tmp_path):
    import os

    import timm
    import torch
    from safetensors.torch import save_file

    cards = tmp_path / "cards"
    cards.mkdir()
    (cards / "tiny-features.toml").write_text(FEATURES_CARD)
    torch.manual_seed(0)
    save_file(timm.create_model("convnext_atto", pretrained=False).state_dict(), str(tmp_path / "model.safetensors"))
    env = dict(os.environ, IMLF_CACHE=str(tmp_path / "cache"), IMLF_CARDS=str(cards), NO_COLOR="1")
    return env, tmp_path / "model.safetensors"


def test_deep_features_differ_where_content_was_replaced_not_where_it_was_recompressed(features_env, splice, monkeypatch):
    from imlforensics.weights.cards import all_cards
    from imlforensics.makemask.features import FeatureComparer

    env, weights = features_env
    monkeypatch.setenv("IMLF_CARDS", env["IMLF_CARDS"])
    all_cards.cache_clear()
    try:
        comparer = FeatureComparer.load("tiny-features", weights, device="cpu")
    finally:
        monkeypatch.undo()
        all_cards.cache_clear()
    original, tampered, mask = splice
    d = comparer.distance(jpeg(original, 70).astype(np.float32), tampered)
    assert d.shape == mask.shape and d.dtype == np.float32
    inner = cv2.erode(mask.astype(np.uint8), np.ones((15, 15), np.uint8)) > 0
    outer = cv2.dilate(mask.astype(np.uint8), np.ones((31, 31), np.uint8)) == 0
    assert np.median(d[inner]) > 5 * np.median(d[outer])


def test_make_mask_compares_deep_features_with_an_imported_backbone(features_env, tmp_path, splice):
    env, weights = features_env

    def run(*args):
        return subprocess.run([sys.executable, "-m", "imlforensics", *map(str, args)], capture_output=True, text=True,
                              env=env, timeout=300)

    r = run("weights", "import", "tiny-features", weights)
    assert r.returncode == 0, r.stderr
    assert "tiny-features" not in run("models").stdout  # a backbone is not a detector
    r = run("make-mask", EX / "Au" / "coffee.jpg", EX / "Tp" / "splice.jpg", "--features", "tiny-features",
            "--out", tmp_path / "o", "--json")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["features"] == {"model": "tiny-features", "device": "cpu"} and "features" in rep["noise"]
    assert iou(gt(tmp_path / "o" / "splice.mask.png"), splice[2]) >= 0.9
    r = run("make-mask", EX / "Au" / "coffee.jpg", EX / "Tp" / "splice.jpg", "--features", "realesrgan-x4plus")
    assert r.returncode == 2 and "not a feature backbone" in r.stderr and "Traceback" not in r.stderr


def test_change_map_with_deep_features_and_too_few_covered_pixels_finds_nothing():
    """A learned distance map on a pair whose common part is too small to measure the noise on:
    no change can be claimed there, and nothing fails."""
    from imlforensics.makemask.change import change_map

    rng = np.random.default_rng(0)
    a = rng.uniform(0, 255, (40, 40, 3)).astype(np.float32)
    b = a.copy()
    b[:20] = 255.0 - b[:20]
    valid = np.zeros((40, 40), bool)
    valid[:10, :10] = True  # 100 pixels: under what a noise estimate needs
    ch = change_map(a, b, valid, learned=np.ones((40, 40), np.float32))
    assert not ch.coarse.any() and not ch.fine.any()
