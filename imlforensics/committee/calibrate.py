"""``imlf calibrate``: measure each committee member on a labelled dataset and write ``priors.json``.

For each member (any registered detector) over the dataset's images:

* its **prior**: the mean per-image pixel F1 over tampered images at its best *fixed* threshold
  (one threshold for the whole dataset, searched on a grid), or its mean pixel AUC
  (``--prior auc``), in percent, as CV-DD's a_i;
* that threshold (the member's own vote threshold in ``vote`` fusion);
* a monotone **calibration** from raw map value to the probability that a pixel is tampered
  (:func:`imlforensics.committee.fusion.fit_isotonic`), fitted on the pixels of a fit share of the images
  and checked on a held-out share (Brier score before and after, written to the file).

Images are split between fit and held-out shares deterministically by a hash of their path.
Authentic images contribute their pixels (all negative) to the calibration but no F1.

Several datasets can be given at once; each then weighs the same in every fit and average (the
priors are the mean over datasets of the per-dataset figures, pixels are weighted by one over their
dataset's count). A member contributes its pixels to its calibration only on images where it saw
its kind of trace (``Prediction.applicable``); elsewhere it abstains. On the fit share the file also
gets the ``learned`` voter (a logistic stacker, :class:`~imlforensics.committee.fusion.Stacker`) and
each voter's image-score calibration; on the held-out share every voter is measured per dataset and
the best (F1 at 0.5 + best F1 + AUC, averaged over datasets) becomes the file's default voter.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from .._version import __version__
from ..errors import ImlfError, NotApplicable
from ..evaluation.datasets import Sample, read_mask
from .fusion import (VOTERS, Calibration, Stacker, combine, fit_isotonic, fit_logistic, member_llr, peak_of,
                     relative_threshold)

FORMAT = "imlforensics-priors"
GRID = np.round(np.arange(0.02, 1.0, 0.02), 2)
MIN_TAMPERED = 2  # tampered images a member must analyse to be calibrated


def _unit_hash(path: str | Path, salt: str) -> float:
    return int(hashlib.sha256(f"{salt}:{Path(path).name}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF


def heldout(path: str | Path, share: float) -> bool:
    """Deterministic split: True for the held-out share of images (independent of the halves)."""
    return _unit_hash(path, "heldout") < share


def split_half(samples: list[Sample], part: int) -> list[Sample]:
    """One of two deterministic halves (0 or 1) of a dataset, by a hash of each file name."""
    return [s for s in samples if (_unit_hash(s.image, "half") < 0.5) == bool(part)]


Run = Callable[[Path], "np.ndarray | tuple[np.ndarray, bool]"]


@dataclass
class _Image:
    """What calibration keeps of one image: sampled pixels of every member, flags, per-map F1."""

    dataset: int
    heldout: bool
    tampered: bool
    labels: np.ndarray  # the sampled pixels' ground truth
    values: dict  # member -> sampled raw values (only members that voted: ran and applied)
    applicable: dict  # member -> bool (False also when it abstained or failed)


def _f1_at(heat: np.ndarray, gt: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Pixel F1 at each threshold, from a histogram of the map on positive and negative pixels."""
    bins = np.minimum((np.clip(heat, 0, 1) * 1000).astype(np.int64), 999)
    pos = np.bincount(bins[gt], minlength=1000)[::-1].cumsum()[::-1]  # pixels >= bin, positive
    allc = np.bincount(bins.ravel(), minlength=1000)[::-1].cumsum()[::-1]
    idx = np.minimum((thresholds * 1000).astype(np.int64), 999)
    tp, pred = pos[idx].astype(np.float64), allc[idx].astype(np.float64)
    total_pos = float(gt.sum())
    return np.where(pred + total_pos > 0, 2 * tp / np.maximum(pred + total_pos, 1), 0.0)


def _as_datasets(datasets) -> list[tuple[str, list[Sample]]]:
    if datasets and isinstance(datasets[0], Sample):
        return [("dataset", list(datasets))]
    return [(str(n), list(s)) for n, s in datasets]


def dataset_weights(ds: np.ndarray, n_datasets: int) -> np.ndarray:
    """One weight per row so that every dataset present sums to the same total (1 / datasets present)."""
    counts = np.bincount(ds, minlength=n_datasets).astype(np.float64)
    present = max(int((counts > 0).sum()), 1)
    return 1.0 / (present * counts[ds])


