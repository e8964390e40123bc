"""Latency on the device: transports (local, ssh, adb), the bench harness and the result document.

The device-side runner (:mod:`.device_runner`) is one file needing only the standard library, numpy and the
runtime it drives; everything else here runs on the host and imports no torch.
"""
from ..lazy import lazy_names

__getattr__, __dir__, __all__ = lazy_names(__name__, {
    "run_bench": ".harness", "run_compare": ".harness", "BenchOptions": ".harness",
    "resolve_model": ".cache", "open_transport": ".devices", "Transport": ".transports",
    "DeviceError": ".transports", "RunResult": ".transports", "load_result": ".result",
    "validate_result": ".result", "device_lock": ".lock", "choose_engine": ".engines", "find_binary": ".binaries",
    "device_readiness": ".readiness",
})
