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

from ..model.blocks import Attention


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


def _folded_conv(conv_bn: nn.Sequential) -> nn.Conv2d:
    if not isinstance(conv_bn.bn, nn.Identity):
        raise ValueError("rewrite_for_nhwc needs a BatchNorm-folded model (call fold_batchnorm first)")
    return conv_bn.c


def _bias(conv: nn.Conv2d) -> torch.Tensor:
    return conv.bias if conv.bias is not None else torch.zeros(conv.out_channels)


def rewrite_for_nhwc(folded: nn.Module) -> nn.Module:
    """A copy of a BN-folded model with NHWC-friendly attention."""
    model = copy.deepcopy(folded).eval()
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, Attention):
                setattr(parent, name, NhwcAttention(child))
    return model