def calibrate(datasets, members: dict[str, Run], prior_metric: str = "f1", heldout_share: float = 0.25,
              pixels_per_image: int = 20000, seed: int = 0, progress: Callable[[], None] | None = None,
              l2: float = 1e-3, temperature: float = 5.0) -> dict[str, Any]:
    """Run every member over labelled datasets; return ``{"members": ..., "fusion": ...}``.

    ``datasets``: ``[(name, samples), ...]`` (or one list of samples). Every dataset weighs the same
    in every fit, however many images it has, so that no single dataset's bias rules. ``members``
    maps a name to a function giving the member's raw map for an image path, or ``(map,
    applicable)`` (raising NotApplicable when it abstains, ImlfError when the image fails).
    """
    from ..evaluation.metrics import auc as auc_metric

    if prior_metric not in ("f1", "auc"):
        raise ValueError("prior must be f1 or auc")
    sets = _as_datasets(datasets)
    rng = np.random.default_rng(seed)
    names = list(members)
    n_sets = len(sets)
    f1_sums = {n: np.zeros((n_sets, GRID.size)) for n in names}
    auc_sums = {n: np.zeros(n_sets) for n in names}
    n_tampered = np.zeros(n_sets, np.int64)
    failed = {n: 0 for n in names}
    applied = {n: np.zeros(n_sets, np.int64) for n in names}
    ran_tampered = {n: 0 for n in names}
    images: list[_Image] = []
    for d, (_, samples) in enumerate(sets):
        for s in samples:
            gt: np.ndarray | None = None
            maps: dict[str, np.ndarray] = {}
            flags: dict[str, bool] = {}
            for name, run in members.items():
                try:
                    got = run(s.image)
                except (NotApplicable, ImlfError, MemoryError):
                    failed[name] += 1
                    continue
                heat, app = (got if isinstance(got, tuple) else (got, True))
                maps[name], flags[name] = np.asarray(heat, np.float32), bool(app)
            if not maps:
                if progress:
                    progress()
                continue
            shape = next(iter(maps.values())).shape
            try:
                gt = np.zeros(shape, bool) if s.mask is None else read_mask(s.mask, shape)
            except (ImlfError, OSError, ValueError):
                for name in maps:
                    failed[name] += 1
                if progress:
                    progress()
                continue
            tampered = bool(gt.any())
            take = rng.choice(gt.size, size=min(pixels_per_image, gt.size), replace=False)
            if tampered:
                n_tampered[d] += 1
            values = {}
            for name, heat in maps.items():
                if heat.shape != shape:
                    failed[name] += 1
                    continue
                applied[name][d] += flags[name]
                if tampered:
                    ran_tampered[name] += 1
                    shown = heat if flags[name] else np.zeros_like(heat)  # silence finds nothing
                    f1_sums[name][d] += _f1_at(shown, gt, GRID)
                    if not gt.all():
                        auc_sums[name][d] += auc_metric(shown.ravel(), gt.ravel())
                if flags[name]:
                    values[name] = heat.ravel()[take]
            images.append(_Image(d, heldout(s.image, heldout_share), tampered, gt.ravel()[take], values,
                                 {n: n in values for n in names}))
            if progress:
                progress()
    if not n_tampered.any():
        raise ImlfError("no tampered image could be analysed: cannot calibrate")
    for name in names:
        if 0 < ran_tampered[name] < MIN_TAMPERED:  # none at all: it cannot read these files, left out below
            raise ImlfError(f"{name} analysed {ran_tampered[name]} tampered image(s) of the dataset(s): calibrating a "
                            f"member needs at least {MIN_TAMPERED}")
    out: dict[str, Any] = {}
    cals: dict[str, Calibration] = {}
    with_tp = n_tampered > 0
    skipped = [n for n in names if not any(n in im.values for im in images if im.tampered)]
    names = [n for n in names if n not in skipped]
    if not names:
        raise ImlfError("no member saw its kind of trace in any tampered image: cannot calibrate")
    for im in images:
        for n in skipped:
            im.values.pop(n, None)
    for name in names:
        per_f1 = f1_sums[name][with_tp] / n_tampered[with_tp, None]
        f1 = per_f1.mean(axis=0)  # every dataset counts the same
        k = int(np.argmax(f1))
        per_auc = auc_sums[name][with_tp] / n_tampered[with_tp]
        mean_auc = float(per_auc.mean())
        fit = [im for im in images if not im.heldout and name in im.values] or [im for im in images if name in im.values]
        fx = np.concatenate([im.values[name] for im in fit])
        fy = np.concatenate([im.labels for im in fit])
        fw = np.concatenate([np.full(im.labels.size, im.dataset) for im in fit])
        cal = fit_isotonic(fx, fy, weights=dataset_weights(fw, n_sets))
        cals[name] = cal
        hold = [im for im in images if im.heldout and name in im.values]
        check: dict[str, Any] = {}
        if hold:
            hx = np.concatenate([im.values[name] for im in hold])
            hy = np.concatenate([im.labels for im in hold]).astype(np.float64)
            check = {"pixels": int(hx.size), "brier_raw": round(float(np.mean((hx - hy) ** 2)), 6),
                     "brier_calibrated": round(float(np.mean((cal(hx) - hy) ** 2)), 6),
                     "positive_share": round(float(hy.mean()), 6)}
        out[name] = {"prior": round(100 * (float(f1[k]) if prior_metric == "f1" else mean_auc), 3),
                     "f1_best_fixed": round(float(f1[k]), 4), "threshold": float(GRID[k]), "auc": round(mean_auc, 4),
                     "tampered_images": int(n_tampered.sum()), "abstained_or_failed": failed[name],
                     "applicable_images": {sets[d][0]: int(applied[name][d]) for d in range(n_sets)},
                     "per_dataset": {sets[d][0]: {"f1_best_fixed": round(float(per_f1[i, k]), 4),
                                                  "auc": round(float(per_auc[i]), 4)}
                                     for i, d in enumerate(np.flatnonzero(with_tp))},
                     "calibration": cal.to_json(), "heldout": check}
    fit_images = [im for im in images if not im.heldout] or images
    stacker = fit_stacker(fit_images, cals, names, n_sets, l2)
    priors = {n: out[n]["prior"] for n in names}
    thresholds = {n: out[n]["threshold"] for n in names}
    fusion = {"stacker": stacker.to_json(), "l2": l2, "seed": seed, "pixels_per_image": pixels_per_image,
              "heldout_share": heldout_share}
    hold_images = [im for im in images if im.heldout]
    decisions = {v: fit_decision(fit_images, v, cals, stacker, priors, thresholds, n_sets, temperature) for v in VOTERS}
    fusion["decision"] = decisions
    relative = {v: fit_relative(fit_images, v, cals, stacker, priors, thresholds, n_sets, temperature, decisions[v])
                for v in VOTERS}
    fusion["relative"] = relative
    fusion["image"] = fit_image_score(fit_images, cals, stacker, priors, thresholds, n_sets, temperature, decisions)
    if hold_images:
        table = select_voter(hold_images, cals, stacker, priors, thresholds, [s[0] for s in sets], temperature,
                             decisions, relative)
        fusion["selection"] = table
        fusion["default_voter"] = max(table["mean"], key=lambda v: table["mean"][v]["criterion"])
    else:
        fusion["default_voter"] = "learned"
    return {"members": out, "fusion": fusion, "skipped": skipped}


