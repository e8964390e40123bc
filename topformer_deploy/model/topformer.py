"""TopFormer Tiny / Small / Base: one config table, a backbone, a segmentor and a builder."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .blocks import BasicLayer, InjectionMultiSum, PyramidPoolAgg, SimpleHead, TokenPyramidModule


@dataclass(frozen=True)
class VariantConfig:
    """Hyper-parameters of one TopFormer variant (official ``topformer_{tiny,small,base}`` configs)."""

    cfgs: tuple[tuple[int, int, int, int], ...]  # TPM layers: kernel, expand ratio, channels, stride
    embed_out_indice: tuple[int, ...]
    channels: tuple[int, ...]
    out_channels: tuple[int, ...]  # SIM width per scale (index 0 unused)
    num_heads: int
    head_channels: int
    head_is_dw: bool
    depths: int = 4
    key_dim: int = 16
    attn_ratio: float = 2
    mlp_ratio: float = 2
    c2t_stride: int = 2
    decode_out_indices: tuple[int, ...] = (1, 2, 3)


_TPM_HEAD = ((3, 1, 16, 1),)
VARIANTS: dict[str, VariantConfig] = {
    "tiny": VariantConfig(
        cfgs=_TPM_HEAD + ((3, 4, 16, 2), (3, 3, 16, 1), (5, 3, 32, 2), (5, 3, 32, 1),
                          (3, 3, 64, 2), (3, 3, 64, 1), (5, 6, 96, 2), (5, 6, 96, 1)),
        embed_out_indice=(2, 4, 6, 8), channels=(16, 32, 64, 96), out_channels=(0, 128, 128, 128),
        num_heads=4, head_channels=128, head_is_dw=True),
    "small": VariantConfig(
        cfgs=_TPM_HEAD + ((3, 4, 24, 2), (3, 3, 24, 1), (5, 3, 48, 2), (5, 3, 48, 1),
                          (3, 3, 96, 2), (3, 3, 96, 1), (5, 6, 128, 2), (5, 6, 128, 1), (3, 6, 128, 1)),
        embed_out_indice=(2, 4, 6, 9), channels=(24, 48, 96, 128), out_channels=(0, 192, 192, 192),
        num_heads=6, head_channels=192, head_is_dw=False),
    "base": VariantConfig(
        cfgs=_TPM_HEAD + ((3, 4, 32, 2), (3, 3, 32, 1), (5, 3, 64, 2), (5, 3, 64, 1),
                          (3, 3, 128, 2), (3, 3, 128, 1), (5, 6, 160, 2), (5, 6, 160, 1), (3, 6, 160, 1)),
        embed_out_indice=(2, 4, 6, 9), channels=(32, 64, 128, 160), out_channels=(0, 256, 256, 256),
        num_heads=8, head_channels=256, head_is_dw=False),
}

#: Input sizes must be multiples of this for the pooling to be an exact average pool.
SIZE_MULTIPLE = 64
MIN_INPUT_SIZE = 32


class TopFormerBackbone(nn.Module):
    """The official ``Topformer`` backbone: TPM -> PyramidPoolAgg + transformer (SASE) -> SIM. Returns the 1/8, 1/16, 1/32 maps."""

    def __init__(self, cfg: VariantConfig):
        super().__init__()
        self.channels = list(cfg.channels)
        self.decode_out_indices = list(cfg.decode_out_indices)
        self.tpm = TokenPyramidModule([list(c) for c in cfg.cfgs], list(cfg.embed_out_indice))
        self.ppa = PyramidPoolAgg(cfg.c2t_stride)
        self.trans = BasicLayer(cfg.depths, sum(cfg.channels), cfg.key_dim, cfg.num_heads,
                                cfg.mlp_ratio, cfg.attn_ratio)
        self.SIM = nn.ModuleList(
            InjectionMultiSum(c, o) if i in self.decode_out_indices else nn.Identity()
            for i, (c, o) in enumerate(zip(cfg.channels, cfg.out_channels))
        )

    def forward_sase(self, tokens: list[torch.Tensor]) -> torch.Tensor:
        """SASE: pool the pyramid to one grid and run the transformer blocks."""
        return self.trans(self.ppa(tokens))

    def forward_sim(self, tokens: list[torch.Tensor], semantics: torch.Tensor) -> list[torch.Tensor]:
        """SIM: inject each scale's slice of the global semantics into its local tokens."""
        parts = semantics.split(self.channels, dim=1)
        return [self.SIM[i](tokens[i], parts[i]) for i in self.decode_out_indices]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        tokens = self.tpm(x)
        return self.forward_sim(tokens, self.forward_sase(tokens))


class TopFormer(nn.Module):
    """Segmentor: ``backbone`` + ``decode_head``; forward returns logits at 1/8 of the input."""

    def __init__(self, variant: str, num_classes: int = 150):
        super().__init__()
        cfg = VARIANTS[variant]
        self.variant = variant
        self.num_classes = num_classes
        self.config = cfg
        self.backbone = TopFormerBackbone(cfg)
        self.decode_head = SimpleHead(cfg.head_channels, num_classes, cfg.head_is_dw)

    # The four stages as separate callables (timed and exported one by one later).
    def tpm(self, image: torch.Tensor) -> list[torch.Tensor]:
        return self.backbone.tpm(image)

    def sase(self, tokens: list[torch.Tensor]) -> torch.Tensor:
        return self.backbone.forward_sase(tokens)

    def sim(self, tokens: list[torch.Tensor], semantics: torch.Tensor) -> list[torch.Tensor]:
        return self.backbone.forward_sim(tokens, semantics)

    def head(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.decode_head(features)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.decode_head(self.backbone(image))


def check_input_size(height: int, width: int) -> None:
    """Raise ValueError for an input size the network cannot take."""
    if height < MIN_INPUT_SIZE or width < MIN_INPUT_SIZE:
        raise ValueError(f"input size {height}x{width} is too small: TopFormer needs at least "
                         f"{MIN_INPUT_SIZE}x{MIN_INPUT_SIZE} (it downsamples by 32, then pools by 2)")


def build_model(variant: str, num_classes: int = 150) -> TopFormer:
    """A TopFormer of ``variant`` ('tiny', 'small', 'base') in eval mode with default init."""
    key = variant.lower()
    if key not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}: choose one of {', '.join(VARIANTS)}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    return TopFormer(key, num_classes).eval()
