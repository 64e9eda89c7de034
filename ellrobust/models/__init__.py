"""Models: the compact DeiT with elliptical attention, checkpoint I/O and the zoo."""

from ellrobust.models.checkpoint import convert_checkpoint, read_checkpoint, state_dict_digest
from ellrobust.models.vit import MGrad, VisionTransformer, ViTConfig, elliptical_metric
from ellrobust.models.zoo import MODELS, SHIPPED, SHORT_NAMES, ModelSpec, load_model, resolve_name

__all__ = [
    "MGrad",
    "MODELS",
    "ModelSpec",
    "SHIPPED",
    "SHORT_NAMES",
    "ViTConfig",
    "VisionTransformer",
    "convert_checkpoint",
    "elliptical_metric",
    "load_model",
    "read_checkpoint",
    "resolve_name",
    "state_dict_digest",
]