def _llrs(im: _Image, cals: dict[str, Calibration]) -> dict[str, np.ndarray]:
    return {n: member_llr(cals[n](v.astype(np.float32)), cals[n].base) for n, v in im.values.items()}


def fit_stacker(images: list[_Image], cals: dict[str, Calibration], names: list[str], n_sets: int,
                l2: float = 1e-3, pixels_per_image: int = 2000) -> Stacker:
    """The learned voter: logistic regression over members' LLRs and applicability flags, datasets equal.

    It fits on the first ``pixels_per_image`` of each image's sampled pixels (already a random sample).
    """
    x_parts, y_parts, d_parts = [], [], []
    for full in images:
        im = _Image(full.dataset, full.heldout, full.tampered, full.labels[:pixels_per_image],
                    {n: v[:pixels_per_image] for n, v in full.values.items()}, full.applicable)
        llr = _llrs(im, cals)
        cols = []
        for n in names:
            on = n in llr
            cols.append(llr[n] if on else np.zeros(im.labels.size, np.float32))
        for n in names:
            cols.append(np.full(im.labels.size, float(n in llr), np.float32))
        x_parts.append(np.stack(cols, axis=1))
        y_parts.append(im.labels)
        d_parts.append(np.full(im.labels.size, im.dataset))
    x, y, d = np.concatenate(x_parts), np.concatenate(y_parts), np.concatenate(d_parts)
    beta = fit_logistic(x, y, dataset_weights(d, n_sets), l2)
    k = len(names)
    return Stacker(names, [round(float(c), 6) for c in beta[1 : k + 1]],
                   [round(float(c), 6) for c in beta[k + 1 :]], round(float(beta[0]), 6))


