"""Lazy public names: a package lists which module defines each name, and it is imported on first use.

So ``import topformer_deploy`` (or a light submodule such as ``topformer_deploy.bench.conditions``) does
not import torch or the converters. Used by every package ``__init__`` of the tool, the same way::

    __getattr__, __dir__, __all__ = lazy_names(__name__, {"build_model": ".model", ...})
"""
from __future__ import annotations

import importlib


def lazy_names(package: str, names: dict[str, str]):
    """``(__getattr__, __dir__, __all__)`` for ``package``: each name resolves from its module (relative
    module paths are taken from ``package``) when first asked for, and is then cached in the package."""
    module = importlib.import_module(package)

    def __getattr__(name: str):
        source = names.get(name)
        if source is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(source, package), name)
        setattr(module, name, value)
        return value

    def __dir__():
        return sorted(set(names) | set(vars(module)))

    return __getattr__, __dir__, sorted(names)
