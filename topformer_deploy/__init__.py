"""topformer-deploy: TopFormer to Arm CPUs, with honest on-device latency.

The public API, a few names over the packages that implement them (each resolved on first use, so
importing the package or a light submodule does not import torch):

    model      build_model, load_checkpoint, fold_batchnorm, random_live_model, VARIANTS, STAGES
    export     export_model (fp32 / fp16 / int8 -> verified artifact + manifest), read_manifest
    bench      run_bench, run_compare, BenchOptions, open_transport
    breakdown  run_breakdown, BreakdownOptions
    gate       gate_results
"""
from .lazy import lazy_names

__version__ = "0.1.0"

__getattr__, __dir__, __all__ = lazy_names(__name__, {
    "build_model": ".model", "load_checkpoint": ".model", "fold_batchnorm": ".model",
    "random_live_model": ".model", "VARIANTS": ".model", "STAGES": ".model",
    "export_model": ".export", "read_manifest": ".artifact",
    "run_bench": ".bench", "run_compare": ".bench", "BenchOptions": ".bench", "open_transport": ".bench",
    "run_breakdown": ".breakdown", "BreakdownOptions": ".breakdown",
    "gate_results": ".gate",
    "TopformerDeployError": ".errors", "CheckpointError": ".errors",
})
__all__ = [*__all__, "__version__"]
