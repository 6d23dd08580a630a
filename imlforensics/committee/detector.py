"""The ``committee`` detector: registered detectors vote on every pixel (CV-DD style).

``load_detector("committee", members="ela,noise,dq", priors="priors.json", voter="prior",
temperature=5, fusion="logit")``. Each member's raw map is calibrated with the curve
``imlf calibrate`` measured, weighted by ``softmax(prior / T)`` (or equally) and fused
(:mod:`imlforensics.committee.fusion`). A member that does not apply to an image (``dq`` on a PNG) or
cannot run at all (a deep model without weights) abstains; the weights are renormalised over the
members that voted and the output lists them. Without ``priors`` the file shipped with the package
for the classical committee is used (measured on CASIA v1, see README).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from ..detectors.base import Detector
from ..detectors.registry import load_detector, register_detector
from ..errors import ImlfError, NotApplicable
from ..io.image import ImageData
from .fusion import Calibration, fuse, member_weights

DEFAULT_PRIORS = Path(__file__).parent / "priors-classical.json"


@register_detector
class Committee(Detector):
    """Options: ``members`` (comma-separated names; default: every member of the priors file),
    ``priors`` (a file from ``imlf calibrate``), ``voter`` (prior|equal), ``temperature`` (5),
    ``fusion`` (logit|mean|vote), ``save_members`` (keep each member's map), ``device``."""

    name = "committee"
    kind = "committee"
    version = "1"
    paper = "CV-DD committee voting, arXiv 2501.07575"
    summary = "calibrated members vote with weights softmax(prior / T); fused heatmap plus agreement map"

    def __init__(self, members: str | list[str] | None = None, priors: str | Path | None = None, voter: str = "prior",
                 temperature: float = 5.0, fusion: str = "logit", save_members: bool = False, device: str = "auto"):
        from .calibrate import read_priors
        from .fusion import FUSIONS, VOTERS

        if voter not in VOTERS or fusion not in FUSIONS or float(temperature) <= 0:
            raise ValueError(f"voter must be {'/'.join(VOTERS)}, fusion {'/'.join(FUSIONS)}, temperature > 0")
        self.doc = read_priors(priors or DEFAULT_PRIORS)
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
        w = member_weights([float(known[n]["prior"]) for n in names], voter, self.temperature)
        self.weights = dict(zip(names, map(float, w)))

    def analyse(self, img: ImageData) -> tuple[np.ndarray, float, dict[str, Any]]:
        raw, rows, notes = {}, [], []
        for n, det in self.members.items():
            t = time.perf_counter()
            try:
                pred = det.predict(img)
            except NotApplicable as exc:
                rows.append({"name": n, "voted": False, "reason": str(exc)})
                continue
            raw[n] = pred.heatmap
            rows.append({"name": n, "voted": True, "score": round(pred.score, 6),
                         "seconds": round(time.perf_counter() - t, 4)})
        rows += [{"name": n, "voted": False, "reason": r} for n, r in self.absent.items()]
        if not raw:
            raise NotApplicable("no committee member applies to this image")
        fused = fuse(raw, self.cal, self.thresholds, self.weights, self.fusion)
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
        return fused.heatmap, float(fused.heatmap.max()), extras


def _is_deep(name: str) -> bool:
    from ..detectors.registry import detector_class

    return detector_class(name).kind == "deep"
