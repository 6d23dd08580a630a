"""Writing detection results: images, JSON report and raw map, each written atomically.

Every file is first written to a temporary name in the destination folder and then renamed over
its final name, so an interrupted run never leaves a half-written output. An existing output is
never replaced unless ``overwrite`` is set, and an input file is never an output.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..errors import OutputError

OUTPUT_SUFFIXES = {
    "heatmap": ".heatmap.png",
    "mask": ".mask.png",
    "overlay": ".overlay.png",
    "json": ".json",
    "raw": ".heatmap.npy",
}
MAX_BOXES = 100


@dataclass
class OutputPaths:
    heatmap: Path
    mask: Path
    overlay: Path
    json: Path
    raw: Path | None

    def all(self) -> list[Path]:
        return [p for p in (self.heatmap, self.mask, self.overlay, self.json, self.raw) if p is not None]


def output_paths(out_dir: Path, stem: str, save_raw: bool = False) -> OutputPaths:
    def p(kind: str) -> Path:
        return out_dir / f"{stem}{OUTPUT_SUFFIXES[kind]}"

    return OutputPaths(p("heatmap"), p("mask"), p("overlay"), p("json"), p("raw") if save_raw else None)


def check_writable_dir(out_dir: Path) -> None:
    """Create ``out_dir`` if needed and prove that files can be written there."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        if not out_dir.is_dir():
            raise OutputError(f"output folder {out_dir} is not a folder")
        with tempfile.NamedTemporaryFile(dir=out_dir, prefix=".imlf-probe-"):
            pass
    except OutputError:
        raise
    except OSError as exc:
        raise OutputError(f"output folder {out_dir} is not writable ({exc.strerror or exc})") from None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomic(path: Path, data: bytes, overwrite: bool = False) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename."""
    if path.exists() and not overwrite:
        raise OutputError(f"{path} exists (use --overwrite to replace it)")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; outputs get the usual permissions
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
        raise


class OutputSet:
    """The files of one result, written together: when one write fails (a full disk), the files
    this set already wrote, and its completion mark (the JSON written last), are removed, so a
    result is either whole or absent and a plain rerun is not blocked by its own leftovers.

        with OutputSet(overwrite, mark=paths.json) as out:
            out.write(paths.heatmap, data)
            ...
    """

    def __init__(self, overwrite: bool = False, mark: Path | None = None):
        self.overwrite, self.mark = overwrite, mark
        self.written: list[Path] = []

    def write(self, path: Path, data: bytes) -> None:
        write_atomic(path, data, self.overwrite)
        self.written.append(path)

    def __enter__(self) -> "OutputSet":
        return self

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> bool:
        if kind is not None:
            for p in self.written + ([self.mark] if self.mark is not None else []):
                try:
                    p.unlink()
                except OSError:
                    pass
        return False


def png_bytes(arr: np.ndarray) -> bytes:
    """PNG of a gray (H, W) or RGB (H, W, 3) uint8 array."""
    if arr.ndim == 3:
        arr = arr[..., ::-1]  # OpenCV writes BGR
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(arr))
    if not ok:
        raise OutputError("PNG encoding failed")
    return buf.tobytes()


def npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr.astype(np.float32), allow_pickle=False)
    return buf.getvalue()


def heatmap_u8(heatmap: np.ndarray) -> np.ndarray:
    return np.rint(np.clip(heatmap, 0, 1) * 255).astype(np.uint8)


def overlay(rgb: np.ndarray, heatmap: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """The image with the heatmap in colour (turbo) on top, opacity growing with the heat
    (0.15 to 0.7), and the mask's outline drawn in white."""
    colour = cv2.applyColorMap(heatmap_u8(heatmap), cv2.COLORMAP_TURBO)[..., ::-1]
    alpha = np.clip(heatmap, 0, 1).astype(np.float32)
    alpha *= 0.55
    alpha += 0.15
    out = cv2.blendLinear(np.ascontiguousarray(rgb), np.ascontiguousarray(colour), 1.0 - alpha, alpha)
    if mask is not None and mask.any():
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        thickness = max(1, round(max(rgb.shape[:2]) / 500))
        cv2.drawContours(out, contours, -1, (255, 255, 255), thickness)
    return out


def components(mask: np.ndarray, heatmap: np.ndarray, limit: int = MAX_BOXES) -> list[dict[str, Any]]:
    """Bounding boxes of the mask's connected components (8-connectivity), largest first."""
    if not mask.any():
        return []
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    order = np.argsort(-stats[1:, cv2.CC_STAT_AREA])[:limit] + 1
    sums = np.bincount(labels.ravel(), weights=heatmap.ravel().astype(np.float64), minlength=n)
    boxes = []
    for i in order:
        x, y, w, h, area = (int(v) for v in stats[i, :5])
        boxes.append({"x": x, "y": y, "width": w, "height": h, "area": area,
                      "mean_heat": round(float(sums[i] / area), 4)})
    return boxes


def json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode()
