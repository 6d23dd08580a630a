"""SparseViT: non-semantics-centered, parameter-efficient image manipulation localization.

Su, Ma, Zhu, Niu, Lei, Zhou, "Can We Get Rid of Handcrafted Feature Extractors? SparseViT:
Nonsemantics-Centered, Parameter-Efficient Image Manipulation Localization through Sparse-Coding
Transformer", AAAI 2025 (arXiv 2412.14598; code scu-zjz/SparseViT).

A UniFormer-Base layout (Li et al., ICLR 2022): stages of 5 and 8 convolutional blocks (depth-wise
5x5 "attention", BatchNorm) at 1/4 and 1/8, then 20 and 7 self-attention blocks at 1/16 and 1/32
whose attention is *sparse*: the S x S token grid is cut into blocks of g = H / S pixels and each
attention group gathers the tokens at the same offset in every block (a dilated grid of S x S
tokens), with S = 4, 8, 16, 32 for successive groups of five stage-3 blocks and 8, 16 in stage 4
(S = H is global attention). Layer scale on both residual branches; Mix-FFN. The head
("learnable multi-scale supervision") projects four stage-3 outputs (1x1, 320 -> 512) and two
stage-4 outputs, weights them per channel, normalises (LayerNorm) and reduces to one logit map at
1/16, upsampled bilinearly (align_corners=False) to the input size.

Parameter names and shapes are those of the official checkpoint (``checkpoint.pth``'s ``model``),
including the stage LayerNorms ``norm1``/``norm2`` and the attention blocks' ``pos_embed`` that the
official forward never uses. Sparse attention here is reshapes plus
``F.scaled_dot_product_attention`` over all groups at once; in eval mode each BatchNorm is folded
into the 1x1 convolution after it. Verified against IMDL-BenCo's implementation with identical
random weights (tests/test_model_sparsevit.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

DIMS = (64, 128, 320, 512)
DEPTHS = (5, 8, 20, 7)


class PatchEmbed(nn.Module):
    def __init__(self, cin: int, dim: int, patch: int):
        super().__init__()
        self.proj = nn.Conv2d(cin, dim, patch, patch)
        self.norm = nn.LayerNorm(dim)  # eps 1e-5, as the original

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class CMlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.fc2 = nn.Conv2d(hidden, dim, 1)


def _fold_bn(bn: nn.BatchNorm2d, conv: nn.Conv2d) -> tuple[torch.Tensor, torch.Tensor]:
    """conv(bn(x)) as one 1x1 convolution (eval-mode BatchNorm is an affine map per channel)."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    shift = bn.bias - bn.running_mean * scale
    w = conv.weight[:, :, 0, 0]
    return (w * scale).unsqueeze(-1).unsqueeze(-1), w @ shift + conv.bias


class CBlock(nn.Module):
    """Convolutional block: x + dwconv3(x); + conv2(dw5(conv1(BN(x)))); + MLP(BN(x))."""

    def __init__(self, dim: int):
        super().__init__()
        self.pos_embed = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.norm1 = nn.BatchNorm2d(dim)
        self.conv1 = nn.Conv2d(dim, dim, 1)
        self.attn = nn.Conv2d(dim, dim, 5, padding=2, groups=dim)
        self.conv2 = nn.Conv2d(dim, dim, 1)
        self.norm2 = nn.BatchNorm2d(dim)
        self.mlp = CMlp(dim, dim * 4)
        self._key: tuple | None = None

    def _folded(self) -> tuple:
        key = tuple((p.data_ptr(), p._version) for p in (*self.parameters(), *self.buffers()))
        if self._key != key:
            self._cache, self._key = (_fold_bn(self.norm1, self.conv1), _fold_bn(self.norm2, self.mlp.fc1)), key
        return self._cache

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.pos_embed(x)
        if self.training or torch.is_grad_enabled():
            y = self.conv1(self.norm1(x))
            x = x + self.conv2(self.attn(y))
            return x + self.mlp.fc2(F.gelu(self.mlp.fc1(self.norm2(x))))
        (w1, b1), (wf, bf) = self._folded()
        x = x + self.conv2(self.attn(F.conv2d(x, w1, b1)))
        return x + self.mlp.fc2(F.gelu(F.conv2d(x, wf, bf)))


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, sparse: int) -> torch.Tensor:
        """x: (B, H, W, C) tokens; attention within each dilated group of sparse x sparse tokens."""
        b, h, w, c = x.shape
        if h % sparse or w % sparse:
            raise ValueError(f"SparseViT needs a token grid divisible by {sparse} (got {h}x{w}): use 512x512 inputs")
        gh, gw, hd = h // sparse, w // sparse, c // self.heads
        # token (bi * gh + a, bj * gw + b) belongs to group (a, b), member (bi, bj)
        qkv = self.qkv(x).view(b, sparse, gh, sparse, gw, 3, self.heads, hd)
        q, k, v = qkv.permute(5, 0, 2, 4, 6, 1, 3, 7).reshape(3, b * gh * gw, self.heads, sparse * sparse, hd)
        out = F.scaled_dot_product_attention(q, k, v)
        out = out.view(b, gh, gw, self.heads, sparse, sparse, hd).permute(0, 4, 1, 5, 2, 3, 6).reshape(b, h, w, c)
        return self.proj(out)


