"""Mesorch: multi-scale CNN + Transformer orchestration for image manipulation localization.

Zhu, Ma, Du, Zhou et al., "Mesoscopic Insights: Orchestrating Multi-scale & Hybrid Architecture
for Image Manipulation Localization", AAAI 2025 (arXiv 2412.13753; code scu-zjz/Mesorch, MIT).

* A parameter-free DCT module splits the image's frequencies: the high-pass image (DCT with the
  top-left 5% block zeroed, inverse DCT, min-max per sample) and the low-pass image (only the
  lowest 5% of rows or columns kept).
* Local branch: timm's ConvNeXt-T on RGB + high (6 channels; its stem conv has no bias; the unused
  classification head stays in the checkpoint). Global branch: SegFormer MiT-B3 on RGB + low.
* The 8 stage outputs are brought to 1/4 resolution by transposed-convolution stacks, each reduced
  to one channel by a 1x1 conv, and mixed by a per-pixel softmax gate computed from RGB + high + low.
* The logits are upsampled bilinearly (align_corners=True) to 512 x 512.

Mesorch-P (``MesorchP``, 62.24 M parameters, the paper's pruned variant, ``mesorch_p.py`` of the
official repository): ConvNeXt without its last stage and head, five scales (ConvNeXt stages 1 and
3, MiT stages 2-4), no gate: the five one-channel maps are summed.

Parameter names and shapes are those of the official checkpoint (``mesorch-98.pth``'s ``model``).
At inference, linear layers that follow each other without a non-linearity in between are folded
into one (the last transposed conv of each stack with its 1x1 reduction; the gate's 3x3 and two
1x1 convs), which gives the same map with far fewer operations; the folded weights are derived
from the live parameters and recomputed whenever those change. Verified against IMDL-BenCo's
implementation with identical random weights (tests/test_model_mesorch.py).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from timm.layers import LayerNorm2d
from timm.models.convnext import ConvNeXt
from torch import nn

from .segformer import MixVisionTransformer

CONVNEXT_DIMS = (96, 192, 384, 768)
MIT_DIMS = (64, 128, 320, 512)


def dct_matrix(n: int) -> torch.Tensor:
    """Orthonormal DCT-II matrix (n, n) in float32."""
    k = torch.arange(n, dtype=torch.float64)[:, None]
    i = torch.arange(n, dtype=torch.float64)[None, :]
    m = math.sqrt(2.0 / n) * torch.cos(math.pi * k * (2 * i + 1) / (2 * n))
    m[0] = 1.0 / math.sqrt(n)
    return m.float()


class DctFilters(nn.Module):
    """High- and low-pass images from a 2-D DCT per channel, each min-max scaled per sample.

    High-pass zeroes the DCT block of the lowest ``high_alpha`` rows and columns; low-pass zeroes
    everything but the lowest ``1 - low_alpha`` rows or columns. Both masks touch only a thin band
    of the spectrum, so the filtered images are computed through the band's few basis vectors:
    with P = C[:k]^T C[:k], high = x - P_h x P_w^T and low = P_h x + x P_w^T - P_h x P_w^T, which
    equals the inverse DCT of the masked full DCT at a fraction of its cost.
    """

    def __init__(self, high_alpha: float = 0.05, low_alpha: float = 0.95):
        super().__init__()
        self.high_alpha, self.low_alpha = high_alpha, low_alpha
        self._cache: dict = {}

    def _bases(self, h: int, w: int, device) -> tuple[torch.Tensor, ...]:
        key = (h, w, str(device))
        if key not in self._cache:
            ch, cw = dct_matrix(h).to(device), dct_matrix(w).to(device)
            kh, kw = int(self.high_alpha * h), int(self.high_alpha * w)  # zeroed top-left block
            lh, lw = h - int(self.low_alpha * h), w - int(self.low_alpha * w)  # kept rows / columns
            self._cache = {key: (ch[:kh], cw[:kw], ch[:lh], cw[:lw])}
        return self._cache[key]

    @staticmethod
    def _minmax(y: torch.Tensor) -> torch.Tensor:
        flat = y.flatten(1)
        lo, hi = flat.min(1).values.view(-1, 1, 1, 1), flat.max(1).values.view(-1, 1, 1, 1)
        return (y - lo) / (hi - lo)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hh, hw, lh, lw = self._bases(x.shape[-2], x.shape[-1], x.device)
        x = x.float()
        high = x - hh.T @ ((hh @ x) @ hw.T) @ hw
        rows = lh.T @ (lh @ x)  # P_h x
        low = rows + (x @ lw.T) @ lw - (rows @ lw.T) @ lw
        return self._minmax(high), self._minmax(low)


def _up(cin: int, cout: int) -> nn.ConvTranspose2d:
    return nn.ConvTranspose2d(cin, cout, 4, 2, 1)


def _stack(dims: tuple[int, ...], n: int) -> nn.Module:
    """n transposed convs (x2 each) from dims[n] down to dims[0]; a bare layer when n == 1."""
    layers = [_up(dims[i], dims[i - 1]) for i in range(n, 0, -1)]
    return layers[0] if n == 1 else nn.Sequential(*layers)


class Upsample(nn.Module):
    """Brings ConvNeXt stages 2-4 and MiT stages 2-4 to the 1/4 resolution of stage 1."""

    def __init__(self):
        super().__init__()
        self.upsamplec2, self.upsamples2 = _stack(CONVNEXT_DIMS, 1), _stack(MIT_DIMS, 1)
        self.upsamplec3, self.upsamples3 = _stack(CONVNEXT_DIMS, 2), _stack(MIT_DIMS, 2)
        self.upsamplec4, self.upsamples4 = _stack(CONVNEXT_DIMS, 3), _stack(MIT_DIMS, 3)

    def stacks(self) -> list[nn.Module | None]:
        """Per feature (c1..c4, s1..s4) its stack (None for the stage-1 maps)."""
        return [None, self.upsamplec2, self.upsamplec3, self.upsamplec4,
                None, self.upsamples2, self.upsamples3, self.upsamples4]


class ScoreNetwork(nn.Module):
    """The gate: an 8-way softmax at 1/4 resolution from RGB + high + low."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(9, 192, 7, 2, 3)
        self.invert = nn.Sequential(LayerNorm2d(192, eps=1e-6), nn.Conv2d(192, 192, 3, 1, 1), nn.Conv2d(192, 768, 1),
                                    nn.Conv2d(768, 192, 1), nn.GELU())
        self.conv2 = nn.Conv2d(192, 8, 7, 2, 3)

    def folded(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The 3x3 conv and the two 1x1 convs after it (no non-linearity between) as one 3x3 conv."""
        c3, c1a, c1b = self.invert[1], self.invert[2], self.invert[3]
        a, b = c1a.weight[:, :, 0, 0].double(), c1b.weight[:, :, 0, 0].double()
        ab = b @ a  # (192, 192)
        weight = torch.einsum("oc,cikl->oikl", ab, c3.weight.double())
        bias = ab @ c3.bias.double() + b @ c1a.bias.double() + c1b.bias.double()
        return weight.float(), bias.float()

    def forward(self, x: torch.Tensor, folded: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        x = self.conv1(x)
        if folded is None:
            y = self.invert(x)
        else:
            y = F.gelu(F.conv2d(self.invert[0](x), folded[0], folded[1], padding=1))
        return torch.softmax(self.conv2(x + y).float(), dim=1)


def _folded_heads(stacks: list, inverse: nn.ModuleList) -> list:
    """Each (transposed-conv stack, 1x1 reduction) pair with the stack's last layer and the 1x1 conv
    folded into one transposed conv to a single channel: (leading layers, weight, bias) or None."""
    heads = []
    for stack, inv in zip(stacks, inverse):
        if stack is None:
            heads.append(None)
            continue
        layers = list(stack) if isinstance(stack, nn.Sequential) else [stack]
        last = layers[-1]  # ConvTranspose (cin, cout, 4, 4) then 1x1 (1, cout)
        w1 = inv.weight[:, :, 0, 0]  # (1, cout)
        heads.append((layers[:-1], torch.einsum("oc,ickl->iokl", w1, last.weight), w1 @ last.bias + inv.bias))
    return heads


def _apply_heads(feats: list[torch.Tensor], heads: list, inverse: nn.ModuleList) -> list[torch.Tensor]:
    maps = []
    for f, head, inv in zip(feats, heads, inverse):
        if head is None:
            maps.append(inv(f))
            continue
        layers, weight, bias = head
        for layer in layers:
            f = layer(f)
        maps.append(F.conv_transpose2d(f, weight, bias, stride=2, padding=1))
    return maps


def _local_branch(convnext: ConvNeXt, x: torch.Tensor, high: torch.Tensor) -> list[torch.Tensor]:
    """ConvNeXt on RGB + high band (channels-last on CPU): every stage's output."""
    c = torch.cat([x, high], 1)
    if not c.is_cuda:
        c = c.contiguous(memory_format=torch.channels_last)
    c = convnext.stem(c)
    outs = []
    for stage in convnext.stages:
        c = stage(c)
        outs.append(c)
    return outs


def _param_key(module: nn.Module) -> tuple:
    return tuple((p.data_ptr(), p._version) for p in module.parameters())


class Mesorch(nn.Module):
    """Mesorch (full model, 85.75 M parameters). ``forward`` takes the ImageNet-normalised image
    (B, 3, 512, 512) and returns logits (B, 1, 512, 512)."""

    def __init__(self, size: int = 512):
        super().__init__()
        self.size = size
        self.convnext = ConvNeXt(depths=(3, 3, 9, 3), dims=CONVNEXT_DIMS)
        self.convnext.stem[0] = nn.Conv2d(6, CONVNEXT_DIMS[0], 4, 4, bias=False)
        self.segformer = MixVisionTransformer(in_chans=6)
        self.upsample = Upsample()
        self.inverse = nn.ModuleList([nn.Conv2d(96, 1, 1) for _ in range(4)] + [nn.Conv2d(64, 1, 1) for _ in range(4)])
        self.gate = ScoreNetwork()
        self.dct = DctFilters()
        self._folded: tuple | None = None
        self._folded_key: tuple | None = None

    def _fold(self) -> tuple:
        """Folded inference weights, recomputed when any parameter changed (e.g. load_state_dict)."""
        key = _param_key(self)
        if self._folded_key != key:
            heads = _folded_heads(self.upsample.stacks(), self.inverse)
            self._folded, self._folded_key = (heads, self.gate.folded()), key
        return self._folded

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        high, low = self.dct(x)
        feats = _local_branch(self.convnext, x, high) + self.segformer(torch.cat([x, low], 1))
        gate_in = torch.cat([x, high, low], 1)
        if torch.is_grad_enabled():  # training / autograd: the plain layer-by-layer path
            maps = [inv(f if st is None else st(f)) for f, st, inv in zip(feats, self.upsample.stacks(), self.inverse)]
            gate = self.gate(gate_in)
        else:
            heads, gate_folded = self._fold()
            maps = _apply_heads(feats, heads, self.inverse)
            gate = self.gate(gate_in, gate_folded)
        logits = (gate * torch.cat(maps, 1)).sum(1, keepdim=True)
        return F.interpolate(logits, size=(self.size, self.size), mode="bilinear", align_corners=True)


class UpsampleP(nn.Module):
    """Mesorch-P's stacks: ConvNeXt stage 3 and MiT stages 2-4 to 1/4 resolution."""

    def __init__(self):
        super().__init__()
        self.upsamples2 = _stack(MIT_DIMS, 1)
        self.upsamplec3 = _stack(CONVNEXT_DIMS, 2)
        self.upsamples3 = _stack(MIT_DIMS, 2)
        self.upsamples4 = _stack(MIT_DIMS, 3)

    def stacks(self) -> list[nn.Module | None]:
        """Per feature (c1, c3, s2, s3, s4) its stack."""
        return [None, self.upsamplec3, self.upsamples2, self.upsamples3, self.upsamples4]


class MesorchP(nn.Module):
    """Mesorch-P (62.24 M parameters): same input and output as :class:`Mesorch`."""

    def __init__(self, size: int = 512):
        super().__init__()
        self.size = size
        self.convnext = ConvNeXt(depths=(3, 3, 9, 3), dims=CONVNEXT_DIMS)
        self.convnext.stem[0] = nn.Conv2d(6, CONVNEXT_DIMS[0], 4, 4, bias=False)
        self.convnext.stages = self.convnext.stages[:-1]
        del self.convnext.head
        self.segformer = MixVisionTransformer(in_chans=6)
        self.upsample = UpsampleP()
        self.inverse = nn.ModuleList([nn.Conv2d(96, 1, 1) for _ in range(2)] + [nn.Conv2d(64, 1, 1) for _ in range(3)])
        self.dct = DctFilters()
        self._folded: list | None = None
        self._folded_key: tuple | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        high, low = self.dct(x)
        conv = _local_branch(self.convnext, x, high)
        feats = [conv[0], conv[2]] + self.segformer(torch.cat([x, low], 1))[1:]
        if torch.is_grad_enabled():
            maps = [inv(f if st is None else st(f)) for f, st, inv in zip(feats, self.upsample.stacks(), self.inverse)]
        else:
            key = _param_key(self)
            if self._folded_key != key:
                self._folded, self._folded_key = _folded_heads(self.upsample.stacks(), self.inverse), key
            maps = _apply_heads(feats, self._folded, self.inverse)
        logits = torch.cat(maps, 1).sum(1, keepdim=True)
        return F.interpolate(logits, size=(self.size, self.size), mode="bilinear", align_corners=True)
