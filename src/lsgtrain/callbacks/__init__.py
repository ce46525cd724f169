from .divergence import StopOnNonFinite, TrainingDiverged
from .hf_export import HFExport
from .preemption import RequeueOnPreemption
from .random_state import RandomStateCheckpoint
from .rouge_evaluation import RougeEvaluation

__all__ = [
    "HFExport",
    "RandomStateCheckpoint",
    "RequeueOnPreemption",
    "RougeEvaluation",
    "StopOnNonFinite",
    "TrainingDiverged",
]
