"""LSG-Pegasus for transformers 5: configuration, attention, heads and conversion."""

from .configuration_lsg_pegasus import SPARSITY_TYPES, LSGPegasusConfig
from .modeling_lsg_pegasus import (
    LSGPegasusForConditionalGeneration,
    LSGPegasusForSequenceClassification,
    LSGPegasusModel,
    LSGPegasusPreTrainedModel,
)

__all__ = [
    "SPARSITY_TYPES",
    "LSGPegasusConfig",
    "LSGPegasusForConditionalGeneration",
    "LSGPegasusForSequenceClassification",
    "LSGPegasusModel",
    "LSGPegasusPreTrainedModel",
]
