"""TopFormer building blocks, with the official attribute names so official state_dicts map 1:1.

Every module here follows hustvl/TopFormer (``mmseg/models/backbones/topformer.py``) and the mmcv
``ConvModule`` / mmseg ``SimpleHead`` it uses; see ``shared/topformer-reference.md``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round a channel count as the official ``_make_divisible`` does."""
    new_value = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if new_value < 0.9 * value:
        new_value += divisor
    return new_value


class Conv2d_BN(nn.Sequential):  # noqa: N801 - official name
    """Conv2d (no bias) + BatchNorm2d as children ``c`` and ``bn``."""

    def __init__(self, a: int, b: int, ks: int = 1, stride: int = 1, pad: int = 0, groups: int = 1):
        super().__init__()
        self.add_module("c", nn.Conv2d(a, b, ks, stride, pad, groups=groups, bias=False))
        self.add_module("bn", nn.BatchNorm2d(b))


class ConvModule(nn.Sequential):
    """mmcv ``ConvModule`` with BN: children ``conv``, ``bn`` and, when ``act``, ``activate`` (ReLU)."""

    def __init__(self, inp: int, oup: int, groups: int = 1, act: bool = False):
        super().__init__()
        self.add_module("conv", nn.Conv2d(inp, oup, 1, groups=groups, bias=False))
        self.add_module("bn", nn.BatchNorm2d(oup))
        if act:
            self.add_module("activate", nn.ReLU())