class DWConv(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = DWConv(hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, H, W, C) tokens."""
        y = self.dwconv.dwconv(self.fc1(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return self.fc2(F.gelu(y))


class SABlock(nn.Module):
    """Sparse self-attention block with layer scale (its pos_embed is in the checkpoint but unused)."""

    def __init__(self, dim: int, sparse: int, head_dim: int = 64):
        super().__init__()
        self.sparse = sparse
        self.pos_embed = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, dim // head_dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, dim * 4)
        self.gamma_1 = nn.Parameter(torch.full((dim,), 1e-6))
        self.gamma_2 = nn.Parameter(torch.full((dim,), 1e-6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, H, W, C) tokens."""
        x = x + self.gamma_1 * self.attn(self.norm1(x), self.sparse)
        return x + self.gamma_2 * self.mlp(self.norm2(x))


class SparseViTBackbone(nn.Module):
    def __init__(self, sparse3=(4, 8, 16, 32), sparse4=(8, 16)):
        super().__init__()
        chans = (3,) + DIMS[:-1]
        for i, patch in enumerate((4, 2, 2, 2)):
            setattr(self, f"patch_embed{i + 1}", PatchEmbed(chans[i], DIMS[i], patch))
        self.blocks1 = nn.ModuleList(CBlock(DIMS[0]) for _ in range(DEPTHS[0]))
        self.norm1 = nn.LayerNorm(DIMS[0], eps=1e-6)  # unused by the official forward
        self.blocks2 = nn.ModuleList(CBlock(DIMS[1]) for _ in range(DEPTHS[1]))
        self.norm2 = nn.LayerNorm(DIMS[1], eps=1e-6)  # unused by the official forward
        self.blocks3 = nn.ModuleList(SABlock(DIMS[2], sparse3[i // 5]) for i in range(DEPTHS[2]))
        self.norm3 = nn.LayerNorm(DIMS[2], eps=1e-6)
        self.blocks4 = nn.ModuleList(SABlock(DIMS[3], sparse4[i // 4]) for i in range(DEPTHS[3]))
        self.norm4 = nn.LayerNorm(DIMS[3], eps=1e-6)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Six maps (B, C, h, w): stage 3 after blocks 5, 10, 15 and normed after 20; stage 4 after
        block 4 and normed at the end."""
        x = self.patch_embed1(x)
        if not x.is_cuda:
            x = x.contiguous(memory_format=torch.channels_last)
        for blk in self.blocks1:
            x = blk(x)
        x = self.patch_embed2(x)
        for blk in self.blocks2:
            x = blk(x)
        x = self.patch_embed3(x).permute(0, 2, 3, 1)  # tokens (B, H, W, C) from here on
        outs = []
        for i, blk in enumerate(self.blocks3):
            x = blk(x)
            if i in (4, 9, 14):
                outs.append(x)
        outs.append(self.norm3(x))
        x = self.patch_embed4(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        for i, blk in enumerate(self.blocks4):
            x = blk(x)
            if i == 3:
                outs.append(x)
        outs.append(self.norm4(x))
        return [o.permute(0, 3, 1, 2) for o in outs]


class Multiple(nn.Module):
    """Learnable multi-scale supervision: per-channel weighted sum of six maps, LayerNorm, 1x1 to a logit."""

    def __init__(self, dim: int = 512):
        super().__init__()
        for i in range(1, 7):
            setattr(self, f"gamma{i}", nn.Parameter(torch.full((dim,), 1e-6)))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        for i in range(1, 5):
            setattr(self, f"conv_layer{i}", nn.Conv2d(DIMS[2], dim, 1))
        self.conv_last = nn.Conv2d(dim, 1, 1)

    def forward(self, maps: list[torch.Tensor]) -> torch.Tensor:
        size = maps[0].shape[-2:]
        acc = 0
        for i, m in enumerate(maps, 1):
            if i <= 4:
                m = getattr(self, f"conv_layer{i}")(m)
            else:
                m = F.interpolate(m, size=size, mode="bilinear", align_corners=False)
            acc = acc + getattr(self, f"gamma{i}").view(1, -1, 1, 1) * m
        acc = self.norm(acc.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return self.conv_last(acc)


class SparseViT(nn.Module):
    """SparseViT (50.35 M parameters). ``forward`` takes the ImageNet-normalised image (B, 3, 512, 512)
    and returns logits (B, 1, 512, 512)."""

    def __init__(self, size: int = 512):
        super().__init__()
        self.size = size
        self.encoder_net = SparseViTBackbone()
        self.lmu = Multiple()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.lmu(self.encoder_net(x))
        return F.interpolate(logits, size=(self.size, self.size), mode="bilinear", align_corners=False)
