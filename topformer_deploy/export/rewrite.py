"""Export-time rewrites of the folded model: same numbers, a graph that maps cleanly to NHWC runtimes.

* :class:`NhwcAttention` - the official attention reshapes NCHW conv outputs to ``(B, heads, dim, N)`` and
  permutes them; forced into NHWC by a TFLite converter that costs ~7 TRANSPOSE ops per block. Here the
  same function is computed from channels-last views: one fused q/k/v 1x1 conv, one transpose to split the
  heads, ``q @ k^T`` as a 3-D batch matmul (the converter folds the transpose of ``k`` into BATCH_MATMUL's
  ``adj_y``), one transpose to merge them back, and the output projection as the original 1x1 conv.
  Counted on simulated Arm cores (Tiny 512, Cortex-A72) this is the plain conversion's work (260.43 M
  instructions) with 8 TRANSPOSE instead of 28; an earlier form applying the projection per head as a batch
  matmul with a constant operand plus a sum over heads saved the second transpose but did 0.2% more work,
  and XNNPACK cannot run such a batch matmul in FP16 (it refuses the whole delegate).
* :class:`NhwcPyramidPoolAgg` - the pyramid pooling fixed for one input size, channels-last. Its
  :class:`NhwcPoolingMatrices` (the exact pooling of uneven windows, sizes that are not multiples of 64)
  compute the W pass as a batch matmul over the B*H rows of (W, C) and the H pass as a matmul on
  (H, ow*C): no TRANSPOSE in NHWC. In an int8 graph the converter turns each batch-1 int8 H pass into
  TRANSPOSE + FULLY_CONNECTED (int8, of the small W-pooled tensor): its lowering, not ours.

Not rewritten, measured: PyTorch pads a stride-2 kxk conv symmetrically by k//2, which TFLite's SAME padding
  cannot express, so the converter puts a PAD before each of the 5 strided convs. A (k+1)x(k+1) kernel with
  a zero last row/column would be SAME padding, but XNNPACK fuses a zero PAD into the next conv anyway and
  4x4/6x6 depthwise kernels leave its fast 3x3/5x5 paths: 1.38x slower for Tiny 512x512.

The PyTorch model in :mod:`topformer_deploy.model` is never changed: :func:`rewrite_for_nhwc` works on a copy.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from ..model.blocks import Attention, AveragePool, PoolingMatrices, PyramidPoolAgg


class NhwcAttention(nn.Module):
    """The folded official :class:`~topformer_deploy.model.blocks.Attention`, rewritten channels-last.

    Children: ``qkv`` (one 1x1 conv with bias; per head its kd query, kd key and d value channels) and
    ``proj`` (the original ReLU6 + folded 1x1 conv).
    """

    def __init__(self, attention: Attention):
        super().__init__()
        self.num_heads, self.key_dim, self.d = attention.num_heads, attention.key_dim, attention.d
        convs = [_folded_conv(attention.to_q), _folded_conv(attention.to_k), _folded_conv(attention.to_v)]
        heads, widths = self.num_heads, (self.key_dim, self.key_dim, self.d)
        weights = [c.weight.reshape(heads, w, -1) for c, w in zip(convs, widths)]
        biases = [_bias(c).reshape(heads, w) for c, w in zip(convs, widths)]
        in_channels = convs[0].in_channels
        self.qkv = nn.Conv2d(in_channels, heads * sum(widths), 1, bias=True)
        with torch.no_grad():
            self.qkv.weight.copy_(torch.cat(weights, dim=1).reshape(-1, in_channels, 1, 1))
            self.qkv.bias.copy_(torch.cat(biases, dim=1).reshape(-1))
        _folded_conv(attention.proj[1])
        self.proj = attention.proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        n, heads, per_head = h * w, self.num_heads, 2 * self.key_dim + self.d
        qkv = self.qkv(x).permute(0, 2, 3, 1).reshape(b, n, heads, per_head)      # free in NHWC
        qkv = qkv.permute(0, 2, 1, 3).reshape(b * heads, n, per_head)              # TRANSPOSE: split heads
        q, k, v = qkv.split([self.key_dim, self.key_dim, self.d], dim=-1)
        attn = torch.bmm(q, k.transpose(1, 2)).softmax(dim=-1)                    # BATCH_MATMUL adj_y
        out = torch.bmm(attn, v).reshape(b, heads, n, self.d)
        out = out.permute(0, 2, 1, 3).reshape(b, h, w, heads * self.d)             # TRANSPOSE: merge heads
        return self.proj(out.permute(0, 3, 1, 2))                                  # ReLU6 + 1x1 conv


class NhwcPoolingMatrices(nn.Module):
    """:class:`~topformer_deploy.model.blocks.PoolingMatrices` (same buffers, same numbers) on NHWC tensors."""

    def __init__(self, pool: PoolingMatrices):
        super().__init__()
        self.size, self.out = pool.size, pool.out
        self.pool_rows, self.pool_cols = pool.pool_rows, pool.pool_cols
        self.register_buffer("rows", pool.rows.clone())
        self.register_buffer("cols", pool.cols.clone())

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        b, h, w, c = t.shape
        oh, ow = self.out
        if self.pool_rows:
            t = torch.matmul(self.rows, t.reshape(b, h, w * c))                   # (B, oh, W*C)
        if self.pool_cols:
            t = torch.matmul(self.cols, t.reshape(b * oh, w, c))                  # (B*oh, ow, C)
        return t.reshape(b, oh, ow, c)


class NhwcPyramidPoolAgg(nn.Module):
    """A :class:`~topformer_deploy.model.blocks.PyramidPoolAgg` whose pooling was fixed for one input size,
    computed channels-last: each level from the NHWC view of its tokens, concatenated on the last axis,
    one permute back (all free in NHWC; pooling to NCHW and concatenating on channels instead makes the
    converter put a TRANSPOSE after every level and one after the concatenation).
    """

    def __init__(self, ppa: PyramidPoolAgg):
        super().__init__()
        self.stride = ppa.stride
        self.levels = nn.ModuleList(NhwcPoolingMatrices(level) if isinstance(level, PoolingMatrices) else level
                                    for level in ppa.levels)

    def forward(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        # The clone (no op in the .tflite) keeps litert-torch's layout pass from making an int8 token NCHW
        # for the permute (3 TRANSPOSEs per level, measured); an average pool does that by itself.
        pooled = [level(x).permute(0, 2, 3, 1) if isinstance(level, AveragePool)
                  else level(x.clone().permute(0, 2, 3, 1)) for level, x in zip(self.levels, inputs)]
        return torch.cat(pooled, dim=-1).permute(0, 3, 1, 2)


def _folded_conv(conv_bn: nn.Sequential) -> nn.Conv2d:
    if not isinstance(conv_bn.bn, nn.Identity):
        raise ValueError("rewrite_for_nhwc needs a BatchNorm-folded model (call fold_batchnorm first)")
    return conv_bn.c


def _bias(conv: nn.Conv2d) -> torch.Tensor:
    return conv.bias if conv.bias is not None else torch.zeros(conv.out_channels)


def rewrite_for_nhwc(folded: nn.Module) -> nn.Module:
    """A copy of a BN-folded model with NHWC-friendly attention and (once fixed for a size) pyramid pooling."""
    model = copy.deepcopy(folded).eval()
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, Attention):
                setattr(parent, name, NhwcAttention(child))
            elif isinstance(child, PyramidPoolAgg) and child.levels is not None:
                setattr(parent, name, NhwcPyramidPoolAgg(child))
    return model
