"""SegFormer's Mix Transformer encoder (MiT), as Mesorch's global branch (MiT-B3) and TruFor's dual
encoder (two MiT-B2 streams, see trufor.py) use it.

Xie et al., "SegFormer: Simple and efficient design for semantic segmentation with transformers",
NeurIPS 2021 (arXiv 2105.15203). Four stages of overlapping patch embeddings (7x7/4, then 3x3/2)
and transformer blocks whose attention reduces keys and values spatially by ``sr_ratio``, with a
Mix-FFN (a 3x3 depth-wise convolution between the two linear layers). Parameter names follow the
original implementation, so SegFormer and Mesorch checkpoints load unchanged. Attention runs
through ``F.scaled_dot_product_attention``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def grid(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Tokens (B, N, C) as a (B, C, H, W) view in channels-last layout (no copy)."""
    return x.view(x.shape[0], h, w, x.shape[2]).permute(0, 3, 1, 2)


def tokens(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> tokens (B, H*W, C); free when x is channels-last."""
    return x.permute(0, 2, 3, 1).reshape(x.shape[0], -1, x.shape[1])


class OverlapPatchEmbed(nn.Module):
    def __init__(self, in_chans: int, dim: int, patch: int, stride: int, bias: bool = True):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, patch, stride, padding=patch // 2, bias=bias)
        self.norm = nn.LayerNorm(dim)  # eps 1e-5, as the original

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        x = self.proj(x)
        return self.norm(tokens(x)), x.shape[-2], x.shape[-1]


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, sr_ratio: int):
        super().__init__()
        self.heads, self.sr_ratio = heads, sr_ratio
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, dim * 2)
        self.proj = nn.Linear(dim, dim)
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, sr_ratio, sr_ratio)
            self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        b, n, c = x.shape
        q = self.q(x).view(b, n, self.heads, c // self.heads).transpose(1, 2)
        if self.sr_ratio > 1:
            x = self.norm(tokens(self.sr(grid(x, h, w))))
        k, v = self.kv(x).view(b, -1, 2, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class DWConv(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        return tokens(self.dwconv(grid(x, h, w)))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = DWConv(hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        return self.fc2(F.gelu(self.dwconv(self.fc1(x), h, w)))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: int, sr_ratio: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads, sr_ratio)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, dim * mlp_ratio)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), h, w)
        return x + self.mlp(self.norm2(x), h, w)


# MiT variants by their stage depths (all share dims 64..512, heads 1,2,5,8, sr ratios 8,4,2,1)
MIT_DEPTHS = {"b1": (2, 2, 2, 2), "b2": (3, 4, 6, 3), "b3": (3, 4, 18, 3), "b4": (3, 8, 27, 3), "b5": (3, 6, 40, 3)}


def stage_modules(index: int, in_chans: int, dim: int, heads: int, depth: int, sr_ratio: int, mlp_ratio: int = 4,
                  bias: bool = True) -> tuple[OverlapPatchEmbed, nn.ModuleList, nn.LayerNorm]:
    """One MiT stage (``index`` 0..3): its overlapping patch embedding (7x7/4 for the first, 3x3/2
    after), its transformer blocks and its closing LayerNorm."""
    patch, stride = (7, 4) if index == 0 else (3, 2)
    embed = OverlapPatchEmbed(in_chans, dim, patch, stride, bias=bias)
    blocks = nn.ModuleList(Block(dim, heads, mlp_ratio, sr_ratio) for _ in range(depth))
    return embed, blocks, nn.LayerNorm(dim, eps=1e-6)


def run_stage(embed: OverlapPatchEmbed, blocks: nn.ModuleList, norm: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    """(B, C_in, H, W) -> the stage's feature map (B, C, H', W') (a channels-last view)."""
    x, h, w = embed(x)
    for blk in blocks:
        x = blk(x, h, w)
    return grid(norm(x), h, w)


class MixVisionTransformer(nn.Module):
    """MiT encoder; defaults are MiT-B3 with a 6-channel, bias-free first projection (Mesorch)."""

    def __init__(self, in_chans: int = 6, dims: tuple[int, ...] = (64, 128, 320, 512), heads=(1, 2, 5, 8),
                 depths=MIT_DEPTHS["b3"], sr_ratios=(8, 4, 2, 1), mlp_ratio: int = 4, first_bias: bool = False):
        super().__init__()
        chans = (in_chans,) + tuple(dims[:-1])
        for i in range(4):
            embed, blocks, norm = stage_modules(i, chans[i], dims[i], heads[i], depths[i], sr_ratios[i], mlp_ratio,
                                                bias=first_bias or i > 0)
            setattr(self, f"patch_embed{i + 1}", embed)
            setattr(self, f"block{i + 1}", blocks)
            setattr(self, f"norm{i + 1}", norm)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The four stages' feature maps (B, C_i, H/4, ...), (..., H/32)."""
        outs = []
        for i in range(1, 5):
            x = run_stage(getattr(self, f"patch_embed{i}"), getattr(self, f"block{i}"), getattr(self, f"norm{i}"), x)
            outs.append(x)
        return outs
