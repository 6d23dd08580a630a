"""IML-ViT: a plain ViT-B/16 at 1024 x 1024 for image manipulation localization.

Paper: Xiaochen Ma, Bo Du, Zhuohang Jiang, Ahmed Y. Al Hammadi and Jizhe Zhou, "IML-ViT:
Benchmarking Image Manipulation Localization by Vision Transformer", arXiv:2307.14863 (2023).
Official code and weights: github.com/SunnyHaze/IML-ViT (MIT); also in IMDL-BenCo (``IML_ViT``).

Layout (parameter names are exactly those of the official checkpoint, which loads with
``strict=True``; it is a bare state_dict):

* ``encoder_net``: ViTDet-style ViT-B/16 on the whole 1024 x 1024 input (64 x 64 tokens), window
  attention (14 x 14, zero-padded to 70 x 70) except global attention in blocks 2, 5, 8, 11, decomposed
  relative position bias everywhere, LayerNorm eps 1e-6, no neck. The blocks and the patch embedding
  are timm's ``samvit_base_patch16`` ones (``F.scaled_dot_product_attention`` with the relative
  position bias as its additive mask). The absolute position embedding is kept at its MAE
  pre-training size (1, 1 + 14 * 14, 768), class token first; its 14 x 14 grid is resized
  bicubically (align_corners=False, no antialiasing) to the token grid as the official code does
  on every forward, but here only once: the result is cached until the parameter changes.
* ``featurePyramid_net``: simple feature pyramid (ViTDet) at strides 4, 8, 16, 32 with 256 channels
  and channel LayerNorm, plus a stride-64 level taken by 1x1 max-pooling with stride 2.
* ``predict_head``: all five levels upsampled (bilinear) to stride 4, concatenated, 1x1 conv to 256,
  BatchNorm, dropout, 1x1 conv to one logit; the official model then upsamples the logits
  bilinearly (align_corners=False) to the input size. In eval mode everything after the pyramid is
  affine per pixel and commutes with the bilinear upsampling, so it is folded into one 1 x 256
  projection per level applied before upsampling (same result up to float rounding, 21 GMACs less).

Verified: with identical random weights, the sigmoid of :meth:`IMLViT.forward` matches IMDL-BenCo
0.1.45's ``IML_ViT`` ``pred_mask`` to within 1e-4 (tests/test_model_imlvit.py, on an example image
preprocessed as in the official test pipeline: zero-pad bottom/right to 1024, then ImageNet
normalisation), and the state_dict keys and shapes equal tests/manifests/iml-vit.json.
"""

from __future__ import annotations

from functools import partial

