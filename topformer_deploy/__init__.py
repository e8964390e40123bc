"""topformer-deploy: TopFormer to Arm CPUs, with honest on-device latency.

Public API: :func:`build_model`, :func:`load_checkpoint`, :func:`fold_batchnorm`. Names are resolved lazily,
so importing a light submodule (e.g. ``topformer_deploy.bench.conditions``) does not import torch.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "build_model": "topformer_deploy.model",
    "load_checkpoint": "topformer_deploy.model",
    "STAGES": "topformer_deploy.model",
    "VARIANTS": "topformer_deploy.model",
    "fold_batchnorm": "topformer_deploy.fold",
    "CheckpointError": "topformer_deploy.errors",
    "TopformerDeployError": "topformer_deploy.errors",
}
__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'topformer_deploy' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(__all__)
