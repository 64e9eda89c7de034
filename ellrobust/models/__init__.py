"""Floor 3: models: the compact DeiT with elliptical attention, checkpoint I/O, the zoo, other libraries' models."""

from ellrobust.models import robustbench_zoo  # noqa: F401  (registers the robustbench: prefix)
from ellrobust.models.architectures import MODELS, ModelSpec
from ellrobust.models.base import Classifier, TokenModel, has_tokens
from ellrobust.models.checkpoint import convert_checkpoint, read_checkpoint, state_dict_digest
from ellrobust.models.external import PREFIXES
from ellrobust.models.vit import MGrad, VisionTransformer, ViTConfig, elliptical_metric
from ellrobust.models.zoo import INFERRED, SHIPPED, SHORT_NAMES, load_model, resolve_name

__all__ = [
    "Classifier",
    "INFERRED",
    "MGrad",
    "MODELS",
    "PREFIXES",
    "ModelSpec",
    "SHIPPED",
    "SHORT_NAMES",
    "TokenModel",
    "ViTConfig",
    "VisionTransformer",
    "convert_checkpoint",
    "elliptical_metric",
    "has_tokens",
    "load_model",
    "read_checkpoint",
    "resolve_name",
    "state_dict_digest",
]
