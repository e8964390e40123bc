"""Weights: random ones that keep every branch of TopFormer live (for latency work without a checkpoint),
and the check that a model's weights are finite.

The official initialisation sets some BatchNorm weights to zero (e.g. the attention's output projection),
so whole branches are constant and a converter folds them away: the "latency" would be that of a
different, smaller network. Here every BatchNorm gets a random non-zero scale and shift, and its running
statistics are calibrated on random images so activations keep a sensible range through the depth;
the attention's q/k are tempered so its softmax does not saturate.
"""
from __future__ import annotations

import torch
from torch import nn

from ..errors import CheckpointError
from .topformer import TopFormer, build_model
from .blocks import Attention

#: Calibration batch: big enough for per-channel statistics at the 1/64 grid, small enough to be instant.
_CALIBRATION_SHAPE = (2, 3, 256, 256)


def randomize_live(model: TopFormer, seed: int = 0) -> TopFormer:
    """Give ``model`` random live weights in place (seeded) and return it in eval mode."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                fan_in = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
                module.weight.normal_(0.0, (2.0 / fan_in) ** 0.5, generator=generator)
                if module.bias is not None:
                    module.bias.uniform_(-0.1, 0.1, generator=generator)
            elif isinstance(module, nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5, generator=generator)
                module.bias.uniform_(-0.2, 0.2, generator=generator)
                module.reset_running_stats()
                module.momentum = None  # cumulative average over the calibration pass
        model.train()
        model(torch.randn(*_CALIBRATION_SHAPE, generator=generator))
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = 0.1
        if isinstance(module, Attention):
            _temper_attention(module)
    return model.eval()


def _temper_attention(attention: Attention) -> None:
    """Scale q and k by key_dim**-0.25 each, so attention logits have unit-ish spread.

    The official attention applies no 1/sqrt(key_dim); with random q/k the softmax then saturates and
    amplifies float32 rounding ~20x (PyTorch fp32 vs fp64 differs by 2.6e-4 relative at 512x512), which
    would make the 1e-4 export check measure the weights, not the converter. Trained weights learn this scale.
    """
    factor = attention.key_dim ** -0.25
    with torch.no_grad():
        for conv_bn in (attention.to_q, attention.to_k):
            conv_bn.bn.weight.mul_(factor)
            conv_bn.bn.bias.mul_(factor)


def random_live_model(variant: str, num_classes: int = 150, seed: int = 0) -> TopFormer:
    """A TopFormer of ``variant`` with seeded random weights where every branch (attention included) is live."""
    return randomize_live(build_model(variant, num_classes), seed)


def check_finite_weights(model: nn.Module, source: str = "the model") -> None:
    """Raise CheckpointError naming the parameters/buffers of ``model`` that hold NaN or Inf.

    A single NaN weight makes every output NaN; nothing downstream (conversion, verification, scores) is
    meaningful then, so exports and evaluations refuse such a model up front.
    """
    bad = [(name, int((~torch.isfinite(t)).sum())) for name, t in model.state_dict().items()
           if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        names = ", ".join(f"{name} ({count} values)" for name, count in bad[:3])
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        raise CheckpointError(f"{source}: the weights are not finite: {len(bad)} tensor(s) hold NaN/Inf "
                              f"({names}{more}); every output would be NaN")