def fused_pixels(im: _Image, voter: str, cals: dict[str, Calibration], stacker: Stacker, priors: dict[str, float],
                 thresholds: dict[str, float], temperature: float, decision: float | None = None,
                 relative: float | None = None) -> np.ndarray:
    """The committee's map on an image's sampled pixels (as :class:`~.detector.Committee` fuses it)."""
    raw = {n: v.astype(np.float32) for n, v in im.values.items()}
    return combine(raw, cals, thresholds, priors, stacker, voter, temperature, (im.labels.size,),
                   decision=decision, relative=relative).heatmap


def fit_decision(images: list[_Image], voter: str, cals, stacker, priors, thresholds, n_sets: int,
                 temperature: float) -> float:
    """The fused probability to decide "tampered" at: the best mean over datasets of (mean pixel F1
    over tampered images - share of authentic images' pixels flagged), like a member's threshold.

    The second term keeps weak evidence (a kind of forgery the members hardly see, where flagging
    the whole image scores well on tampered images alone) from flagging authentic images wholesale:
    a flagged authentic pixel costs as much as a point of F1. Datasets without authentic images add
    their F1 only.
    """
    grid = np.round(np.arange(0.01, 1.0, 0.01), 2)
    gain = _mean_gain(images, n_sets, grid.size, lambda im: (
        fused_pixels(im, voter, cals, stacker, priors, thresholds, temperature), grid))
    return float(grid[int(np.argmax(gain))])


