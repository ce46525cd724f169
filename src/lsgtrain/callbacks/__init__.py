from .divergence import StopOnNonFinite, TrainingDiverged
from .early_stopping import EarlyStoppingEveryNEpochs
from .hf_export import HFExport
from .predictions import LabelPredictions
from .preemption import RequeueOnPreemption, StopOnSignal
from .random_state import RandomStateCheckpoint
from .rouge_evaluation import RougeEvaluation

__all__ = [
    "EarlyStoppingEveryNEpochs",
    "HFExport",
    "LabelPredictions",
    "RandomStateCheckpoint",
    "RequeueOnPreemption",
    "RougeEvaluation",
    "StopOnNonFinite",
    "StopOnSignal",
    "TrainingDiverged",
]