import timm
import torch
import torch.nn.functional as F
from timm.models import vision_transformer_sam as vit_sam
from torch import nn


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channel dimension of an NCHW map (the official "LN" of the pyramid)."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # normalising the NHWC view is one fused kernel; on a channels_last map the permutes are free
        x = F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class ConvNorm(nn.Conv2d):
    """Conv2d followed by its ``norm`` child (detectron2's Conv2d(norm=...), same parameter names)."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, eps: float = 1e-6):
        super().__init__(in_ch, out_ch, kernel_size, padding=kernel_size // 2, bias=False)
        self.norm = ChannelLayerNorm(out_ch, eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(super().forward(x))


class RelPosAttention(vit_sam.Attention):
    """timm's SAM attention (same parameters) with a leaner forward for the official configuration.

    The decomposed relative position bias is built directly in the layout
    ``F.scaled_dot_product_attention`` takes as its additive mask (timm's version makes a strided
    bias that is then copied) and, for global attention over 64 x 64 tokens, one band of query
    rows at a time, so that the bias stays within ``bias_budget`` elements (the full one is
    12 x 4096 x 4096 floats, 805 MB, as is each attention matrix of the official code). Window
    attention builds its (windows, 12, 196, 196) bias in one go.
    """

    bias_budget = 1 << 26

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        N, nh = H * W, self.num_heads
        qkv = self.qkv(x.reshape(B, N, C)).view(B, N, 3, nh, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # (B, nh, N, hd)
        rh = vit_sam.get_rel_pos(H, H, self.rel_pos_h).to(q.dtype)  # (H, H, hd): [q row, k row]
        rw = vit_sam.get_rel_pos(W, W, self.rel_pos_w).to(q.dtype)
        qg = q.reshape(B * nh, H, W, -1)
        rel_h = torch.matmul(qg, rh.transpose(1, 2))  # (B nh, H, W, H): q . Rh[q row, k row]
        rel_w = torch.matmul(qg.transpose(1, 2), rw.transpose(1, 2)).transpose(1, 2)  # (B nh, H, W, W)
        bands = -(-H // max(1, self.bias_budget // (B * nh * W * N)))
        rows = -(-H // bands)  # query rows per band, bands of equal size
        out = []
        for r in range(0, H, rows):
            bias = rel_h[:, r:r + rows, :, :, None] + rel_w[:, r:r + rows, :, None, :]
            sl = slice(r * W, min(H, r + rows) * W)
            out.append(F.scaled_dot_product_attention(q[:, :, sl], k, v, attn_mask=bias.view(B, nh, -1, N)))
        x = out[0] if len(out) == 1 else torch.cat(out, dim=2)
        x = self.proj(x.transpose(1, 2).reshape(B, N, C))
        return x.view(B, H, W, C)


class Encoder(nn.Module):
    """ViT-B/16 backbone: timm's SAM ViT patch embedding and blocks, MAE-sized position embedding."""

    def __init__(self, img_size: int = 1024, patch_size: int = 16, embed_dim: int = 768, depth: int = 12,
                 num_heads: int = 12, window_size: int = 14, global_attn_indexes=(2, 5, 8, 11),
                 pretrain_img_size: int = 224):
        super().__init__()
        vit = timm.create_model(
            "samvit_base_patch16", pretrained=False, img_size=img_size, patch_size=patch_size,
            embed_dim=embed_dim, depth=depth, num_heads=num_heads, window_size=window_size,
            global_attn_indexes=tuple(global_attn_indexes), use_rel_pos=True, use_abs_pos=False,
            norm_layer=partial(nn.LayerNorm, eps=1e-6), neck_chans=0, num_classes=0)
        self.patch_embed = vit.patch_embed
        grid = pretrain_img_size // patch_size
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + grid * grid, embed_dim))
        self.blocks = vit.blocks
        for blk in self.blocks:
            blk.attn.__class__ = RelPosAttention  # same module and parameters, leaner forward
        self._pos_cache: tuple | None = None

    def _resize(self, hw: tuple[int, int]) -> torch.Tensor:
        grid = self.pos_embed[:, 1:]  # drop the class token's embedding
        n = int(round(grid.shape[1] ** 0.5))
        grid = grid.reshape(1, n, n, -1)
        if (n, n) == tuple(hw):
            return grid
        grid = F.interpolate(grid.permute(0, 3, 1, 2), size=hw, mode="bicubic", align_corners=False)
        return grid.permute(0, 2, 3, 1)

    def resized_pos_embed(self, hw: tuple[int, int]) -> torch.Tensor:
        """The position embedding's grid resized to ``hw`` tokens, (1, H, W, C); cached until the
        parameter changes (in place, as load_state_dict does, or replaced, or moved)."""
        p = self.pos_embed
        if torch.is_grad_enabled() and p.requires_grad:
            return self._resize(hw)  # differentiable, not cached
        key = (p.data_ptr(), p._version, p.device, p.dtype, tuple(hw))
        if self._pos_cache is None or self._pos_cache[0] != key:
            with torch.no_grad():
                self._pos_cache = (key, self._resize(hw).contiguous())
        return self._pos_cache[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)  # (B, H, W, C)
        x = x + self.resized_pos_embed((x.shape[1], x.shape[2]))
        x = self.blocks(x)
        return x.permute(0, 3, 1, 2)