class InvertedResidual(nn.Module):
    """MobileNetV2 block: [1x1 expand + ReLU] -> kxk depthwise + ReLU -> 1x1 linear (+ residual)."""

    def __init__(self, inp: int, oup: int, ks: int, stride: int, expand_ratio: float):
        super().__init__()
        hidden = int(round(inp * expand_ratio))
        self.use_res_connect = stride == 1 and inp == oup
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers += [Conv2d_BN(inp, hidden), nn.ReLU()]
        layers += [
            Conv2d_BN(hidden, hidden, ks, stride, ks // 2, groups=hidden),
            nn.ReLU(),
            Conv2d_BN(hidden, oup),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class TokenPyramidModule(nn.Module):
    """TPM: stem + ``layer1..layerN`` inverted residuals; returns the tokens after ``out_indices``."""

    def __init__(self, cfgs: list[list[int]], out_indices: list[int], inp_channel: int = 16):
        super().__init__()
        self.out_indices = list(out_indices)
        self.stem = nn.Sequential(Conv2d_BN(3, inp_channel, 3, 2, 1), nn.ReLU())
        self.layer_names: list[str] = []
        for i, (k, t, c, s) in enumerate(cfgs):
            oup = make_divisible(c, 8)
            self.add_module(f"layer{i + 1}", InvertedResidual(inp_channel, oup, k, s, t))
            self.layer_names.append(f"layer{i + 1}")
            inp_channel = oup

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        x = self.stem(x)
        for i, name in enumerate(self.layer_names):
            x = getattr(self, name)(x)
            if i in self.out_indices:
                outs.append(x)
        return outs


def adaptive_pool_matrix(size: int, out: int) -> torch.Tensor:
    """The (out, size) matrix of 1-D adaptive average pooling.

    Row i averages the inputs [floor(i * size / out), ceil((i + 1) * size / out)), as ``adaptive_avg_pool``.
    """
    matrix = torch.zeros(out, size)
    for i in range(out):
        start, end = (i * size) // out, -(-(i + 1) * size // out)
        matrix[i, start:end] = 1.0 / (end - start)
    return matrix


class AveragePool(nn.Module):
    """One pyramid level whose windows are even: a plain ``avg_pool2d`` (kernel = stride)."""

    def __init__(self, size: tuple[int, int], out: tuple[int, int]):
        super().__init__()
        self.size, self.out = tuple(size), tuple(out)
        self.kernel = (size[0] // out[0], size[1] // out[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, self.kernel)


class PoolingMatrices(nn.Module):
    """One pyramid level's adaptive average pooling at a fixed size, exactly: ``rows @ x @ cols^T``.

    Adaptive pooling over a rectangle window is separable, so it is two constant matrices, one per axis
    (:func:`adaptive_pool_matrix`); an axis that is not pooled (size == output) is skipped. The buffers are
    ``rows`` (oh, h) and ``cols`` (ow, w); this NCHW form multiplies ``x @ cols^T`` (a MatMul with a constant
    right operand) then ``rows @ .``.
    """

    def __init__(self, size: tuple[int, int], out: tuple[int, int]):
        super().__init__()
        self.size, self.out = tuple(size), tuple(out)
        self.pool_rows, self.pool_cols = size[0] != out[0], size[1] != out[1]
        self.register_buffer("rows", adaptive_pool_matrix(size[0], out[0]))
        self.register_buffer("cols", adaptive_pool_matrix(size[1], out[1]))
        self.register_buffer("cols_t", self.cols.t().contiguous())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool_cols:
            x = torch.matmul(x, self.cols_t)
        if self.pool_rows:
            x = torch.matmul(self.rows, x)
        return x


class PyramidPoolAgg(nn.Module):
    """Pool every pyramid level to ceil(last / stride) and concatenate on channels (no parameters).

    The official ``adaptive_avg_pool2d`` by default. For export, :meth:`fix_sizes` replaces it, for one input
    size, by exact fixed operations per level (``levels``): a plain :class:`AveragePool` where the windows are
    even (every level of a multiple-of-64 input), else :class:`PoolingMatrices`.
    """

    def __init__(self, stride: int = 2):
        super().__init__()
        self.stride = stride
        self.levels: nn.ModuleList | None = None

    def output_size(self, last: torch.Tensor | tuple[int, int]) -> tuple[int, int]:
        h, w = last.shape[-2:] if isinstance(last, torch.Tensor) else last
        return (h - 1) // self.stride + 1, (w - 1) // self.stride + 1

    def plan(self, sizes: list[tuple[int, int]]) -> list[dict]:
        """How each level of these token sizes is pooled exactly: ``{size, output, op}``, op avg_pool | matrices."""
        out = self.output_size(sizes[-1])
        return [{"size": [h, w], "output": list(out),
                 "op": "avg_pool" if h % out[0] == 0 and w % out[1] == 0 else "matrices"} for h, w in sizes]

    def fix_sizes(self, sizes: list[tuple[int, int]]) -> list[dict]:
        """Pool these token sizes with fixed exact operations from now on; returns :meth:`plan`."""
        plan = self.plan(sizes)
        kinds = {"avg_pool": AveragePool, "matrices": PoolingMatrices}
        self.levels = nn.ModuleList(kinds[p["op"]](tuple(p["size"]), tuple(p["output"])) for p in plan)
        return plan

    def forward(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        if self.levels is None:
            out = self.output_size(inputs[-1])
            return torch.cat([F.adaptive_avg_pool2d(x, out) for x in inputs], dim=1)
        sizes = [tuple(x.shape[-2:]) for x in inputs]
        if sizes != [level.size for level in self.levels]:
            raise ValueError(f"the pyramid pooling was fixed for token sizes {[level.size for level in self.levels]}, "
                             f"got {sizes}")
        return torch.cat([level(x) for level, x in zip(self.levels, inputs)], dim=1)


class Attention(nn.Module):
    """Multi-head attention over a feature map. No 1/sqrt(d) scaling, as in the official code."""

    def __init__(self, dim: int, key_dim: int, num_heads: int, attn_ratio: float = 2):
        super().__init__()
        self.num_heads = num_heads
        self.key_dim = key_dim
        self.d = int(attn_ratio * key_dim)
        self.dh = self.d * num_heads
        nh_kd = key_dim * num_heads
        self.to_q = Conv2d_BN(dim, nh_kd)
        self.to_k = Conv2d_BN(dim, nh_kd)
        self.to_v = Conv2d_BN(dim, self.dh)
        self.proj = nn.Sequential(nn.ReLU6(), Conv2d_BN(self.dh, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        n = h * w
        q = self.to_q(x).reshape(b, self.num_heads, self.key_dim, n).permute(0, 1, 3, 2)
        k = self.to_k(x).reshape(b, self.num_heads, self.key_dim, n)
        v = self.to_v(x).reshape(b, self.num_heads, self.d, n).permute(0, 1, 3, 2)
        attn = torch.matmul(q, k).softmax(dim=-1)
        out = torch.matmul(attn, v).permute(0, 1, 3, 2).reshape(b, self.dh, h, w)
        return self.proj(out)


class Mlp(nn.Module):
    """fc1 (1x1 ConvBN) -> 3x3 depthwise conv with bias -> ReLU6 -> fc2 (1x1 ConvBN)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = Conv2d_BN(dim, hidden)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, 1, 1, groups=hidden, bias=True)
        self.act = nn.ReLU6()
        self.fc2 = Conv2d_BN(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.dwconv(self.fc1(x))))


class Block(nn.Module):
    """Transformer block: x + attn(x), then x + mlp(x) (drop path is identity at inference)."""

    def __init__(self, dim: int, key_dim: int, num_heads: int, mlp_ratio: float, attn_ratio: float):
        super().__init__()
        self.attn = Attention(dim, key_dim, num_heads, attn_ratio)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(x)
        return x + self.mlp(x)


class BasicLayer(nn.Module):
    """The SASE transformer: ``transformer_blocks`` = ModuleList of Blocks."""

    def __init__(self, depth: int, dim: int, key_dim: int, num_heads: int, mlp_ratio: float, attn_ratio: float):
        super().__init__()
        self.transformer_blocks = nn.ModuleList(
            Block(dim, key_dim, num_heads, mlp_ratio, attn_ratio) for _ in range(depth)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.transformer_blocks:
            x = block(x)
        return x


class HSigmoid(nn.Module):
    """h_sigmoid(x) = ReLU6(x + 3) / 6."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu6(x + 3) / 6


class InjectionMultiSum(nn.Module):
    """SIM: local_embedding(x_l) * up(h_sigmoid(global_act(x_g))) + up(global_embedding(x_g))."""

    def __init__(self, inp: int, oup: int):
        super().__init__()
        self.local_embedding = ConvModule(inp, oup)
        self.global_embedding = ConvModule(inp, oup)
        self.global_act = ConvModule(inp, oup)
        self.act = HSigmoid()

    def forward(self, x_l: torch.Tensor, x_g: torch.Tensor) -> torch.Tensor:
        size = x_l.shape[-2:]
        local_feat = self.local_embedding(x_l)
        sig_act = F.interpolate(self.act(self.global_act(x_g)), size=size, mode="bilinear", align_corners=False)
        global_feat = F.interpolate(self.global_embedding(x_g), size=size, mode="bilinear", align_corners=False)
        return local_feat * sig_act + global_feat


class SimpleHead(nn.Module):
    """Sum the three injected maps at 1/8, 1x1 ConvBN+ReLU (depthwise for Tiny), 1x1 classifier."""

    def __init__(self, channels: int, num_classes: int, is_dw: bool):
        super().__init__()
        self.linear_fuse = ConvModule(channels, channels, groups=channels if is_dw else 1, act=True)
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)

    def aggregate(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        """Sum the 1/16 and 1/32 maps, bilinearly resized, onto the 1/8 map (official ``agg_res``).

        The official code does this in place (``outs += pred``), so the 1/8 backbone output it hands
        to the head is overwritten with this sum; we return a new tensor and leave the input alone.
        """
        out = inputs[0]
        for pred in inputs[1:]:
            out = out + F.interpolate(pred, size=out.shape[-2:], mode="bilinear", align_corners=False)
        return out

    def forward(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        return self.conv_seg(self.linear_fuse(self.aggregate(inputs)))
