"""topformer-deploy: TopFormer to Arm CPUs, with honest on-device latency.

Public API: :func:`build_model`, :func:`load_checkpoint`, :func:`fold_batchnorm`, :func:`model_complexity`.
"""
from .errors import CheckpointError, TopformerDeployError
from .fold import fold_batchnorm
from .model import STAGES, VARIANTS, build_model, load_checkpoint

__version__ = "0.1.0"
__all__ = ["STAGES", "VARIANTS", "CheckpointError", "TopformerDeployError", "build_model",
           "fold_batchnorm", "load_checkpoint", "__version__"]
