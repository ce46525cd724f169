"""ROUGE-1/2/L/Lsum with `rouge-score` (Google's implementation, as `evaluate`'s "rouge" uses), offline.

ROUGE-Lsum is computed over sentences separated by newlines; sentences are split with a regular expression, so no
nltk download is needed. Scores are mean F1 over documents, times 100.
"""

import re

from rouge_score import rouge_scorer

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(\[])")


def split_sentences(text: str) -> str:
    """One sentence per line: the input ROUGE-Lsum expects."""
    lines = (line.strip() for line in text.splitlines())
    return "\n".join(sentence for line in lines if line for sentence in _SENTENCE_END.split(line))


def compute_rouge(predictions: list[str], references: list[str]) -> dict[str, float]:
    """Mean F1 (x100) of ROUGE-1, -2, -L and -Lsum, with Porter stemming."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    if not predictions:
        raise ValueError("ROUGE of an empty set")
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    totals = dict.fromkeys(ROUGE_TYPES, 0.0)
    for prediction, reference in zip(predictions, references, strict=True):
        scores = scorer.score(split_sentences(reference), split_sentences(prediction))
        for rouge_type in ROUGE_TYPES:
            totals[rouge_type] += scores[rouge_type].fmeasure
    return {rouge_type: 100 * total / len(predictions) for rouge_type, total in totals.items()}
