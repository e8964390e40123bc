"""Post-processing: the class map an app computes from the network's 1/8 logits, exactly or cheaply.

An app upsamples the logits to the input size (bilinear, ``align_corners=False``) and takes the argmax
over the classes, and that costs more than the network itself. The exact methods here give PyTorch's
``F.interpolate(logits, size, mode="bilinear", align_corners=False).argmax(1)`` bit for bit:

- ``dense``: the reference - PyTorch's CPU bilinear kernel reproduced operation for operation in numpy
  (the source indices, the weights, the order of the products and sums, fused multiply-adds or not), then
  the argmax.
- ``sparse``: the same class map, computing the scores only where the 2x2 low-resolution support of a
  block of output pixels has no common winner with a margin above the worst-case float32 rounding error;
  elsewhere the low-resolution winner is copied. Several times cheaper than the network's in-graph
  ``argmax-full`` output.

and three cheaper methods that are not exact (measured for what they give up in docs/postprocessing.md):
``nearest`` (argmax at 1/8, nearest upsampling), ``bilinear-half`` and ``bilinear-quarter`` (the exact map
at half / a quarter of the size, then nearest).

    from topformer_deploy.postprocess import class_map
    classes = class_map(logits, (512, 512))                       # (1, C, 64, 64) -> (512, 512) int32
    classes = class_map(tflite_output, (512, 512), layout="NHWC")  # (1, 64, 64, C)

PyTorch's arithmetic depends on the machine and the shape (its generic NCHW kernel or its channels-last
one, with or without fused multiply-adds): :func:`torch_arithmetic` finds which one it uses here, for
tests and evaluation that compare with PyTorch; on a device the default (PyTorch's generic kernel with
fused multiply-adds, what its AVX2/AVX512 builds run) defines the exact map.

The implementations live in a marked section of the single-file device runner
(:mod:`topformer_deploy.bench.device_runner`), which carries them to the device so that ``bench --post``
and ``breakdown`` time them there; this module is their public face. numpy only, except
:func:`torch_arithmetic`.
"""
from __future__ import annotations

import functools

import numpy as np

from .bench.device_runner import (ARITHMETICS, DEFAULT_ARITHMETIC, EXACT_POST_METHODS, POST_METHODS,
                                  axis_weights, bilinear_at, bilinear_upsample, class_map, class_scores,
                                  dense_class_map, fma32, nearest_class_map, sparse_class_map)

__all__ = ["ARITHMETICS", "DEFAULT_ARITHMETIC", "EXACT_POST_METHODS", "POST_METHODS", "axis_weights",
           "bilinear_at", "bilinear_upsample", "class_map", "class_scores", "dense_class_map", "fma32",
           "nearest_class_map", "sparse_class_map", "torch_arithmetic"]

#: Output pixels compared per probe (all classes each): the arithmetics differ in a third or more of them.
PROBE_PIXELS = 1024


def torch_arithmetic(num_classes: int, in_size: tuple[int, int], out_size: tuple[int, int],
                     channels_last: bool = False) -> str:
    """The entry of ARITHMETICS that PyTorch's CPU ``F.interpolate(mode="bilinear", align_corners=False)``
    computes for float32 scores of this shape here, at the current ``torch.get_num_threads()``.

    Found by running PyTorch on seeded random scores of that shape and comparing the values at
    PROBE_PIXELS output pixels bit for bit with each arithmetic (cached per shape, threads and version).
    """
    import torch

    return _probe(int(num_classes), tuple(map(int, in_size)), tuple(map(int, out_size)), bool(channels_last),
                  torch.get_num_threads(), torch.__version__)


@functools.lru_cache(maxsize=64)
def _probe(num_classes, in_size, out_size, channels_last, threads, version) -> str:
    import torch
    import torch.nn.functional as F

    rng = np.random.default_rng(0)
    scores = (rng.standard_normal((num_classes, *in_size)) * 8).astype(np.float32)
    tensor = torch.from_numpy(scores)[None]
    if channels_last:
        tensor = tensor.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        full = F.interpolate(tensor, size=out_size, mode="bilinear", align_corners=False)[0].numpy()
    ys = rng.integers(0, out_size[0], PROBE_PIXELS)
    xs = rng.integers(0, out_size[1], PROBE_PIXELS)
    ys[:4], xs[:4] = [0, 0, out_size[0] - 1, out_size[0] - 1], [0, out_size[1] - 1, 0, out_size[1] - 1]
    expected = full[:, ys, xs]
    for arithmetic in ARITHMETICS:
        if np.array_equal(bilinear_at(scores, out_size, ys, xs, arithmetic), expected):
            return arithmetic
    raise RuntimeError(f"PyTorch {version}'s bilinear kernel for {num_classes}x{in_size} -> {out_size} matches "
                       f"none of {', '.join(ARITHMETICS)}")
