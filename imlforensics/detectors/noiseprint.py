"""Noiseprint and Noiseprint++: a camera-model noise fingerprint, with blind localization.

Noiseprint: D. Cozzolino, L. Verdoliva, "Noiseprint: a CNN-based camera model fingerprint", IEEE
TIFS 15, 2020 (arXiv:1808.08396); official code grip-unina/noiseprint. Noiseprint++: F. Guillaro,
D. Cozzolino, A. Sud, N. Dufour, L. Verdoliva, "TruFor: Leveraging all-round clues for trustworthy
image forgery detection and localization", CVPR 2023 (grip-unina/TruFor).

What runs, as in the official code:

1. **Network choice.** Noiseprint has one DnCNN per JPEG quality: the quality is estimated from
   the file's luminance quantization table (the official ``jpeg_qtableinv``), clamped to 51..100;
   any other file uses the network for 101 (not JPEG). When the weights of that quality are not
   cached, the nearest cached quality is used and the output says so. Noiseprint++ is one network.
2. **Residual.** Noiseprint: luminance 0.299 R + 0.587 G + 0.114 B of the 0..255 values, / 256.
   Noiseprint++: RGB / 256. Images over 1,050,000 pixels run in 1024 x 1024 tiles with 34 pixels of
   context on each side (the receptive field is 35 x 35, so tiling changes nothing).
3. **Blind localization** (:mod:`.noiseprint_blind`): co-occurrence statistics of the residual on
   64 x 64 windows every 8 pixels, PCA, EM for one Gaussian plus an outlier class (seed 0). The
   official map is each window's Mahalanobis distance to the Gaussian. Noiseprint++'s residual is
   about 4.7 times weaker than Noiseprint's, so it is multiplied by ``NPP_GAIN`` before this step
   (otherwise the official flatness test rejects every window).

Heatmap (our choice, stated): the official map is each window's Mahalanobis distance to the
Gaussian, heavy-tailed (10 to 10^5). It becomes heat by a robust z-score of its logarithm against
the image's valid windows (median, MAD) and ``logistic(z - 3)``: 0.5 means three robust standard
deviations above the typical window. High = unlike the bulk of the image = suspected. The
official display shows the map inverted, and the official evaluation picks the polarity per image
against the ground truth, which a detector cannot do. Windows the fit left out get the lowest
value. The heat is monotone in the official map, so rank measures on its grid are unchanged.

Small images: under about 0.3 MP the EM has few windows and often finds a single population: no
outliers (share < 1%), or a Gaussian holding fewer windows than its 560 parameters, so that it
sits on a handful of windows and the outlier class takes the image. Measured on 22 tampered CASIA
v1 images (384x256, 720 windows): every one (21 with a map; one had < 50 valid windows); the
Gaussian held 2.5% of the windows and the official map's pixel AUC was 0.43. ``small_map="auto"``
(default) then uses a robust local-energy map of the residual instead (:func:`energy_map`; pixel
AUC 0.48, F1 at 0.5 0.07 against 0.00 on the same images: better, though neither is useful there)
and says so in the notes; ``"em"`` keeps the official map (all zeros when fewer than 50 windows
are valid), ``"energy"`` always uses the energy map.

Image score: the mean heat of the hottest 2% of pixels (as the project's other map detectors).

Extra outputs: the layer ``noiseprint`` (the residual, clipped to its range away from a 34-pixel
border and scaled to [0, 1]: the authors' "noiseprint view", written as ``<stem>.noiseprint.png``);
the residual itself (``Prediction.raw["noiseprint"]``, float32, image size) is what ``--save-raw``
writes as ``<stem>.noiseprint.npy``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ImlfError
from ..io.image import ImageData
from .base import Detector
from .deep import resolve_device
from .noiseprint_blind import BlindResult, blind_map, grid_to_image
from .registry import register_detector

LARGE_LIMIT = 1_050_000   # pixels; larger images run in tiles
SLIDE = 1024
OVERLAP = 34
QF_MIN, QF_NOT_JPEG = 51, 101
NPP_GAIN = 4.7            # Noiseprint++ residual -> Noiseprint's scale for the blind step
SMALL_PIXELS = 300_000
SMALL_MAPS = ("auto", "em", "energy")
HEAT_SLOPE, HEAT_CENTRE = 1.0, 3.0  # heat 0.5 at 3 robust SDs above the median window
# The EM found one population when the outlier class is (almost) empty, or when the Gaussian holds
# fewer windows than it has parameters (32 means + 528 covariances): then it sits on a handful of
# windows and the outlier class takes the image (CASIA v1's 0.1 MP images: 2.5% Gaussian, 18 windows).
MIN_OUTLIER_SHARE = 0.01
GAUSSIAN_PARAMETERS = 32 + 32 * 33 // 2

# ITU-T T.81 Annex K luminance table (natural order), as the official jpeg_qtableinv uses it
_STD_LUMA = np.array([
    [16, 11, 10, 16, 24, 40, 51, 61], [12, 12, 14, 19, 26, 58, 60, 55],
    [14, 13, 16, 24, 40, 57, 69, 56], [14, 17, 22, 29, 51, 87, 80, 62],
    [18, 22, 37, 56, 68, 109, 103, 77], [24, 35, 55, 64, 81, 104, 113, 92],
    [49, 64, 78, 87, 103, 121, 120, 101], [72, 92, 95, 98, 112, 100, 103, 99]], dtype=np.float64)


def jpeg_quality(luma_table: np.ndarray) -> int:
    """The official ``jpeg_qtableinv`` of a luminance table (natural order), clamped to 51..100."""
    h = np.asarray(luma_table, dtype=np.float64).reshape(8, 8)
    if np.all(h == 1):
        return 100
    down = ((2 * h - 1) / (2 * _STD_LUMA))[h > 1].max()
    below = h < 32767
    up = ((2 * h + 1) / (2 * _STD_LUMA))[below].min() if below.any() else None
    if up is None:
        q = 1.0
    elif down > 1 and up > 1:
        q = np.ceil(50 / up)
    elif up < 1:
        q = np.ceil(50 * (2 - up))
    else:
        q = 50.0
    return int(np.clip(q, QF_MIN, 100))


def image_quality(img: ImageData) -> int:
    """The Noiseprint network an image needs: its JPEG quality, or 101 for any other input."""
    if not img.is_jpeg:
        return QF_NOT_JPEG
    from PIL import Image

    try:
        with Image.open(img.path) as im:
            tables = getattr(im, "quantization", None) or {}
    except OSError:
        tables = {}
    if 0 not in tables:
        return QF_NOT_JPEG
    return jpeg_quality(np.asarray(tables[0]))


def official_pixels(img: ImageData) -> np.ndarray:
    """The RGB pixels as the authors' pipeline decoded them. Their outputs were made with Pillow 4.2.1,
    whose wheels decode JPEG with IJG libjpeg 9 (chroma upsampled by scaled DCT); today's Pillow
    uses libjpeg-turbo, which upsamples chroma differently: on 4:2:0 files gray levels differ by up
    to a few units, and the residual (a noise extractor) follows them. So JPEG files are decoded
    again with libjpeg 9b through jpeglib; other inputs use the stored pixels unchanged."""
    if not img.is_jpeg:
        return img.pixels
    import jpeglib

    try:
        with jpeglib.version("9b"):
            rgb = np.asarray(jpeglib.read_spatial(str(img.path)).spatial)
    except Exception:  # noqa: BLE001  (any decoder failure: keep the pixels already decoded)
        return img.pixels
    if rgb.ndim == 3 and rgb.shape[2] == 1:
        rgb = np.repeat(rgb, 3, axis=2)
    if rgb.shape != img.pixels.shape or rgb.dtype != np.uint8:
        return img.pixels
    return rgb


def run_tiled(net, x: np.ndarray, device: str = "cpu") -> np.ndarray:
    """The network on ``x`` (C, H, W) float32, in the official tiles when over LARGE_LIMIT pixels."""
    import torch

    def forward(a: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            t = torch.from_numpy(np.ascontiguousarray(a))[None].to(device)
            return net(t)[0, 0].float().cpu().numpy()

    h, w = x.shape[1:]
    if h * w <= LARGE_LIMIT:
        return forward(x)
    out = np.zeros((h, w), np.float32)
    for i in range(0, h, SLIDE):
        for j in range(0, w, SLIDE):
            i0, j0 = max(i - OVERLAP, 0), max(j - OVERLAP, 0)
            r = forward(x[:, i0:min(i + SLIDE + OVERLAP, h), j0:min(j + SLIDE + OVERLAP, w)])
            r = r[i - i0:i - i0 + SLIDE, j - j0:j - j0 + SLIDE]
            out[i:i + r.shape[0], j:j + r.shape[1]] = r
    return out


def one_population(result: BlindResult) -> bool:
    """Whether the EM found a single population (see GAUSSIAN_PARAMETERS)."""
    gaussian = result.valid.sum() * (1.0 - result.outlier_prob)
    return result.outlier_prob < MIN_OUTLIER_SHARE or gaussian < GAUSSIAN_PARAMETERS


def heat_grid(result: BlindResult, slope: float = HEAT_SLOPE, centre: float = HEAT_CENTRE) -> np.ndarray:
    """The official map (Mahalanobis distance per window) as heat in [0, 1]: the robust z-score of
    its logarithm against the valid windows' median and MAD, then ``logistic(slope (z - centre))``.
    Monotone in the official map; windows left out of the fit get the lowest valid value."""
    level = np.log(np.maximum(result.grid, 1e-12))
    med = float(np.median(level[result.valid]))
    mad = max(1.4826 * float(np.median(np.abs(level[result.valid] - med))), 1e-6)
    heat = 1.0 / (1.0 + np.exp(-slope * ((level - med) / mad - centre)))
    heat[~result.valid] = heat[result.valid].min()
    return heat


def energy_map(res: np.ndarray, block: int = 16, pool: int = 3) -> np.ndarray:
    """Robust local energy of the residual: log of the median |residual| per block, pooled over
    ``pool`` x ``pool`` blocks, as a robust z-score against the image's median and MAD, mapped by
    ``logistic(2 (|z| - 2))``; nearest-block upsampled to the residual's size."""
    h, w = res.shape
    nb0, nb1 = max(h // block, 1), max(w // block, 1)
    a = np.abs(res[:nb0 * block, :nb1 * block]).reshape(nb0, min(block, h), nb1, min(block, w))
    level = np.log(np.median(a, axis=(1, 3)) + 1e-3)
    from scipy import ndimage  # imported here: every process that registers detectors imports this module

    level = ndimage.uniform_filter(level, pool, mode="nearest")
    med = np.median(level)
    mad = max(1.4826 * np.median(np.abs(level - med)), 0.05)
    z = np.abs(level - med) / mad
    heat = 1.0 / (1.0 + np.exp(-2.0 * (z - 2.0)))
    rows = np.minimum(np.arange(h) // block, nb0 - 1)
    cols = np.minimum(np.arange(w) // block, nb1 - 1)
    return heat[np.ix_(rows, cols)].astype(np.float32)


def noiseprint_view(res: np.ndarray) -> np.ndarray:
    """The residual scaled to [0, 1] by its range away from a 34-pixel border (the authors' display)."""
    inner = res[OVERLAP:-OVERLAP, OVERLAP:-OVERLAP] if min(res.shape) > 2 * OVERLAP + 1 else res
    lo, hi = float(inner.min()), float(inner.max())
    return ((np.clip(res, lo, hi) - lo) / max(hi - lo, 1e-12)).astype(np.float32)


class _NoiseprintBase(Detector):
    kind = "deep"
    version = "1"
    license = "GRIP-UNINA non-profit (weights; not redistributable)"
    gain = 1.0

    def __init__(self, weights: str | Path | None = None, device: str = "auto", small_map: str = "auto") -> None:
        if small_map not in SMALL_MAPS:
            raise ValueError(f"small_map must be one of {', '.join(SMALL_MAPS)}")
        self.device = resolve_device(device)
        self.small_map = small_map
        self.weights = Path(weights) if weights else None
        self._nets: dict[int, Any] = {}

    def network_input(self, img: ImageData) -> np.ndarray:
        raise NotImplementedError

    def luma(self, img: ImageData) -> np.ndarray:
        """Luminance / 256 (float32), as the blind step's saturation test reads it."""
        return (img.gray / np.float32(256.0)).astype(np.float32)

    def network(self, img: ImageData) -> tuple[Any, list[str], dict[str, Any]]:
        raise NotImplementedError

    def residual(self, img: ImageData) -> tuple[np.ndarray, list[str], dict[str, Any]]:
        """The network's output at the image's size (float32), with notes and extras."""
        net, notes, extras = self.network(img)
        return run_tiled(net, self.network_input(img), self.device), notes, extras

    def analyse(self, img: ImageData) -> tuple[np.ndarray, float, dict[str, Any]]:
        res, notes, extras = self.residual(img)
        heat, more_notes, more = self.localize(res, img)
        extras.update(more)
        extras["notes"] = notes + more_notes
        extras["device"] = self.device
        flat = np.sort(heat, axis=None)
        return heat, float(flat[-max(1, flat.size // 50):].mean()), extras

    def localize(self, res: np.ndarray, img: ImageData) -> tuple[np.ndarray, list[str], dict[str, Any]]:
        """Heatmap from a residual (see the module docstring), with notes and extras (layers included)."""
        notes: list[str] = []
        extras: dict[str, Any] = {"_layers": {"noiseprint": noiseprint_view(res)},
                                  "_raw": {"noiseprint": res.astype(np.float32)}}
        mode = self.small_map
        result = None if mode == "energy" else blind_map(res * self.gain, self.luma(img))
        small = img.height * img.width < SMALL_PIXELS
        one = result is None or result.grid is None or one_population(result)
        if result is not None:
            extras["em"] = {"valid_windows": int(result.valid.sum()), "windows": int(result.valid.size),
                            "outlier_prob": None if result.grid is None else round(result.outlier_prob, 4),
                            "one_population": bool(one)}
        if mode == "energy" or (mode == "auto" and small and one):
            heat = energy_map(res)
            if mode == "auto":
                notes.append("small image: the EM found one population only, so the map is the residual's "
                             "robust local energy (small_map='em' keeps the official map)")
            extras["map"] = "energy"
        elif result.grid is None:
            heat = np.zeros(res.shape, np.float32)
            notes.append(f"too few analysable 64x64 windows ({int(result.valid.sum())} < 50): "
                         "image too small or too uniform, the map is empty")
            extras["map"] = "none"
        else:
            heat = grid_to_image(heat_grid(result), result.range0, result.range1, res.shape)
            if one:
                notes.append(f"the EM found one population only (outlier share {result.outlier_prob:.3f}): "
                             "the map is unreliable")
            extras["map"] = "em"
        return heat.astype(np.float32), notes, extras

    @classmethod
    def weights_status(cls) -> str:
        from ..weights.noiseprint import cached_status

        return cached_status(cls.name)


@register_detector
class NoiseprintDetector(_NoiseprintBase):
    """Noiseprint (one DnCNN per JPEG quality) with the official blind localization. Options:
    ``weights`` (a folder of the authors' ``net_jpgQ`` checkpoints or a converted safetensors
    file, instead of the cache), ``device`` (auto|cpu|cuda|mps), ``small_map`` (auto|em|energy)."""

    name = "noiseprint"
    cite = "Cozzolino, TIFS 2020"
    needs = "any image"  # (a JPEG's quality picks the network, see the summary)
    paper = ("D. Cozzolino, L. Verdoliva, Noiseprint: a CNN-based camera model fingerprint, "
             "IEEE TIFS 15, 2020 (arXiv:1808.08396)")
    summary = "Noiseprint: camera-model noise residual (DnCNN per JPEG quality), EM on its local statistics"

    def luma(self, img: ImageData) -> np.ndarray:
        """Luminance / 256 of the pixels as the official code decoded them (see :func:`official_pixels`)."""
        if getattr(self, "_luma_of", None) is not img:  # computed once per image (network and blind step)
            rgb = official_pixels(img).astype(np.float32)
            self._luma = ((0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]) / 256.0).astype(np.float32)
            self._luma_of = img
        return self._luma

    def network_input(self, img: ImageData) -> np.ndarray:
        return self.luma(img)[None]

    def network(self, img: ImageData) -> tuple[Any, list[str], dict[str, Any]]:
        from ..weights.noiseprint import noiseprint_network, noiseprint_qualities

        wanted = image_quality(img)
        available = noiseprint_qualities(self.weights)
        if not available:
            raise ImlfError("no Noiseprint networks found")
        quality = min(available, key=lambda q: (abs(q - wanted), -q))
        notes = []
        if quality != wanted:
            notes.append(f"no network for JPEG quality {wanted}; used the nearest available, {quality}")
        if quality not in self._nets:
            self._nets[quality] = noiseprint_network(quality, self.weights).to(self.device)
        return self._nets[quality], notes, {"quality": wanted, "network": f"net_jpg{quality}"}


@register_detector
class NoiseprintPPDetector(_NoiseprintBase):
    """Noiseprint++ (TruFor's noise extractor) with Noiseprint's blind localization. Options:
    ``weights`` (``noiseprint++.th`` or a converted safetensors file, instead of the cache),
    ``device`` (auto|cpu|cuda|mps), ``small_map`` (auto|em|energy)."""

    name = "noiseprint++"
    cite = "Guillaro, CVPR 2023"
    needs = "any image"
    gain = NPP_GAIN
    paper = ("F. Guillaro, D. Cozzolino, A. Sud, N. Dufour, L. Verdoliva, TruFor: Leveraging all-round clues "
             "for trustworthy image forgery detection and localization, CVPR 2023 (arXiv:2212.10957)")
    summary = "Noiseprint++ (TruFor's noise extractor, RGB), Noiseprint's EM on its local statistics"

    def network_input(self, img: ImageData) -> np.ndarray:
        return np.transpose(img.pixels.astype(np.float32) / np.float32(256.0), (2, 0, 1))

    def network(self, img: ImageData) -> tuple[Any, list[str], dict[str, Any]]:
        from ..weights.noiseprint import noiseprint_pp_network

        if 0 not in self._nets:
            self._nets[0] = noiseprint_pp_network(self.weights).to(self.device)
        return self._nets[0], [], {}


__all__ = ["NoiseprintDetector", "NoiseprintPPDetector", "energy_map", "heat_grid",
           "image_quality", "jpeg_quality", "noiseprint_view", "run_tiled"]
