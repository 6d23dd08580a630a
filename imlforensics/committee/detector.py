"""The ``committee`` detector: registered detectors vote on every pixel (CV-DD style).

``load_detector("committee", members="ela,noise,dq", priors="priors.json", voter="prior",
temperature=5, fusion="logit")``. Each member's raw map is calibrated with the curve
``imlf calibrate`` measured, weighted by ``softmax(prior / T)`` (or equally) and fused
(:mod:`imlforensics.committee.fusion`). A member that does not apply to an image (``dq`` on a PNG) or
cannot run at all (a deep model without weights) abstains; the weights are renormalised over the
members that voted and the output lists them. A member that runs but sees no trace of its kind
(``Prediction.applicable`` False: ``dq`` without double compression, ``copymove`` without a duplicated
region, ``jpeg-grid`` without a JPEG grid) abstains too, instead of voting "authentic". The
``learned`` voter stacks the voting members' log-likelihood ratios with the logistic regression
stored in the priors file. Without ``voter`` the file's default (the voter ``imlf calibrate``
measured best across its datasets) is used; without ``priors`` the file shipped with the package
(measured on CASIA v1 and CocoGlide, see README). The image score is the fused map's 99.5th
percentile through the file's image calibration for the voter (a probability that the image is
tampered), or that percentile itself for files without one.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from ..detectors.base import Detector, Prediction
from ..detectors.registry import load_detector, register_detector
from ..errors import ImlfError, NotApplicable
from ..io.image import ImageData
from .calibrate import image_statistic
from .fusion import Calibration, Fused, Stacker, combine, member_weights, sigmoid

DEFAULT_PRIORS = Path(__file__).parent / "priors-classical.json"


@register_detector
class Committee(Detector):
    """Options: ``members`` (comma-separated names; default: every member of the priors file),
    ``priors`` (a file from ``imlf calibrate``), ``voter`` (prior|equal|learned; default: the
    file's), ``temperature`` (5),
    ``fusion`` (logit|mean|vote), ``save_members`` (keep each member's map), ``device``,
    ``external`` (members run elsewhere, e.g. in the Ray engine's GPU actors: they are not loaded
    here, and :meth:`predict_given` takes their results for each image)."""

    name = "committee"
    kind = "committee"
    version = "1"
    paper = ("Jiacheng Cui, Zhaoyi Li, Xiaochen Ma, Xinyue Bi, Yaxin Luo, Zhiqiang Shen, Dataset Distillation via "
             "Committee Voting (CV-DD), arXiv 2025 (arXiv:2501.07575)")
    cite = "Cui, arXiv 2025"
    summary = "calibrated members vote with weights softmax(prior / T); fused heatmap plus agreement map"

    def __init__(self, members: str | list[str] | None = None, priors: str | Path | None = None,
                 voter: str | None = None,
                 temperature: float = 5.0, fusion: str = "logit", save_members: bool = False, device: str = "auto",
                 external: list[str] | tuple[str, ...] = ()):
        from .calibrate import read_priors
        from .fusion import FUSIONS, VOTERS

        self.doc = read_priors(priors or DEFAULT_PRIORS)
        spec = self.doc.get("fusion") or {}
        voter = voter or spec.get("default_voter", "prior")
        if voter not in VOTERS or fusion not in FUSIONS or not float(temperature) > 0 or float(temperature) == float("inf"):
            raise ValueError(f"voter must be {'/'.join(VOTERS)}, fusion {'/'.join(FUSIONS)}, temperature > 0")
        self.stacker: Stacker | None = None
        if voter == "learned":
            if "stacker" not in spec:
                raise ImlfError(f"{priors or DEFAULT_PRIORS} has no learned voter (re-run `imlf calibrate`)")
            try:
                self.stacker = Stacker.from_json(spec["stacker"])
            except (KeyError, TypeError, ValueError) as exc:
                raise ImlfError(f"{priors or DEFAULT_PRIORS}: bad learned voter ({exc})") from None
        self.image_cal = (spec.get("image") or {}).get(voter)
        # the decision threshold was measured for the logit fusion (and the learned voter)
        self.decision = (spec.get("decision") or {}).get(voter) if fusion == "logit" or voter == "learned" else None
        # ... and so was the relative decision (a share of the image's peak; files before 0.3 have none)
        self.relative = (spec.get("relative") or {}).get(voter) if self.decision is not None else None
        known = self.doc["members"]
        names = members.split(",") if isinstance(members, str) else list(members or known)
        names = [n.strip() for n in names if n.strip()]
        missing = [n for n in names if n not in known]
        if missing:
            raise ImlfError(f"no prior for {', '.join(missing)} in {priors or DEFAULT_PRIORS} "
                            "(run `imlf calibrate` with these members)")
        self.voter, self.temperature, self.fusion, self.save_members = voter, float(temperature), fusion, save_members
        self.members: dict[str, Detector] = {}
        self.absent: dict[str, str] = {}
        for n in names:
            if n in external:
                self.members[n] = Given(n)
                continue
            try:
                opts = {"device": device} if _is_deep(n) else {}
                self.members[n] = load_detector(n, **opts)
            except ImlfError as exc:  # e.g. a deep model without weights: it abstains
                self.absent[n] = str(exc)
        if not self.members:
            raise ImlfError("no committee member can run: " + "; ".join(f"{k}: {v}" for k, v in self.absent.items()))
        # files of format 1 record no base rate: their held-out tampered share stands in for it
        self.cal = {n: Calibration.from_json(known[n]["calibration"], known[n].get("heldout", {}).get("positive_share"))
                    for n in names}
        self.thresholds = {n: float(known[n]["threshold"]) for n in names}
        self.priors = {n: float(known[n]["prior"]) for n in names}
        w = member_weights([self.priors[n] for n in names], voter, self.temperature)
        self.weights = dict(zip(names, map(float, w)))

    def combine(self, raw: dict[str, np.ndarray], shape: tuple[int, int]) -> tuple[Fused, float]:
        """Fuse the maps of the members that voted; return the fusion and the image score."""
        fused = combine(raw, self.cal, self.thresholds, self.priors, self.stacker, self.voter, self.temperature,
                        shape, self.fusion, self.decision, self.relative)
        stat = image_statistic(fused.heatmap, fused.peak)
        if self.image_cal:
            score = float(sigmoid(np.array(self.image_cal["a"] * stat + self.image_cal["b"])))
        else:
            score = float(1.0 / (1.0 + np.exp(-stat)))
        return fused, score

    def predict_given(self, img: ImageData, given: dict[str, Any]) -> Prediction:
        """:meth:`predict` with the results of the ``external`` members supplied: for each, its
        :class:`Prediction` or the exception it raised (a ``NotApplicable`` makes it abstain)."""
        for n, det in self.members.items():
            if isinstance(det, Given):
                det.result = given[n]
        try:
            return self.predict(img)
        finally:
            for det in self.members.values():
                if isinstance(det, Given):
                    det.result = None

    def memory_needed(self, img: ImageData) -> int:
        # members run one after another; their maps (float32) are kept for the fusion
        peak = max((m.memory_needed(img) for m in self.members.values()), default=0)
        return peak + img.width * img.height * (4 * len(self.members) + 24)

    def analyse(self, img: ImageData) -> tuple[np.ndarray, float, dict[str, Any]]:
        raw, rows, notes = {}, [], []
        for n, det in self.members.items():
            t = time.perf_counter()
            try:
                pred = det.predict(img)
            except NotApplicable as exc:
                rows.append({"name": n, "voted": False, "reason": str(exc)})
                continue
            if not pred.applicable:
                rows.append({"name": n, "voted": False, "reason": "saw no trace of its kind (abstains)",
                             "score": round(pred.score, 6), "seconds": round(time.perf_counter() - t, 4)})
                continue
            raw[n] = pred.heatmap
            rows.append({"name": n, "voted": True, "score": round(pred.score, 6),
                         "seconds": round(time.perf_counter() - t, 4)})
        rows += [{"name": n, "voted": False, "reason": r} for n, r in self.absent.items()]
        if not raw and not any("seconds" in r for r in rows):
            raise NotApplicable("no committee member applies to this image")
        fused, score = self.combine(raw, (img.height, img.width))
        for r in rows:
            r["weight"] = round(fused.weights.get(r["name"], 0.0), 6)
        abstained = [r["name"] for r in rows if not r["voted"]]
        if abstained:
            notes.append(f"abstained: {', '.join(abstained)}")
        layers = {"agreement": fused.agreement, "disagreement": np.clip(4.0 * fused.disagreement, 0, 1)}
        if self.save_members:
            layers.update({f"member-{n}": m for n, m in raw.items()})
        extras = {"notes": notes, "members": rows, "voter": self.voter, "temperature": self.temperature,
                  "fusion": self.fusion, "priors": {"dataset": self.doc.get("dataset"), "metric": self.doc.get("prior_metric")},
                  "_layers": layers}
        return fused.heatmap, score, extras


class Given(Detector):
    """Stands in for a member that ran elsewhere: ``predict`` returns (or raises) its result."""

    def __init__(self, name: str, kind: str = "deep"):
        self.name, self.kind = name, kind  # type: ignore[misc]  (the instance takes the member's)
        self.result: Any = None

    def predict(self, image: Any) -> Prediction:
        if isinstance(self.result, BaseException):
            raise self.result
        if self.result is None:
            raise ImlfError(f"no result was supplied for committee member {self.name}")
        return self.result


def _is_deep(name: str) -> bool:
    from ..detectors.registry import detector_class

    return detector_class(name).kind == "deep"
