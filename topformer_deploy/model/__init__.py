"""The TopFormer model: building blocks, the variant table and builder, checkpoints, folding, stages, costs.

Names resolve lazily, so ``topformer_deploy.model.stages`` (the stage vocabulary) imports no torch.
"""
from ..lazy import lazy_names

__getattr__, __dir__, __all__ = lazy_names(__name__, {
    "VARIANTS": ".topformer", "VariantConfig": ".topformer", "TopFormer": ".topformer",
    "TopFormerBackbone": ".topformer", "build_model": ".topformer", "check_input_size": ".topformer",
    "load_checkpoint": ".checkpoint", "read_state_dict": ".checkpoint", "infer_variant": ".checkpoint",
    "infer_num_classes": ".checkpoint", "fold_batchnorm": ".fold", "random_live_model": ".weights",
    "check_finite_weights": ".weights",
    "model_complexity": ".complexity", "STAGES": ".stages", "ALL_STAGES": ".stages",
})
