"""One evaluation of generated summaries, as the papers report it: ROUGE with 95% bootstrap intervals, the lead
baseline beside it, length and abstractiveness statistics of the summaries, the lead and the references, and ROUGE by
document length. Computed from the gathered predictions (every rank holds them all), so DDP gives what one process
gives; `SummaryEvaluation.metrics` flattens it into the `stage/...` metrics a run logs."""

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .abstractiveness import DocumentStatistics, aggregate
from .by_length import LengthBucket, rouge_by_length
from .intervals import mean_intervals
from .rouge import ROUGE_TYPES, lead_summaries, mean_rouge, score_documents

SOURCES = ("gen", "lead", "ref")  # the generated summaries, the lead baseline's, the references


@dataclass
class SummaryEvaluation:
    """ROUGE of `per_document` (and of the lead baseline), with intervals; per summary source (`SOURCES`), each
    summary's statistics; the length buckets. Without documents (gap-sentence pretraining), only ROUGE."""

    per_document: list[dict[str, float]]
    intervals: dict[str, tuple[float, float]]
    lead_words: int | None = None
    lead_per_document: list[dict[str, float]] | None = None
    lead_intervals: dict[str, tuple[float, float]] | None = None
    statistics: dict[str, list[dict[str, float | None]]] = field(default_factory=dict)
    source_tokens: list[int] | None = None
    truncation: int | None = None
    buckets: list[LengthBucket] = field(default_factory=list)

    @property
    def rouge(self) -> dict[str, float]:
        return mean_rouge(self.per_document)

    @property
    def lead(self) -> dict[str, float] | None:
        return mean_rouge(self.lead_per_document) if self.lead_per_document else None

    def metrics(self, stage: str | None) -> dict[str, float]:
        """`stage/{rouge}` and `_low` / `_high`; `stage/lead_*` likewise and `stage/lead_words`; per source the mean
        (`stage/stats/{source}/{statistic}`) and median (`..._median`) of each statistic; the length buckets
        (`LengthBucket.metrics`). Without a stage (`lsgtrain predict`'s metrics), the names without `stage/`."""
        prefix = f"{stage}/" if stage else ""
        metrics = _with_intervals(prefix, self.rouge, self.intervals)
        if self.lead_per_document is not None:
            metrics.update(_with_intervals(f"{prefix}lead_", self.lead, self.lead_intervals))
            metrics[f"{prefix}lead_words"] = float(self.lead_words)
        for source, rows in self.statistics.items():
            for name, summary in aggregate(rows).items():
                metrics[f"{prefix}stats/{source}/{name}"] = summary["mean"]
                metrics[f"{prefix}stats/{source}/{name}_median"] = summary["median"]
        for bucket in self.buckets:
            metrics.update(bucket.metrics(prefix))
        return metrics

    def row_statistics(self, k: int) -> dict[str, float | int | None]:
        """What the predictions file adds to document `k`'s row: its summary's statistics, the reference's lengths,
        the source length in tokens before truncation and the lead baseline's ROUGE."""
        if not self.statistics:
            return {}
        row: dict[str, float | int | None] = dict(self.statistics["gen"][k])
        row.update({f"reference_{name}": self.statistics["ref"][k][name] for name in ("words", "tokens")
                    if name in self.statistics["ref"][k]})  # fmt: skip
        if self.source_tokens is not None:
            row["document_tokens"] = self.source_tokens[k]
        row.update({f"lead_{name}": value for name, value in self.lead_per_document[k].items()})  # for `compare`
        return row


def _with_intervals(prefix: str, scores: dict[str, float], intervals: dict[str, tuple[float, float]]) -> dict:
    metrics = {}
    for name, value in scores.items():
        metrics[f"{prefix}{name}"] = value
        metrics[f"{prefix}{name}_low"], metrics[f"{prefix}{name}_high"] = intervals[name]
    return metrics


def evaluate_summaries(
    predictions: Sequence[str],
    references: Sequence[str],
    documents: Sequence[str] | None = None,
    *,
    count_tokens: Callable[[list[str]], list[int]] | None = None,
    source_tokens: Sequence[int] | None = None,
    truncation: int | None = None,
    resamples: int,
    seed: int,
) -> SummaryEvaluation:
    """Evaluate `predictions` against `references` (same order); with `documents`, the lead baseline and the
    statistics too (`count_tokens`: the model tokenizer's token count of each text), and with `source_tokens` (the
    documents' lengths in tokens, untruncated) and `truncation` (the tokens the model reads) ROUGE by length."""

    def intervals(scores: list[dict[str, float]]) -> dict[str, tuple[float, float]]:
        return mean_intervals(scores, ROUGE_TYPES, resamples=resamples, seed=seed)

    per_document = score_documents(list(predictions), list(references))
    evaluation = SummaryEvaluation(per_document, intervals(per_document))
    if documents is None:
        return evaluation
    evaluation.lead_words, lead = lead_summaries(list(documents), list(references))
    evaluation.lead_per_document = score_documents(lead, list(references))
    evaluation.lead_intervals = intervals(evaluation.lead_per_document)
    by_document = []  # per document, the statistics of its three summaries (the document indexed once)
    for document, *texts in zip(documents, predictions, lead, references, strict=True):
        index = DocumentStatistics(document)
        by_document.append([index.of(text) for text in texts])
    for k, (source, summaries) in enumerate(zip(SOURCES, (predictions, lead, references), strict=True)):
        rows = [statistics[k] for statistics in by_document]
        if count_tokens is not None:
            for row, tokens in zip(rows, count_tokens(list(summaries)), strict=True):
                row["tokens"] = float(tokens)
        evaluation.statistics[source] = rows
    if source_tokens is not None and truncation is not None:
        evaluation.source_tokens, evaluation.truncation = list(source_tokens), truncation
        evaluation.buckets = rouge_by_length(
            per_document, source_tokens, truncation=truncation, resamples=resamples, seed=seed,
            lead=evaluation.lead_per_document,
        )  # fmt: skip
    return evaluation