def _mean_gain(images: list[_Image], n_sets: int, size: int,
               cut: Callable[[_Image], tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """For each of ``size`` candidate cuts (``cut(image)``: the fused map and the image's threshold
    for each candidate), the mean over datasets of (mean pixel F1 over tampered images - share of
    authentic pixels flagged); zeros when no dataset has a tampered image."""
    f1_sums, fp_sums = np.zeros((n_sets, size)), np.zeros((n_sets, size))
    n_tp, n_au = np.zeros(n_sets), np.zeros(n_sets)
    for im in images:
        h, t = cut(im)
        if im.tampered:
            f1_sums[im.dataset] += _f1_at(h, im.labels, t)
            n_tp[im.dataset] += 1
        else:
            fp_sums[im.dataset] += (h[None, :] >= t[:, None]).mean(axis=1)
            n_au[im.dataset] += 1
    keep = n_tp > 0
    if not keep.any():
        return np.zeros(size)
    return (f1_sums[keep] / n_tp[keep, None] - fp_sums[keep] / np.maximum(n_au[keep, None], 1)).mean(axis=0)


RELATIVE_GRID = (0.0, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)


def fit_relative(images: list[_Image], voter: str, cals, stacker, priors, thresholds, n_sets: int,
                 temperature: float, decision: float) -> float:
    """The share of each image's peak to decide "tampered" at, where higher than the global decision
    (:func:`~.fusion.relative_decision`); 0 for none. Chosen, with the global decision fixed, by the
    same criterion as :func:`fit_decision` (mean over datasets of mean F1 on tampered images minus the
    share of authentic pixels flagged) on :data:`RELATIVE_GRID`; a tie keeps the smaller share.
    """
    grid = np.asarray(RELATIVE_GRID)

    def cut(im: _Image) -> tuple[np.ndarray, np.ndarray]:
        h = fused_pixels(im, voter, cals, stacker, priors, thresholds, temperature, decision)
        return h, relative_threshold(grid, peak_of(h))

    gain = _mean_gain(images, n_sets, grid.size, cut)
    return float(grid[int(np.argmax(np.round(gain, 6)))])


def image_statistic(heat: np.ndarray, peak: float | None = None) -> float:
    """What the image score calibrates: the log-odds of the map's 99.5th percentile (``peak``, when
    already known: :attr:`~.fusion.Fused.peak`)."""
    q = peak_of(heat) if peak is None else peak
    q = min(max(q, 1e-4), 1 - 1e-4)
    return float(np.log(q / (1 - q)))


def fit_image_score(images: list[_Image], cals, stacker, priors, thresholds, n_sets: int,
                    temperature: float, decisions: dict[str, float]) -> dict[str, Any]:
    """Per voter, a logistic (Platt) map from :func:`image_statistic` to P(image tampered), datasets equal.

    Datasets without authentic images add their tampered images only; each class of each dataset
    weighs the same.
    """
    out: dict[str, Any] = {}
    for voter in VOTERS:
        stat = np.array([image_statistic(fused_pixels(im, voter, cals, stacker, priors, thresholds, temperature,
                                                      decisions[voter])) for im in images])
        lab = np.array([im.tampered for im in images])
        group = np.array([2 * im.dataset + im.tampered for im in images])
        if lab.all() or not lab.any():
            out[voter] = {"a": 1.0, "b": 0.0}
            continue
        beta = fit_logistic(stat[:, None], lab, dataset_weights(group, 2 * n_sets), 1e-4)
        out[voter] = {"a": round(float(beta[1]), 6), "b": round(float(beta[0]), 6)}
    return out


def select_voter(images: list[_Image], cals, stacker, priors, thresholds, set_names: list[str],
                 temperature: float, decisions: dict[str, float],
                 relative: dict[str, float] | None = None) -> dict[str, Any]:
    """Each voter on the held-out images' sampled pixels, per dataset: F1 at 0.5, best F1, AUC.

    The criterion is their sum, averaged over datasets (each dataset counts the same).
    """
    from ..evaluation.metrics import auc as auc_metric
    from ..evaluation.metrics import best_f1

    table: dict[str, Any] = {"per_dataset": {}, "mean": {}}
    for voter in VOTERS:
        rows = {}
        for d, name in enumerate(set_names):
            f05, fb, au = [], [], []
            for im in images:
                if im.dataset != d or not im.tampered or im.labels.all():
                    continue
                h = fused_pixels(im, voter, cals, stacker, priors, thresholds, temperature, decisions[voter],
                                 (relative or {}).get(voter))
                g = im.labels
                p = h >= 0.5
                f05.append(2 * (p & g).sum() / max(p.sum() + g.sum(), 1))
                fb.append(best_f1(h, g)[0])
                au.append(auc_metric(h, g))
            if f05:
                rows[name] = {"images": len(f05), "f1_fixed": round(float(np.mean(f05)), 4),
                              "f1_best": round(float(np.mean(fb)), 4), "auc": round(float(np.mean(au)), 4)}
        table["per_dataset"][voter] = rows
        if rows:
            table["mean"][voter] = {k: round(float(np.mean([r[k] for r in rows.values()])), 4)
                                    for k in ("f1_fixed", "f1_best", "auc")}
            table["mean"][voter]["criterion"] = round(sum(table["mean"][voter][k] for k in ("f1_fixed", "f1_best", "auc")), 4)
    return table


def priors_document(dataset: str, members: dict[str, Any], versions: dict[str, str], prior_metric: str,
                    images: int, note: str = "", fusion: dict[str, Any] | None = None,
                    datasets: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    for name, v in versions.items():
        members[name]["version"] = v
    doc = {"format": FORMAT, "format_version": 3 if fusion else 2, "dataset": dataset, "images": images,
           "prior_metric": prior_metric, "imlforensics": __version__,
           "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "note": note}
    if datasets:
        doc["datasets"] = datasets
    doc["members"] = members
    if fusion:
        doc["fusion"] = fusion
    return doc


def dataset_entry(name: str, path: str | Path, half: int | None, samples: list[Sample]) -> dict[str, Any]:
    """How a priors file records one calibration dataset: its path, half, counts and a fingerprint
    (hash of its image names and sizes), so that the file names the exact data it was measured on."""
    h = hashlib.sha256()
    for s in samples:
        p = Path(s.image)
        h.update(f"{p.name}:{p.stat().st_size if p.exists() else -1}\n".encode())
    return {"name": name, "path": str(path), "half": half, "images": len(samples),
            "tampered": sum(not s.authentic for s in samples), "fingerprint": h.hexdigest()[:16]}


def read_priors(path: str | Path) -> dict[str, Any]:
    """Read and check a priors file written by ``imlf calibrate``."""
    try:
        doc = json.loads(Path(path).read_text())
    except OSError as exc:
        raise ImlfError(f"{path}: cannot read the priors file ({exc.strerror or exc})") from None
    except ValueError:
        raise ImlfError(f"{path}: not a JSON priors file") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or not isinstance(doc.get("members"), dict):
        raise ImlfError(f"{path}: not a priors file written by `imlf calibrate`")
    if not doc["members"]:
        raise ImlfError(f"{path}: the priors file lists no member")
    for name, member in doc["members"].items():
        problem = _member_problem(member)
        if problem:
            raise ImlfError(f"{path}: member {name}: {problem}")
    if "fusion" in doc:
        problem = _fusion_problem(doc["fusion"])
        if problem:
            raise ImlfError(f"{path}: fusion: {problem}")
    return doc


def _fusion_problem(f: Any) -> str | None:
    """What makes the file's fusion section (learned voter, decisions, image calibration) unusable."""
    if not isinstance(f, dict):
        return "not an object"
    if f.get("default_voter", "prior") not in VOTERS:
        return f"default voter {f.get('default_voter')!r} is not one of {', '.join(VOTERS)}"
    if "stacker" in f:
        try:
            Stacker.from_json(f["stacker"])
        except (KeyError, TypeError, ValueError) as exc:
            return f"the learned voter is damaged ({exc})"
    for v, t in (f.get("decision") or {}).items():
        if not (_finite(t) and 0 < t < 1):
            return f"decision threshold {t!r} of voter {v} is not a number in (0, 1)"
    for v, r in (f.get("relative") or {}).items():
        if not (_finite(r) and 0 <= r < 1):
            return f"relative decision {r!r} of voter {v} is not a number in [0, 1)"
    for v, c in (f.get("image") or {}).items():
        if not (isinstance(c, dict) and _finite(c.get("a")) and _finite(c.get("b"))):
            return f"image calibration of voter {v} needs finite numbers a and b"
    return None


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _member_problem(m: Any) -> str | None:
    """What makes a member's entry unusable, or None: every number the committee reads is checked,
    so a damaged or hand-edited file is refused when it is read, not image by image."""
    if not isinstance(m, dict):
        return "not an object"
    if not _finite(m.get("prior")):
        return f"prior {m.get('prior')!r} is not a finite number"
    if not (_finite(m.get("threshold")) and 0 <= m["threshold"] <= 1):
        return f"threshold {m.get('threshold')!r} is not a number in [0, 1]"
    cal = m.get("calibration")
    if not isinstance(cal, dict):
        return "no calibration curve"
    knots, probs = cal.get("knots"), cal.get("probs")
    if not (isinstance(knots, list) and isinstance(probs, list)) or len(knots) < 2 or len(knots) != len(probs):
        return "the calibration curve needs lists of knots and probabilities of one length (at least 2)"
    if not all(_finite(k) for k in knots) or not all(_finite(p) and 0 <= p <= 1 for p in probs):
        return "the calibration curve has a value that is not a finite number (probabilities in [0, 1])"
    if any(b < a for a, b in zip(knots, knots[1:])):
        return "the calibration curve's knots are not in increasing order"
    if any(b < a for a, b in zip(probs, probs[1:])):
        return "the calibration curve is not monotone (a higher map value must not mean a lower probability)"
    base = cal.get("base", (m.get("heldout") or {}).get("positive_share") if isinstance(m.get("heldout"), dict) else None)
    if base is not None and not (_finite(base) and 0 < base < 1):
        return f"base rate {base!r} is not a number strictly between 0 and 1"
    return None


def iter_names(items: Iterable[str]) -> list[str]:
    return [n.strip() for item in items for n in item.split(",") if n.strip()]
