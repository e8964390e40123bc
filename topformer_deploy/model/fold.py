"""Fold every BatchNorm into the convolution before it (inference-only, numerically equivalent)."""
from __future__ import annotations

import copy

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Return an eval-mode copy of ``model`` with each (Conv2d, BatchNorm2d) pair fused into one conv.

    The BatchNorm's slot becomes ``nn.Identity`` so module paths (``backbone.tpm.stem.0.c``) stay the same;
    the input model is left untouched. Raises ValueError if a BatchNorm has no conv right before it.
    """
    folded = copy.deepcopy(model).eval()
    for parent in folded.modules():
        names = list(parent._modules)
        for prev_name, name in zip(names, names[1:]):
            prev, bn = parent._modules[prev_name], parent._modules[name]
            if isinstance(bn, nn.BatchNorm2d) and isinstance(prev, nn.Conv2d):
                parent._modules[prev_name] = fuse_conv_bn_eval(prev, bn)
                parent._modules[name] = nn.Identity()
    leftover = [n for n, m in folded.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if leftover:
        raise ValueError(f"cannot fold BatchNorm without a preceding conv: {', '.join(leftover[:5])}")
    return folded
