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
from ..io.files import read_input
from ..io.image import IMAGE_SUFFIXES
from ..io.outputs import OutputSet, heatmap_u8, json_bytes, overlay, png_bytes, write_atomic


@dataclass(frozen=True)
class Pair:
    original: Path
    tampered: Path

    @property
    def stem(self) -> str:
        return self.tampered.stem


MAX_PAIRS_FILE = 256_000_000  # bytes; a pairs file of 2 million rows is some 200 MB


def read_pairs_csv(path: Path) -> tuple[list[Pair], list[tuple[str, str]]]:
    """Pairs from a CSV with ``original`` and ``tampered`` columns (paths relative to its folder),
    and (row, reason) for rows that give no pair: ragged, empty fields, listed twice. The file is
    UTF-8 (a BOM is fine) or UTF-16 with its BOM; anything else is refused in one line."""
    data = read_input(path, MAX_PAIRS_FILE, ImlfError) if path.exists() or path.is_symlink() else None
    if data is None:
        raise ImlfError(f"{path}: no such pairs file")
    text = _decode(path, data)
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        rows = list(reader)
    except csv.Error as exc:
        raise ImlfError(f"{path}, line {reader.line_num}: not a readable CSV row ({exc})") from None
    rows = [r for r in rows if any(f.strip() for f in r)]
    if not rows:
        raise ImlfError(f"{path}: the pairs file is empty")
    header = [h.strip().lower() for h in rows[0]]
    if "original" not in header or "tampered" not in header:
        raise ImlfError(f"{path}: a pairs file needs a header row naming the columns original and tampered "
                        f"(its first row is {', '.join(rows[0][:4])})")
    if len(rows) == 1:
        raise ImlfError(f"{path}: the pairs file has a header but no pairs")
    io_, it = header.index("original"), header.index("tampered")
    base = path.parent
    pairs: list[Pair] = []
    problems: list[tuple[str, str]] = []
    seen: set[Pair] = set()
    for n, row in enumerate(rows[1:], start=2):
        where = f"{path.name} row {n}"
        if len(row) != len(header):
            problems.append((where, f"has {len(row)} fields, the header {len(header)}"))
            continue
        original, tampered = row[io_].strip(), row[it].strip()
        if not original or not tampered:
            problems.append((where, "an empty original or tampered field"))
            continue
        pair = Pair(base / original, base / tampered)
        if pair in seen:
            problems.append((where, f"the pair {original}, {tampered} is listed twice"))
            continue
        seen.add(pair)
        pairs.append(pair)
    return pairs, problems


def _decode(path: Path, data: bytes) -> str:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        encoding = "utf-16"
    else:
        encoding = "utf-8-sig"
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        raise ImlfError(f"{path}: not {'UTF-16' if encoding == 'utf-16' else 'UTF-8'} text (byte "
                        f"0x{data[exc.start]:02x} at offset {exc.start}); save the pairs file as UTF-8") from None


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
    """An output stem per pair, all different: the first pair of a stem keeps it, later ones get
    ``-2``, ``-3``, ... skipping every name another pair has or was given (``c/a.jpg`` after
    ``tamp/a.jpg`` must not take the name of ``c/a-2.jpg``). Names are compared case-insensitively,
    as some file systems do."""
    taken = {p.stem.lower() for p in pairs}
    used: set[str] = set()
    out = {}
    for p in pairs:
        stem = p.stem
        if stem.lower() in used:
            n = 2
            while f"{stem}-{n}".lower() in taken or f"{stem}-{n}".lower() in used:
                n += 1
            stem = f"{stem}-{n}"
        used.add(stem.lower())
        out[p] = stem
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
    outputs = {k: str(v) for k, v in paths.items()}
    with OutputSet(overwrite, mark=paths["json"]) as out:
        out.write(paths["mask"], mask_png(result.mask))
        out.write(paths["change"], png_bytes(heatmap_u8(result.soft)))
        out.write(paths["overlay"], png_bytes(overlay(tampered_rgb, result.soft, result.mask)))
        out.write(paths["json"], json_bytes({**report, "outputs": outputs}))
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
        with OutputSet(self.overwrite, mark=t["mask"]) as out:  # dataset.json lists images whose mask exists
            out.write(t["image"], data)
            out.write(t["report"], json_bytes(report))
            out.write(t["mask"], mask_png(mask))
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
