"""What a breakdown exports and how it times it: the same settings for every stage and the whole model."""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

FORMATS = ("tflite", "onnx")
#: The results key of the head artifact run with the numpy post-processing methods (``--post``).
NUMPY_POST = "post-numpy"
PRECISIONS = ("fp32", "fp16", "int8")
Progress = Callable[[str], None]


@dataclass
class BreakdownOptions:
    """One artifact configuration (format, precision, input size) on one device, one engine."""

    fmt: str = "tflite"
    precision: str = "fp32"
    input_size: tuple[int, int] = (512, 512)
    device: str = "local"
    engine: str = "auto"                          # auto | python | benchmark_model (see resolve_engine)
    engine_reason: str | None = None              # why the engine was chosen (set with it)
    threads: int = 1
    warmup: int = 10
    runs: int = 50
    cores: str = "big"
    benchmark_binary: str | None = None
    adb_path: str | None = None
    ssh_config: str | None = None
    python: str | None = None                     # None: this interpreter for local, python3 elsewhere
    allow_hot: bool = False
    calibration: list[np.ndarray] | None = None   # NCHW float32 images, preprocessed (int8 only)
    calibration_source: str | None = None
    rounds: int = 5                                # runs are split into rounds, stages interleaved
    profile: bool = True                           # the operator view, where the engine can give one
    post: tuple[str, ...] = ("sparse",)            # numpy post-processing methods timed on the device (python engine)

    def bench_options(self, runs: int | None = None, **overrides):
        """The bench harness options of one timing call with these settings."""
        from ..bench.harness import BenchOptions

        fields = dict(threads=self.threads, warmup=self.warmup, runs=runs or self.runs, cores=self.cores,
                      engine=self.engine, allow_hot=self.allow_hot, python=self.python,
                      benchmark_binary=self.benchmark_binary)
        return BenchOptions(**{**fields, **overrides})

    def transport(self, progress: Progress | None = None):
        """An open transport to the device (``progress`` hears about slow steps, e.g. emulated inferences)."""
        from ..bench.devices import open_transport

        return open_transport(self.device, self.adb_path, self.ssh_config, progress=progress)

    def resolve_engine(self, progress: Progress | None = None) -> "BreakdownOptions":
        """These options with the engine chosen on the device (``auto``) and its binary found, once for a whole
        breakdown; options already resolved come back as they are."""
        from ..bench.conditions import collect_conditions
        from ..bench.engines import choose_engine

        if self.engine_reason is not None:
            return self
        if self.engine == "python":
            return dataclasses.replace(self, engine_reason="asked for (--engine python)")
        say = progress or (lambda message: None)
        with self.transport(progress) as transport:
            say(f"choosing the engine for {transport.name}")
            choice = choose_engine(transport, collect_conditions(transport), self.engine, [self.fmt], self.python,
                                   self.benchmark_binary)
        say(f"engine: {choice.engine} ({choice.reason})")
        return dataclasses.replace(self, engine=choice.engine, engine_reason=choice.reason,
                                   benchmark_binary=str(choice.binary.path) if choice.binary else None)
