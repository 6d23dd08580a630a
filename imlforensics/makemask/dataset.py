"""Pairs in, a dataset out: the batch side of ``imlf make-mask``.

Pairs come from a CSV file (columns ``original`` and ``tampered``, paths relative to the file's
folder, as the ``pairs.csv`` of the project's benchmark data) or from two folders whose files are
matched by name (the same file name, else the same stem). The dataset written is laid out as
IMDL-BenCo reads it, so ``imlf eval`` and training code take it as it is:

    DATASET/Tp/<tampered file>          the tampered image, byte for byte
    DATASET/Gt/<stem>_gt.png            its mask, 0/255
    DATASET/dataset.json                [["Tp/<file>", "Gt/<stem>_gt.png"], ...]
    DATASET/reports/<stem>.json         what make-mask measured (registration, thresholds, ...)
    DATASET/failed.csv                  the pairs that gave no mask, with the reason
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ImlfError, OutputError
from ..io.image import IMAGE_SUFFIXES
from ..io.outputs import heatmap_u8, json_bytes, overlay, png_bytes, write_atomic


@dataclass(frozen=True)
class Pair:
    original: Path
    tampered: Path

    @property
    def stem(self) -> str:
        return self.tampered.stem


def read_pairs_csv(path: Path) -> list[Pair]:
    """Pairs from a CSV with ``original`` and ``tampered`` columns (paths relative to its folder)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise ImlfError(f"{path}: cannot read the pairs file ({exc.strerror or exc})") from None
    rows = list(csv.DictReader(io.StringIO(text)))
    if not rows or not {"original", "tampered"} <= set(rows[0]):
        raise ImlfError(f"{path}: a pairs file needs the columns original and tampered")
    base = path.parent
    return [Pair(base / r["original"].strip(), base / r["tampered"].strip()) for r in rows
            if (r.get("original") or "").strip() and (r.get("tampered") or "").strip()]


def match_folders(originals: Path, tampered: Path) -> tuple[list[Pair], list[str]]:
    """Pairs of files with the same name (else the same stem) in the two folders, and the names
    of tampered images that have no original."""

    def images(folder: Path) -> list[Path]:
        return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)

    by_name = {p.name: p for p in images(originals)}
    by_stem: dict[str, list[Path]] = {}
    for p in by_name.values():
        by_stem.setdefault(p.stem, []).append(p)
    pairs, unmatched = [], []
    for t in images(tampered):
        o = by_name.get(t.name)
        if o is None and len(by_stem.get(t.stem, [])) == 1:
            o = by_stem[t.stem][0]
        if o is None:
            unmatched.append(t.name)
        else:
            pairs.append(Pair(o, t))
    return pairs, unmatched


def unique_stems(pairs: list[Pair]) -> dict[Pair, str]:
    """An output stem per pair; pairs whose tampered files share a stem get a numbered suffix."""
    seen: dict[str, int] = {}
    out = {}
    for p in pairs:
        n = seen.get(p.stem, 0)
        seen[p.stem] = n + 1
        out[p] = p.stem if n == 0 else f"{p.stem}-{n + 1}"
    return out


def mask_png(mask: np.ndarray) -> bytes:
    return png_bytes(mask.astype(np.uint8) * 255)


OUTPUT_SUFFIXES = (".mask.png", ".change.png", ".overlay.png", ".json")


def write_outputs(result: Any, tampered_rgb: np.ndarray, out_dir: Path, stem: str, overwrite: bool,
                  report: dict[str, Any]) -> dict[str, str]:
    """The single-pair outputs in ``out_dir``: mask, soft change map, overlay and JSON report
    (the report last: its presence marks completion)."""
    paths = {k: out_dir / f"{stem}{s}" for k, s in zip(("mask", "change", "overlay", "json"), OUTPUT_SUFFIXES)}
    if not overwrite:
        for p in paths.values():
            if p.exists():
                raise OutputError(f"{p} exists (use --overwrite to replace it)")
    write_atomic(paths["mask"], mask_png(result.mask), overwrite)
    write_atomic(paths["change"], png_bytes(heatmap_u8(result.soft)), overwrite)
    write_atomic(paths["overlay"], png_bytes(overlay(tampered_rgb, result.soft, result.mask)), overwrite)
    outputs = {k: str(v) for k, v in paths.items()}
    write_atomic(paths["json"], json_bytes({**report, "outputs": outputs}), overwrite)
    return outputs


class DatasetWriter:
    """Writes pairs' results into an IMDL-BenCo dataset folder (see the module docstring)."""

    def __init__(self, root: Path, overwrite: bool):
        self.root, self.overwrite = root, overwrite
        self.done = 0
        self.failed: list[tuple[str, str, str]] = []
        for sub in ("Tp", "Gt", "reports"):
            try:
                (root / sub).mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise OutputError(f"cannot create {root / sub} ({exc.strerror or exc})") from None

    def targets(self, pair: Pair, stem: str) -> dict[str, Path]:
        name = stem + pair.tampered.suffix.lower()
        return {"image": self.root / "Tp" / name, "mask": self.root / "Gt" / f"{stem}_gt.png",
                "report": self.root / "reports" / f"{stem}.json"}

    def check(self, pair: Pair, stem: str) -> None:
        """Refuse, before any work, a pair whose outputs exist (unless overwriting)."""
        if not self.overwrite:
            for p in self.targets(pair, stem).values():
                if p.exists():
                    raise OutputError(f"{p} exists (use --overwrite to replace it)")

    def add(self, pair: Pair, stem: str, mask: np.ndarray, report: dict[str, Any]) -> None:
        t = self.targets(pair, stem)
        try:
            data = pair.tampered.read_bytes()
        except OSError as exc:
            raise ImlfError(f"{pair.tampered}: cannot read ({exc.strerror or exc})") from None
        write_atomic(t["mask"], mask_png(mask), self.overwrite)
        write_atomic(t["image"], data, self.overwrite)
        write_atomic(t["report"], json_bytes(report), self.overwrite)
        self.done += 1

    def fail(self, pair: Pair, reason: str) -> None:
        self.failed.append((str(pair.original), str(pair.tampered), reason))

    def close(self) -> None:
        """dataset.json (every tampered image in Tp/ that has its mask in Gt/, this run's and
        earlier ones') and failed.csv (this run's failures)."""
        images = {p.stem: p for p in (self.root / "Tp").iterdir() if p.is_file() and not p.name.startswith(".")}
        rows = sorted([f"Tp/{images[m.name[:-len('_gt.png')]].name}", f"Gt/{m.name}"]
                      for m in (self.root / "Gt").glob("*_gt.png") if m.name[:-len("_gt.png")] in images)
        write_atomic(self.root / "dataset.json", (json.dumps(rows, indent=1) + "\n").encode(), True)
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["original", "tampered", "reason"])
        w.writerows(self.failed)
        write_atomic(self.root / "failed.csv", buf.getvalue().encode(), True)
