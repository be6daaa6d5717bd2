"""Models: architectures behind a registry, checkpoint I/O, and bring-your-own model files.

Every model takes images in [0, 1] and normalizes inside itself (:class:`NormalizedModel`).
"""

from classwise.models.checkpoint import (
    FORMAT_VERSION,
    check_buildable,
    check_loadable,
    classifier_weight_norms,
    load_checkpoint,
    load_weights,
    model_from_meta,
    read_sidecar,
    read_state_dict,
    save_checkpoint,
    sidecar_path,
    strip_prefixes,
    validate_sidecar,
)
from classwise.models.external import load_model_file
from classwise.models.nets import (
    DATASET_STATS,
    MODELS,
    Normalize,
    NormalizedModel,
    PreActResNet,
    SmallCNN,
    WideResNet,
    count_parameters,
    create_model,
    dataset_stats,
    last_linear,
    unwrap_model,
)

__all__ = [
    "DATASET_STATS",
    "FORMAT_VERSION",
    "MODELS",
    "Normalize",
    "NormalizedModel",
    "PreActResNet",
    "SmallCNN",
    "WideResNet",
    "check_buildable",
    "check_loadable",
    "classifier_weight_norms",
    "count_parameters",
    "create_model",
    "dataset_stats",
    "last_linear",
    "load_checkpoint",
    "load_model_file",
    "load_weights",
    "model_from_meta",
    "read_sidecar",
    "read_state_dict",
    "save_checkpoint",
    "sidecar_path",
    "strip_prefixes",
    "unwrap_model",
    "validate_sidecar",
]
