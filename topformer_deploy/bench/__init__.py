"""Latency on the device: transports (local, ssh, adb), the bench harness, result documents, the gate.

Public API (imported lazily, so ``topformer_deploy.bench.gate`` does not pull in the harness):
:func:`run_bench`, :func:`run_compare`, :class:`BenchOptions`, :func:`resolve_model`,
:func:`open_transport`, :class:`Transport`, :class:`DeviceError`, :func:`load_result`,
:func:`validate_result`, :func:`result_table`, :func:`device_lock`.
"""
from __future__ import annotations

import importlib

_API = {
    "run_bench": "harness", "run_compare": "harness", "BenchOptions": "harness", "resolve_model": "harness",
    "open_transport": "transports", "Transport": "transports", "DeviceError": "transports",
    "RunResult": "transports", "load_result": "result", "validate_result": "result",
    "result_table": "result", "write_json": "result", "device_lock": "lock",
}
__all__ = sorted(_API)


def __getattr__(name):
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
