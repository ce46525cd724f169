"""ROUGE by document length: whether a long-document model's score holds on the longest documents.

Documents fall into buckets of source length in tokens before truncation, at fixed edges (1k, 2k, 4k, 8k, 16k
tokens, k = 1024), so runs and models with other truncation lengths share the buckets; an empty bucket is left out.
Each bucket reports its documents, how many of them the model read only in part (longer than the truncation length),
the mean ROUGE with its bootstrap interval and the lead baseline's ROUGE.
"""

from collections.abc import Sequence
from dataclasses import dataclass

from .intervals import mean_intervals
from .rouge import ROUGE_TYPES, mean_rouge

EDGES = (1024, 2048, 4096, 8192, 16384)


def bucket_name(low: int, high: int | None) -> str:
    """`0-1k`, `1k-2k`, ..., `16k+` (k = 1024 tokens)."""
    start = f"{low // 1024}k" if low else "0"
    return f"{start}+" if high is None else f"{start}-{high // 1024}k"


@dataclass(frozen=True)
class LengthBucket:
    """One bucket: source lengths in `[low, high)` tokens (`high` None: no upper edge)."""

    name: str
    low: int
    high: int | None
    documents: int
    truncated: int  # documents longer than the truncation length
    rouge: dict[str, float]
    intervals: dict[str, tuple[float, float]]
    lead: dict[str, float] | None

    def metrics(self, prefix: str) -> dict[str, float]:
        """The flat metrics it logs: `{prefix}len_{name}/{rouge}[_low|_high]`, `.../lead_{rouge}`, the counts."""
        prefix = f"{prefix}len_{self.name}/"
        metrics = {f"{prefix}documents": float(self.documents), f"{prefix}truncated": float(self.truncated)}
        for name, value in self.rouge.items():
            metrics[f"{prefix}{name}"] = value
            metrics[f"{prefix}{name}_low"], metrics[f"{prefix}{name}_high"] = self.intervals[name]
        for name, value in (self.lead or {}).items():
            metrics[f"{prefix}lead_{name}"] = value
        return metrics


def rouge_by_length(
    per_document: Sequence[dict[str, float]],
    source_tokens: Sequence[int],
    *,
    truncation: int,
    resamples: int,
    seed: int,
    lead: Sequence[dict[str, float]] | None = None,
) -> list[LengthBucket]:
    """The non-empty buckets of `per_document` (ROUGE per document) by `source_tokens` (the documents' lengths in
    tokens, untruncated), shortest first; `lead`: the lead baseline's per-document ROUGE of the same documents."""
    if len(per_document) != len(source_tokens):
        raise ValueError(f"{len(per_document)} scored documents for {len(source_tokens)} lengths")
    bounds = list(zip((0, *EDGES), (*EDGES, None), strict=True))
    buckets = []
    for low, high in bounds:
        members = [k for k, length in enumerate(source_tokens) if length >= low and (high is None or length < high)]
        if not members:
            continue
        scores = [per_document[k] for k in members]
        buckets.append(LengthBucket(
            name=bucket_name(low, high), low=low, high=high, documents=len(members),
            truncated=sum(source_tokens[k] > truncation for k in members), rouge=mean_rouge(scores),
            intervals=mean_intervals(scores, ROUGE_TYPES, resamples=resamples, seed=seed),
            lead=mean_rouge([lead[k] for k in members]) if lead is not None else None,
        ))  # fmt: skip
    return buckets