class SimpleFeaturePyramid(nn.Module):
    """ViTDet's simple feature pyramid: strides 4, 8, 16, 32 from the stride-16 map, plus stride 64."""

    def __init__(self, dim: int = 768, channels: int = 256):
        super().__init__()
        self.simfp_2 = nn.Sequential(
            nn.ConvTranspose2d(dim, dim // 2, 2, stride=2), ChannelLayerNorm(dim // 2), nn.GELU(),
            nn.ConvTranspose2d(dim // 2, dim // 4, 2, stride=2),
            ConvNorm(dim // 4, channels, 1), ConvNorm(channels, channels, 3))
        self.simfp_3 = nn.Sequential(
            nn.ConvTranspose2d(dim, dim // 2, 2, stride=2),
            ConvNorm(dim // 2, channels, 1), ConvNorm(channels, channels, 3))
        self.simfp_4 = nn.Sequential(ConvNorm(dim, channels, 1), ConvNorm(channels, channels, 3))
        self.simfp_5 = nn.Sequential(
            nn.MaxPool2d(2, stride=2), ConvNorm(dim, channels, 1), ConvNorm(channels, channels, 3))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        p5 = self.simfp_5(x)
        # the official top block: max_pool2d(kernel 1, stride 2) of the stride-32 level
        return [self.simfp_2(x), self.simfp_3(x), self.simfp_4(x), p5, p5[:, :, ::2, ::2]]


class PredictHead(nn.Module):
    """Fuse the pyramid levels at stride 4 into one logit map (official linear_fuse, norm, linear_predict)."""

    def __init__(self, channels: int = 256, embed_dim: int = 256, levels: int = 5):
        super().__init__()
        self.levels = levels
        self.linear_fuse = nn.Conv2d(channels * levels, embed_dim, 1)
        self.norm = nn.BatchNorm2d(embed_dim)
        self.dropout = nn.Dropout()
        self.linear_predict = nn.Conv2d(embed_dim, 1, 1)

    def folded(self) -> tuple[torch.Tensor, torch.Tensor]:
        """linear_predict . norm (eval) . linear_fuse as one (1, levels * channels) weight and a bias."""
        bn = self.norm
        scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
        p = self.linear_predict.weight.flatten(1) * scale  # (1, E)
        w = p @ self.linear_fuse.weight.flatten(1)  # (1, levels * C)
        b = p @ (self.linear_fuse.bias - bn.running_mean) + self.linear_predict.weight.flatten(1) @ bn.bias
        return w, b + self.linear_predict.bias

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        w, b = self.folded()
        size = feats[0].shape[-2:]
        out = None
        for i, f in enumerate(feats):
            wi = w[:, i * f.shape[1]:(i + 1) * f.shape[1]].to(f.dtype)
            y = F.conv2d(f, wi[:, :, None, None])
            if y.shape[-2:] != size:
                y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
            out = y if out is None else out + y
        return out + b.to(out.dtype).view(1, -1, 1, 1)


class IMLViT(nn.Module):
    """IML-ViT (official configuration by default): normalised (B, 3, S, S) -> logits (B, 1, S, S).

    For inference: the head always uses the BatchNorm running statistics and no dropout (as the
    official model in eval mode), and no loss is computed. ``channels_last`` runs the pyramid and
    head in NHWC layout (faster convolutions and channel LayerNorms on CPU; same results).
    """

    def __init__(self, input_size: int = 1024, patch_size: int = 16, embed_dim: int = 768,
                 fpn_channels: int = 256, mlp_embeding_dim: int = 256, channels_last: bool = True):
        super().__init__()
        self.input_size = input_size
        self.encoder_net = Encoder(img_size=input_size, patch_size=patch_size, embed_dim=embed_dim)
        self.featurePyramid_net = SimpleFeaturePyramid(embed_dim, fpn_channels)
        self.predict_head = PredictHead(fpn_channels, mlp_embeding_dim)
        self.channels_last = channels_last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.encoder_net(x)
        if self.channels_last:
            feat = feat.contiguous(memory_format=torch.channels_last)
        logits = self.predict_head(self.featurePyramid_net(feat))
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
