"""TruFor: trustworthy forensics with an anomaly map, a confidence map and an integrity score.

Guillaro, Cozzolino, Sud, Dufour, Verdoliva, "TruFor: Leveraging all-round clues for trustworthy
image forgery detection and localization", CVPR 2023 (arXiv 2212.10957; code grip-unina/TruFor,
GRIP non-profit licence).

* **Noiseprint++** (``dncnn``): a 17-level DnCNN on RGB / 256 giving a one-channel noise
  fingerprint, repeated to three channels (built by :func:`.dncnn.noiseprint_pp`).
* **Encoder** (``backbone``): two SegFormer MiT-B2 streams (CMX, Zhang et al., "CMX: Cross-modal
  fusion for RGB-X semantic segmentation with transformers", IEEE T-ITS 2023), one on the
  ImageNet-normalised RGB (``patch_embed*``, ``block*``, ``norm*``), one on the Noiseprint++
  (``extra_*``). After each stage a feature rectification module (``FRMs``) exchanges channel and
  spatial attention between the streams, and a feature fusion module (``FFMs``: cross attention
  over channel contexts, then a convolutional channel embedding) merges them; the rectified
  streams go on to the next stage, the fused maps to the decoders.
* **Decoders**: two SegFormer all-MLP heads on the four fused maps (1/4 .. 1/32): the anomaly
  head (``decode_head``, two classes) and the confidence head (``decode_head_conf``, one),
  upsampled bilinearly to the input size.
* **Detection head** (``detection``): weighted statistics pooling (soft minimum, soft maximum,
  mean, mean square) of the confidence logits, and of the anomaly logit difference weighted by
  the confidence, into a two-layer perceptron giving the integrity score's logit.

Outputs as the official test code reads them: anomaly map = softmax of the two logits (class 1),
confidence = sigmoid, score = sigmoid of the detection logit. Parameter names are those of the
official checkpoint ``trufor.pth.tar`` (``{'epoch', 'state_dict'}``). The decoders' BatchNorm
epsilon follows the release's inference code (``test_docker``, also IMDL-BenCo's): 1e-3 in the
anomaly head (set by its weight initialisation), PyTorch's 1e-5 in the confidence head.

At inference (grad mode off) each all-MLP head is evaluated in a folded form that gives the same
numbers with far fewer operations: a per-scale linear layer, bilinear upsampling and the 1x1 fusion
convolution are all linear, so each scale's linear layer is merged with its slice of the fusion
convolution and applied at its own resolution before upsampling, and the BatchNorm is folded in.
Folded weights are derived from the live parameters and recomputed whenever those change.
Noiseprint++ runs layer by layer as the authors' code does (folding its BatchNorms into the
convolutions is 1.25x faster on CPU but moves its float32 rounding enough that, through a network
with random weights, maps differ from the reference by 1e-3); on images larger than ``npp_tile``
squared it runs in tiles with 17 pixels of context (its receptive field's radius, so the result
is the same), which bounds its memory.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .dncnn import noiseprint_pp
from .segformer import MIT_DEPTHS, grid, run_stage, stage_modules, tokens

MIT_DIMS = (64, 128, 320, 512)
MIT_HEADS = (1, 2, 5, 8)
SR_RATIOS = (8, 4, 2, 1)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
NPP_CONTEXT = 17  # Noiseprint++'s receptive-field radius: 17 levels of 3x3 convolutions


def _param_key(module: nn.Module) -> tuple:
    return tuple((t.data_ptr(), t._version) for t in list(module.parameters()) + list(module.buffers()))


def tiled(fn, x: torch.Tensor, tile: int, context: int) -> torch.Tensor:
    """``fn`` (a fully convolutional map with receptive-field radius <= ``context``) applied to
    ``tile`` x ``tile`` windows of ``x`` with ``context`` pixels around each: the same result as
    ``fn(x)``, with memory bounded by the window."""
    h, w = x.shape[-2:]
    if h * w <= tile * tile:
        return fn(x)
    out = None
    for y0 in range(0, h, tile):
        for x0 in range(0, w, tile):
            ya, xa = max(0, y0 - context), max(0, x0 - context)
            part = fn(x[..., ya:min(h, y0 + tile + context), xa:min(w, x0 + tile + context)])
            if out is None:
                out = part.new_empty(part.shape[:2] + (h, w))
            y1, x1 = min(h, y0 + tile), min(w, x0 + tile)
            out[..., y0:y1, x0:x1] = part[..., y0 - ya:y1 - ya, x0 - xa:x1 - xa]
    return out


# ------------------------------------------------------------------ cross-modal fusion (CMX)


class _Gate(nn.Module):
    """A container whose only member is ``mlp`` (the checkpoint's ``channel_weights.mlp.*``)."""

    def __init__(self, mlp: nn.Sequential):
        super().__init__()
        self.mlp = mlp


class FeatureRectify(nn.Module):
    """Each stream gains the other weighted by channel attention (from global average and max
    pooling of both) and by spatial attention (1x1 convolutions of both), each with weight 1/2."""

    def __init__(self, dim: int):
        super().__init__()
        self.channel_weights = _Gate(nn.Sequential(nn.Linear(dim * 4, dim * 4), nn.ReLU(),
                                                   nn.Linear(dim * 4, dim * 2), nn.Sigmoid()))
        self.spatial_weights = _Gate(nn.Sequential(nn.Conv2d(dim * 2, dim, 1), nn.ReLU(),
                                                   nn.Conv2d(dim, 2, 1), nn.Sigmoid()))

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, c = x1.shape[:2]
        both = torch.cat([x1, x2], 1)
        pooled = torch.cat([both.mean((2, 3)), both.amax((2, 3))], 1)
        cw = self.channel_weights.mlp(pooled).view(b, 2, c, 1, 1)
        sw = self.spatial_weights.mlp(both)
        gain1 = 0.5 * (cw[:, 1] + sw[:, 1:2])  # what stream 1 takes from stream 2
        gain2 = 0.5 * (cw[:, 0] + sw[:, 0:1])
        return x1 + gain1 * x2, x2 + gain2 * x1


class CrossAttention(nn.Module):
    """Efficient cross attention: each stream's queries read the other's (keys^T values) context,
    softmax-normalised over the key channels."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.kv1 = nn.Linear(dim, dim * 2, bias=False)
        self.kv2 = nn.Linear(dim, dim * 2, bias=False)

    def _context(self, kv: nn.Linear, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        k, v = kv(x).view(b, n, 2, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        return ((k.transpose(-2, -1) @ v) * self.scale).softmax(dim=-2)  # (B, heads, c, c)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, n, c = x1.shape
        ctx1, ctx2 = self._context(self.kv1, x1), self._context(self.kv2, x2)

        def read(q: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
            q = q.reshape(b, n, self.heads, c // self.heads).transpose(1, 2)
            return (q @ ctx).transpose(1, 2).reshape(b, n, c)

        return read(x1, ctx2), read(x2, ctx1)


class CrossPath(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.channel_proj1 = nn.Linear(dim, dim * 2)
        self.channel_proj2 = nn.Linear(dim, dim * 2)
        self.cross_attn = CrossAttention(dim, heads)
        self.end_proj1 = nn.Linear(dim * 2, dim)
        self.end_proj2 = nn.Linear(dim * 2, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y1, u1 = F.relu(self.channel_proj1(x1)).chunk(2, dim=-1)
        y2, u2 = F.relu(self.channel_proj2(x2)).chunk(2, dim=-1)
        v1, v2 = self.cross_attn(u1, u2)
        out1 = self.norm1(x1 + self.end_proj1(torch.cat([y1, v1], -1)))
        out2 = self.norm2(x2 + self.end_proj2(torch.cat([y2, v2], -1)))
        return out1, out2


class ChannelEmbed(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.residual = nn.Conv2d(cin, cout, 1, bias=False)
        self.channel_embed = nn.Sequential(
            nn.Conv2d(cin, cout, 1), nn.Conv2d(cout, cout, 3, padding=1, groups=cout), nn.ReLU(),
            nn.Conv2d(cout, cout, 1), nn.BatchNorm2d(cout))
        self.norm = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.residual(x) + self.channel_embed(x))


class FeatureFusion(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.cross = CrossPath(dim, heads)
        self.channel_emb = ChannelEmbed(dim * 2, dim)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        h, w = x1.shape[-2:]
        t1, t2 = self.cross(tokens(x1), tokens(x2))
        return self.channel_emb(grid(torch.cat([t1, t2], -1), h, w))


class DualMiT(nn.Module):
    """Two MiT streams (RGB and the extra modality) with rectification and fusion after each stage.
    Returns the four fused maps (B, C_i, H/4, ...), (..., H/32)."""

    def __init__(self, depths: tuple[int, ...] = MIT_DEPTHS["b2"], dims: tuple[int, ...] = MIT_DIMS,
                 heads: tuple[int, ...] = MIT_HEADS, in_chans: int = 3):
        super().__init__()
        chans = (in_chans,) + tuple(dims[:-1])
        for prefix in ("", "extra_"):
            for i in range(4):
                embed, blocks, norm = stage_modules(i, chans[i], dims[i], heads[i], depths[i], SR_RATIOS[i])
                setattr(self, f"{prefix}patch_embed{i + 1}", embed)
                setattr(self, f"{prefix}block{i + 1}", blocks)
                setattr(self, f"{prefix}norm{i + 1}", norm)
        self.FRMs = nn.ModuleList(FeatureRectify(d) for d in dims)
        self.FFMs = nn.ModuleList(FeatureFusion(d, n) for d, n in zip(dims, heads))

    def forward(self, rgb: torch.Tensor, extra: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for i in range(4):
            k = i + 1
            rgb = run_stage(getattr(self, f"patch_embed{k}"), getattr(self, f"block{k}"), getattr(self, f"norm{k}"), rgb)
            extra = run_stage(getattr(self, f"extra_patch_embed{k}"), getattr(self, f"extra_block{k}"),
                              getattr(self, f"extra_norm{k}"), extra)
            rgb, extra = self.FRMs[i](rgb, extra)
            outs.append(self.FFMs[i](rgb, extra))
        return outs


# ------------------------------------------------------------------ decoders and detection


class _Linear(nn.Module):
    """A container whose only member is ``proj`` (the checkpoint's ``linear_c*.proj.*``)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.proj = nn.Linear(cin, cout)


class MLPDecoder(nn.Module):
    """SegFormer's all-MLP head: each scale to ``embed`` channels, upsampled to 1/4, concatenated
    (coarsest first), a 1x1 fusion conv with BatchNorm and ReLU, then a 1x1 prediction conv."""

    def __init__(self, classes: int, embed: int = 512, dims: tuple[int, ...] = MIT_DIMS, bn_eps: float = 1e-5):
        super().__init__()
        for i, d in enumerate(dims):
            setattr(self, f"linear_c{i + 1}", _Linear(d, embed))
        self.linear_fuse = nn.Sequential(nn.Conv2d(embed * 4, embed, 1, bias=True), nn.BatchNorm2d(embed, eps=bn_eps),
                                         nn.ReLU())
        self.linear_pred = nn.Conv2d(embed, classes, 1)
        self._folded: tuple | None = None
        self._folded_key: tuple | None = None

    def _scales(self) -> list[nn.Linear]:
        return [getattr(self, f"linear_c{i}").proj for i in (4, 3, 2, 1)]  # concatenation order

    def _fold(self) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Per scale, (linear then its slice of the fusion conv then BatchNorm) as one (embed, C_i)
        matrix, and one bias; recomputed whenever a parameter or buffer changed."""
        key = _param_key(self)
        if self._folded_key != key:
            conv, bn = self.linear_fuse[0], self.linear_fuse[1]
            gain = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            w = conv.weight[:, :, 0, 0] * gain[:, None]
            e = w.shape[0]
            mats, bias = [], (conv.bias - bn.running_mean) * gain + bn.bias
            for j, lin in enumerate(self._scales()):
                part = w[:, j * e:(j + 1) * e]
                mats.append(part @ lin.weight)
                bias = bias + part @ lin.bias
            self._folded, self._folded_key = (mats, bias), key
        return self._folded  # type: ignore[return-value]

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        size = feats[0].shape[-2:]
        ordered = feats[::-1]  # c4, c3, c2, c1
        if torch.is_grad_enabled():
            maps = []
            for f, lin in zip(ordered, self._scales()):
                m = grid(lin(tokens(f)), *f.shape[-2:])
                maps.append(m if m.shape[-2:] == size else
                            F.interpolate(m, size=size, mode="bilinear", align_corners=False))
            x = self.linear_fuse(torch.cat(maps, 1))
        else:
            mats, bias = self._fold()
            x = None
            for f, mat in zip(ordered, mats):
                m = grid(F.linear(tokens(f), mat), *f.shape[-2:])
                if m.shape[-2:] != size:
                    m = F.interpolate(m, size=size, mode="bilinear", align_corners=False)
                x = m if x is None else x + m
            x = F.relu(x + bias.view(1, -1, 1, 1))
        return self.linear_pred(x)  # dropout is the identity at inference


def weighted_pooling(x: torch.Tensor, log_w: torch.Tensor | None = None) -> torch.Tensor:
    """Soft minimum, soft maximum, mean and mean square of each channel of ``x`` (B, C, H, W) under
    the normalised weights exp(log_w) (uniform when None): (B, 4C)."""
    b, c = x.shape[:2]
    x = x.reshape(b, c, -1)
    log_w = torch.zeros_like(x[:, :1]) if log_w is None else log_w.reshape(b, 1, -1)
    log_w = F.log_softmax(log_w, dim=-1)
    w = log_w.exp()
    return torch.cat([-torch.logsumexp(log_w - x, -1), torch.logsumexp(log_w + x, -1),
                      (w * x).sum(-1), (w * x * x).sum(-1)], 1)


class TruFor(nn.Module):
    """TruFor (full model). ``forward`` takes RGB / 256 (B, 3, H, W) and returns the anomaly logits
    (B, 2, H, W), the confidence logits (B, 1, H, W) and the detection logit (B, 1);
    :meth:`predict` turns them into the official outputs."""

    def __init__(self, embed: int = 512, depths: tuple[int, ...] = MIT_DEPTHS["b2"], loc_bn_eps: float = 1e-3,
                 conf_bn_eps: float = 1e-5):
        super().__init__()
        self.backbone = DualMiT(tuple(depths))
        self.decode_head = MLPDecoder(2, embed, bn_eps=loc_bn_eps)
        self.decode_head_conf = MLPDecoder(1, embed, bn_eps=conf_bn_eps)
        self.detection = nn.Sequential(nn.Linear(8, 128), nn.ReLU(), nn.Dropout(0.5), nn.Linear(128, 1))
        self.dncnn = noiseprint_pp()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.npp_tile = 1024

    def noiseprint(self, x: torch.Tensor) -> torch.Tensor:
        """Noiseprint++ of RGB / 256: (B, 1, H, W)."""
        if torch.is_grad_enabled() or self.dncnn.training:
            return self.dncnn(x)
        return tiled(self.dncnn, x, self.npp_tile, NPP_CONTEXT)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        size = x.shape[-2:]
        npp = self.noiseprint(x).expand(-1, 3, -1, -1)
        feats = self.backbone((x - self.mean) / self.std, npp)
        loc = F.interpolate(self.decode_head(feats), size=size, mode="bilinear", align_corners=False)
        conf = F.interpolate(self.decode_head_conf(feats), size=size, mode="bilinear", align_corners=False)
        pooled = torch.cat([weighted_pooling(conf), weighted_pooling(loc[:, 1:2] - loc[:, 0:1], F.logsigmoid(conf))], 1)
        return loc, conf, self.detection(pooled)

    def predict(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The official outputs: ``map`` (B, 1, H, W) = softmax class 1, ``confidence`` (B, 1, H, W)
        = sigmoid, ``score`` (B,) = sigmoid of the detection logit."""
        loc, conf, det = self(x)
        return {"map": torch.sigmoid((loc[:, 1:2] - loc[:, 0:1]).float()), "confidence": torch.sigmoid(conf.float()),
                "score": torch.sigmoid(det.float()).view(-1)}
