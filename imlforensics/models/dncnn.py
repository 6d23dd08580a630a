"""The 17-level DnCNN of Noiseprint and Noiseprint++, as a plain torch module.

Noiseprint: D. Cozzolino, L. Verdoliva, "Noiseprint: a CNN-based camera model fingerprint",
IEEE TIFS 15, 2020 (arXiv:1808.08396). Noiseprint++: F. Guillaro, D. Cozzolino, A. Sud, N. Dufour,
L. Verdoliva, "TruFor: Leveraging all-round clues for trustworthy image forgery detection and
localization", CVPR 2023. The network is K. Zhang et al.'s DnCNN (IEEE TIP 2017) without the
residual shortcut: 3x3 convolutions with zero padding 1 (TensorFlow's 'SAME'), 64 channels, batch
norm on levels 1..15 (eps 1e-5), ReLU after every level but the last, one output channel.

Layout: an ``nn.Sequential`` whose indices are those of TruFor's ``make_net``: level 0 = conv
``0`` (with bias) + ReLU, levels 1..15 = conv ``3i-1`` (no bias), BatchNorm ``3i``, ReLU; level 16
= conv ``47`` (with bias). So ``noiseprint_pp()`` loads ``noiseprint++.th``'s ``network`` dict
unchanged. Noiseprint's TensorFlow variables map onto the same layout (:func:`from_tensorflow`): the
TF net applies conv, then batch norm without offset, then ``bias/beta``; that beta is the conv bias
on levels 0 and 16 and the BatchNorm bias elsewhere.

Inputs: Noiseprint takes the luminance 0.299 R + 0.587 G + 0.114 B of 0..255 values divided by 256
(one channel); Noiseprint++ takes RGB divided by 256 (three channels), no mean/std.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

LEVELS = 17
FEATURES = 64
BN_EPS = 1e-5


def conv_index(level: int) -> int:
    """Index of level ``level``'s convolution in the Sequential (0, 2, 5, ..., 44, 47)."""
    return 0 if level == 0 else 3 * level - 1


class DnCNN(nn.Sequential):
    """17 levels of 3x3 conv (+ BN on levels 1..15) + ReLU; the last level is linear."""

    def __init__(self, in_channels: int = 1, out_channels: int = 1, levels: int = LEVELS,
                 features: int = FEATURES) -> None:
        layers: list[nn.Module] = []
        for level in range(levels):
            first, last = level == 0, level == levels - 1
            cin = in_channels if first else features
            cout = out_channels if last else features
            layers.append(nn.Conv2d(cin, cout, 3, padding=1, bias=first or last))
            if not (first or last):
                layers.append(nn.BatchNorm2d(features, eps=BN_EPS))
            if not last:
                layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)
        self.in_channels = in_channels


def noiseprint() -> DnCNN:
    """Noiseprint's network (one per JPEG quality; they share this structure): gray in, one channel out."""
    return DnCNN(in_channels=1)


def noiseprint_pp() -> DnCNN:
    """Noiseprint++ (TruFor's noise extractor): RGB / 256 in, one channel out."""
    return DnCNN(in_channels=3)


def from_tensorflow(tf_vars: Mapping[str, np.ndarray], levels: int = LEVELS) -> dict[str, np.ndarray]:
    """Noiseprint's TF variables (``level_i/conv/weights`` [h, w, in, out], ``level_i/bn/*``,
    ``level_i/bias/beta``) as a state dict for :class:`DnCNN` (float32 numpy arrays).

    ``corr_alpha``, ``corr_beta`` and ``global_step`` (training-only) are dropped. Raises KeyError
    naming the first variable that is missing.
    """
    out: dict[str, np.ndarray] = {}
    for level in range(levels):
        c = conv_index(level)
        scope = f"level_{level}"
        out[f"{c}.weight"] = np.ascontiguousarray(np.transpose(tf_vars[f"{scope}/conv/weights"], (3, 2, 0, 1)))
        beta = np.asarray(tf_vars[f"{scope}/bias/beta"])
        if level in (0, levels - 1):
            out[f"{c}.bias"] = beta
            continue
        gamma = np.asarray(tf_vars[f"{scope}/bn/gamma"])
        out[f"{c + 1}.weight"] = gamma
        out[f"{c + 1}.bias"] = beta
        out[f"{c + 1}.running_mean"] = np.asarray(tf_vars[f"{scope}/bn/moving_mean"])
        out[f"{c + 1}.running_var"] = np.asarray(tf_vars[f"{scope}/bn/moving_variance"])
    return {k: v.astype(np.float32) for k, v in out.items()}


def load_numpy_state(model: DnCNN, state: Mapping[str, np.ndarray]) -> DnCNN:
    """Load a numpy state dict strictly (``num_batches_tracked`` may be absent) and set eval mode."""
    tensors = {k: torch.from_numpy(np.asarray(v)) for k, v in state.items()}
    for key, value in model.state_dict().items():
        if key.endswith("num_batches_tracked") and key not in tensors:
            tensors[key] = value
    model.load_state_dict(tensors, strict=True)
    return model.eval()
