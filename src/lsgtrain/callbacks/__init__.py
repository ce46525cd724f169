from .divergence import StopOnNonFinite, TrainingDiverged
from .hf_export import HFExport
from .last_checkpoint import LastCheckpoint
from .plots import EvaluationFigures
from .predictions import LabelPredictions
from .preemption import RequeueOnPreemption, StopOnSignal
from .random_state import RandomStateCheckpoint
from .rouge_evaluation import RougeEvaluation
from .telemetry import TrainingTelemetry
from .validation_schedule import (
    ScheduledEarlyStopping,
    ScheduledModelCheckpoint,
    ValidationSchedule,
    metric_computed,
)

__all__ = [
    "EvaluationFigures",
    "HFExport",
    "LabelPredictions",
    "LastCheckpoint",
    "RandomStateCheckpoint",
    "RequeueOnPreemption",
    "RougeEvaluation",
    "ScheduledEarlyStopping",
    "ScheduledModelCheckpoint",
    "StopOnNonFinite",
    "StopOnSignal",
    "TrainingDiverged",
    "TrainingTelemetry",
    "ValidationSchedule",
    "metric_computed",
]
