from .hf_export import HFExport
from .preemption import RequeueOnPreemption
from .rouge_evaluation import RougeEvaluation

__all__ = ["HFExport", "RequeueOnPreemption", "RougeEvaluation"]
