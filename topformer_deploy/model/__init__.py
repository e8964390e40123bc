"""The TopFormer model: building blocks, variant table, builder and checkpoint loading."""
from .checkpoint import infer_num_classes, infer_variant, load_checkpoint, read_state_dict
from .topformer import STAGES, VARIANTS, TopFormer, VariantConfig, build_model, check_input_size

__all__ = ["STAGES", "VARIANTS", "TopFormer", "VariantConfig", "build_model", "check_input_size",
           "infer_num_classes", "infer_variant", "load_checkpoint", "read_state_dict"]
