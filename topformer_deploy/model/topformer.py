"""TopFormer Tiny / Small / Base: one config table, a backbone, a segmentor and a builder.

``VARIANTS`` holds the three architectures; ``OFFICIAL_CONFIGS`` names every official segmentation config
(hustvl/TopFormer ``local_configs/topformer/``) as one of them with its changes and class count, so a model
can say which official configs it is. :func:`build_model` takes a variant name and any config field.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn

from .blocks import BasicLayer, InjectionMultiSum, PyramidPoolAgg, SimpleHead, TokenPyramidModule, make_divisible
from .stages import TOKEN_STRIDES


@dataclass(frozen=True)
class VariantConfig:
    """Hyper-parameters of one TopFormer (official ``Topformer`` backbone + ``SimpleHead`` arguments)."""

    cfgs: tuple[tuple[int, int | float, int, int], ...]  # TPM layers: kernel, expand ratio, channels, stride
    embed_out_indice: tuple[int, ...]  # the TPM layers (0-based) whose outputs are the pyramid tokens
    channels: tuple[int, ...]  # pyramid token channels (1/4 .. 1/32)
    out_channels: tuple[int, ...]  # SIM width per scale (index 0 unused)
    num_heads: int
    head_channels: int
    head_is_dw: bool  # the head's linear_fuse is depthwise (groups = channels)
    depths: int = 4
    key_dim: int = 16
    attn_ratio: float = 2
    mlp_ratio: float = 2
    c2t_stride: int = 2
    decode_out_indices: tuple[int, ...] = (1, 2, 3)
    stem_channels: int = 16


#: The fields that make the backbone's TPM and SASE (what a variant name stands for).
BACKBONE_FIELDS = ("cfgs", "embed_out_indice", "channels", "num_heads", "depths", "key_dim", "attn_ratio",
                   "mlp_ratio", "c2t_stride", "stem_channels")
#: Stride of each TPM layer in every official config (Tiny has 9 layers, Small and Base 10; the strides are
#: not in the weights, so checkpoints are read with this pattern, 1 for any further layer).
OFFICIAL_STRIDES = (1, 2, 1, 2, 1, 2, 1, 2, 1)

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


def _official_configs() -> dict[str, tuple[str, int, dict]]:
    """Config file name -> (variant, num_classes, the fields it changes), from topformer-reference.md."""
    table = {
        "topformer_tiny_512x512_160k_2x8_ade20k.py": ("tiny", 150, {}),
        "topformer_tiny_448x448_160k_2x8_ade20k.py": ("tiny", 150, {}),
        "topformer_small_512x512_160k_2x8_ade20k.py": ("small", 150, {}),
        "topformer_base_512x512_160k_2x8_ade20k.py": ("base", 150, {}),
        "topformer_base_512x512_160k_4x8_ade20k.py": ("base", 150, {}),
        # Cityscapes writes its model out in full: Tiny without is_dw, Base with SIM and head width 128.
        "topformer_tiny_1024x512_80k_2x8_city.py": ("tiny", 19, {"head_is_dw": False}),
        "topformer_base_1024x512_80k_2x8city.py": ("base", 19, {"out_channels": (0, 128, 128, 128),
                                                                "head_channels": 128}),
    }
    for tag, classes in (("480x480_80k_2x8_pascalcontext", 60), ("480x480_80k_2x8_pascalcontext_59", 59),
                         ("512x512_80k_2x8_cocostuff10k", 171)):
        for variant in VARIANTS:
            table[f"topformer_{variant}_{tag}.py"] = (variant, classes, {})
    return table


OFFICIAL_CONFIGS = _official_configs()

#: Input sizes the network takes: at least 32 per side (it downsamples by 32, then pools by 2); at most
#: 8192 per side (beyond that the activations alone need tens of GB).
MIN_INPUT_SIZE = 32
MAX_INPUT_SIZE = 8192


def variant_name(config: VariantConfig) -> str:
    """The variant whose backbone (TPM + SASE) ``config`` has, or ``"custom"``."""
    return next((name for name, known in VARIANTS.items()
                 if all(getattr(known, f) == getattr(config, f) for f in BACKBONE_FIELDS)), "custom")


def official_configs(config: VariantConfig, num_classes: int) -> list[str]:
    """The official config files that build exactly this architecture and class count (empty: custom)."""
    return [name for name, (variant, classes, changes) in OFFICIAL_CONFIGS.items()
            if classes == num_classes and dataclasses.replace(VARIANTS[variant], **changes) == config]


def layer_strides(cfgs) -> list[int]:
    """Stride (w.r.t. the input) of each TPM layer's output: the stem's 2 times the layers' strides so far."""
    strides, stride = [], 2
    for _, _, _, s in cfgs:
        stride *= s
        strides.append(stride)
    return strides


def token_strides(config: VariantConfig) -> tuple[int, ...]:
    """Stride (w.r.t. the input) of each pyramid token map."""
    strides = layer_strides(config.cfgs)
    return tuple(strides[i] for i in config.embed_out_indice)


