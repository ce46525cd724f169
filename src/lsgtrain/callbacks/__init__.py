from .divergence import StopOnNonFinite, TrainingDiverged
from .hf_export import HFExport
from .preemption import RequeueOnPreemption
from .random_state import RandomStateCheckpoint
from .rouge_evaluation import RougeEvaluation
from .validation_schedule import (
    ScheduledEarlyStopping,
    ScheduledModelCheckpoint,
    ValidationSchedule,
    metric_computed,
)

__all__ = [
    "HFExport",
    "RandomStateCheckpoint",
    "RequeueOnPreemption",
    "RougeEvaluation",
    "ScheduledEarlyStopping",
    "ScheduledModelCheckpoint",
    "StopOnNonFinite",
    "TrainingDiverged",
    "ValidationSchedule",
    "metric_computed",
]
