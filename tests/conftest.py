"""Shared fixtures: the project's own example forgeries and (when present) the benchmark data."""

from __future__ import annotations

import io
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
# ../shared next to the checkout (CI); IMLF_SHARED overrides it (a git worktree elsewhere)
SHARED = Path(os.environ["IMLF_SHARED"]) if os.environ.get("IMLF_SHARED") else ROOT.parent / "shared"
SHARED_DATA = SHARED / "data"
SHARED_WEIGHTS = SHARED / "weights"


def read_rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def read_gt(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("L")) > 127


def jpeg_bytes(rgb: np.ndarray, quality: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def jpeg_roundtrip(rgb: np.ndarray, quality: int) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(jpeg_bytes(rgb, quality))).convert("RGB"))


@pytest.fixture(scope="session")
def examples() -> dict[str, tuple[Path, np.ndarray | None]]:
    """name -> (image path, boolean mask or None for authentic), from examples/dataset.json."""
    rows = json.loads((EXAMPLES / "dataset.json").read_text())
    out = {}
    for image, mask in rows:
        out[Path(image).stem] = (EXAMPLES / image, None if mask == "Negative" else read_gt(EXAMPLES / mask))
    return out


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data, or skip the test when it is absent (it is never part of the project)."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is absent")
    return SHARED_DATA


@pytest.fixture(scope="session")
def shared_weights() -> Path:
    """../shared/weights (the authors' real Noiseprint weights and demo outputs), or skip."""
    if not SHARED_WEIGHTS.is_dir():
        pytest.skip("../shared/weights is absent")
    return SHARED_WEIGHTS


@pytest.fixture
def toy_detector(monkeypatch):
    """Registers 'toy-bright' (heat = luma / 255) for tests of the plumbing around detectors."""
    from imlforensics.detectors import registry
    from imlforensics.detectors.base import Detector

    class ToyBright(Detector):
        name = "toy-bright"
        paper = "none (test double)"

        def analyse(self, img):
            return img.gray / 255.0, float(img.gray.max() / 255.0), {"notes": ["toy"]}

    monkeypatch.setitem(registry._DETECTORS, "toy-bright", ToyBright)
    return ToyBright


@pytest.fixture
def one_torch_thread():
    """Metrics run in torch; for many small maps one thread is faster than a contended pool."""
    import torch

    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


class QuietHandler(BaseHTTPRequestHandler):
    """A request handler that does not log to stderr (the test servers' base)."""

    def log_message(self, *args):
        pass


class LocalHTTPServer:
    """A server on 127.0.0.1 (a free port) in a daemon thread, for download tests that never leave
    the machine; ``url`` is its base address."""

    def serve(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