def check_config(config: VariantConfig) -> None:
    """Raise ValueError for a config this tool cannot build or describe (one line, naming the field)."""
    layers = len(config.cfgs)
    if not (len(config.channels) == len(config.embed_out_indice) == len(config.out_channels)):
        raise ValueError(f"channels, embed_out_indice and out_channels need one entry per pyramid level, got "
                         f"{len(config.channels)}, {len(config.embed_out_indice)}, {len(config.out_channels)}")
    if list(config.embed_out_indice) != sorted(set(config.embed_out_indice)) or not all(
            0 <= i < layers for i in config.embed_out_indice):
        raise ValueError(f"embed_out_indice {config.embed_out_indice} must be increasing TPM layer indices "
                         f"(0..{layers - 1})")
    for level, (index, width) in enumerate(zip(config.embed_out_indice, config.channels)):
        if make_divisible(config.cfgs[index][2], 8) != width:
            raise ValueError(f"channels[{level}] = {width} but TPM layer {index} outputs "
                             f"{make_divisible(config.cfgs[index][2], 8)} channels")
    if token_strides(config) != TOKEN_STRIDES:
        raise ValueError(f"the pyramid tokens have strides {token_strides(config)}; this tool describes "
                         f"TopFormers whose tokens are at {TOKEN_STRIDES} (1/4 .. 1/32)")
    if tuple(config.decode_out_indices) != (1, 2, 3):
        raise ValueError(f"decode_out_indices {config.decode_out_indices}: only the official (1, 2, 3) is supported")
    widths = {config.out_channels[i] for i in config.decode_out_indices}
    if widths != {config.head_channels}:
        raise ValueError(f"the head sums the SIM outputs, so every SIM width ({sorted(widths)}) must equal "
                         f"head_channels ({config.head_channels})")
    for name in ("num_heads", "head_channels", "depths", "key_dim", "c2t_stride", "stem_channels"):
        if getattr(config, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(config, name)}")


class TopFormerBackbone(nn.Module):
    """The official ``Topformer`` backbone: TPM -> PyramidPoolAgg + transformer (SASE) -> SIM. Returns the 1/8, 1/16, 1/32 maps."""

    def __init__(self, cfg: VariantConfig):
        super().__init__()
        self.channels = list(cfg.channels)
        self.decode_out_indices = list(cfg.decode_out_indices)
        self.tpm = TokenPyramidModule([list(c) for c in cfg.cfgs], list(cfg.embed_out_indice), cfg.stem_channels)
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
    """Segmentor: ``backbone`` + ``decode_head``; forward returns logits at 1/8 of the input.

    ``config`` is a :class:`VariantConfig` (or a variant name); ``variant`` is the name of its backbone
    (``"custom"`` when no variant has it).
    """

    def __init__(self, config: VariantConfig | str, num_classes: int = 150):
        super().__init__()
        cfg = VARIANTS[config] if isinstance(config, str) else config
        self.variant = variant_name(cfg)
        self.num_classes = num_classes
        self.config = cfg
        #: What the config was read from and what had to be assumed (set by load_checkpoint).
        self.config_source: dict = {"from": "config"}
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

    def token_sizes(self, height: int, width: int) -> list[tuple[int, int]]:
        """(height, width) of each pyramid token map for a (height, width) input (conv arithmetic, no run)."""
        def conv(size: int, kernel: int, stride: int) -> int:
            return (size + 2 * (kernel // 2) - kernel) // stride + 1

        h, w = conv(height, 3, 2), conv(width, 3, 2)  # the stem
        sizes = []
        for index, (kernel, _, _, stride) in enumerate(self.config.cfgs):
            h, w = conv(h, kernel, stride), conv(w, kernel, stride)
            if index in self.config.embed_out_indice:
                sizes.append((h, w))
        return sizes

    def describe(self) -> dict:
        """JSON-ready: variant, config fields, classes, parameters, and the official configs it matches."""
        return {"variant": self.variant, "num_classes": self.num_classes,
                "config": _plain(dataclasses.asdict(self.config)),
                "official_configs": official_configs(self.config, self.num_classes),
                "parameters": sum(p.numel() for p in self.parameters()), "config_source": self.config_source}


def _plain(value):
    """Tuples as lists and integral floats as ints (JSON-friendly config fields)."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def check_input_size(height: int, width: int) -> None:
    """Raise ValueError for an input size the network cannot take (too small, or absurdly large)."""
    if height < MIN_INPUT_SIZE or width < MIN_INPUT_SIZE:
        raise ValueError(f"input size {height}x{width} is too small: TopFormer needs at least "
                         f"{MIN_INPUT_SIZE}x{MIN_INPUT_SIZE} (it downsamples by 32, then pools by 2)")
    if height > MAX_INPUT_SIZE or width > MAX_INPUT_SIZE:
        raise ValueError(f"input size {height}x{width} is too large: at most {MAX_INPUT_SIZE} per side "
                         f"(resize the image first)")


def resolve_config(variant: str | VariantConfig = "tiny", **fields) -> VariantConfig:
    """A variant's config (or ``variant`` itself, a VariantConfig) with ``fields`` replaced, checked."""
    if isinstance(variant, VariantConfig):
        base = variant
    else:
        key = str(variant).lower()
        if key not in VARIANTS:
            raise ValueError(f"unknown variant {variant!r}: choose one of {', '.join(VARIANTS)}")
        base = VARIANTS[key]
    known = {f.name for f in dataclasses.fields(VariantConfig)}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise ValueError(f"unknown config field {', '.join(unknown)}: the fields are {', '.join(sorted(known))}")
    config = dataclasses.replace(base, **{k: _frozen(v) for k, v in fields.items()})
    check_config(config)
    return config


def _frozen(value):
    return tuple(_frozen(v) for v in value) if isinstance(value, (list, tuple)) else value


def build_model(variant: str | VariantConfig = "tiny", num_classes: int = 150, **fields) -> TopFormer:
    """A TopFormer in eval mode with default init: a variant ('tiny', 'small', 'base') or a VariantConfig,
    with any config field changed, e.g. ``build_model("tiny", num_classes=19, head_is_dw=False)``
    (the official Cityscapes Tiny)."""
    config = resolve_config(variant, **fields)
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    return TopFormer(config, num_classes).eval()
