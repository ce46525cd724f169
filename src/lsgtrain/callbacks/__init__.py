from .hf_export import HFExport
from .rouge_evaluation import RougeEvaluation

__all__ = ["HFExport", "RougeEvaluation"]
