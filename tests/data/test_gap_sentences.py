"""Gap-sentence selection and masking as Pegasus does it (data/gap_sentences.py): sentences, ROUGE-1 scores, windows,
masked and intact gaps, MLM masks, impossible objectives."""

import numpy as np
import pytest

from lsgtrain.data.gap_sentences import (
    MASK_SENTENCE_ID,
    MASK_TOKEN_ID,
    GapSentenceObjective,
    pack_windows,
    sentence_scores,
    split_sentences,
)

from .helpers import EOS

SENTENCES = [
    "Sparse attention reads long documents.",
    "Long documents need sparse attention and global tokens.",
    "The weather was nice.",
    "Global tokens summarise long documents.",
    "We thank the reviewers.",
]


def sentence_ids(n: int = 10) -> list[list[int]]:
    return [[100 + 10 * i + j for j in range(3)] for i in range(n)]


def test_sentences_are_split_inside_paragraphs():
    assert split_sentences("First one. Second one.\nA heading\n\nLast one.") == [
        "First one.", "Second one.", "A heading", "Last one.",
    ]  # fmt: skip


def test_scores_are_rouge1_f1_of_each_sentence_against_the_rest():
    scores = sentence_scores(["a b c", "a b", "d"])
    # "a b c" vs "a b d": overlap 2 of 3 + 3 -> 4/6; "a b" vs "a b c d": 2*2/6; "d" vs "a b c a b": 0
    assert scores == pytest.approx([4 / 6, 4 / 6, 0.0])
    ranked = np.argsort(sentence_scores(SENTENCES))[::-1]
    assert set(ranked[:2]) <= {0, 1, 3} and set(ranked[-2:]) == {2, 4}  # on-topic sentences score highest


def test_windows_pack_consecutive_sentences_into_the_budget():
    assert pack_windows([3, 4, 2, 6, 1], budget=7) == [(0, 2), (2, 3), (3, 5)]
    assert pack_windows([9, 2], budget=5) == [(0, 1), (1, 2)]  # a longer sentence: a window of its own
    assert pack_windows([], budget=5) == []


@pytest.mark.parametrize(
    ("strategy", "expected"), [("principal", [2, 5, 7]), ("lead", [0, 1, 2])]
)  # fmt: skip
def test_gap_sentences_are_masked_in_the_input_and_generated_in_document_order(strategy, expected):
    scores = [0.1, 0.2, 0.9, 0.0, 0.3, 0.8, 0.1, 0.7, 0.2, 0.1]
    objective = GapSentenceObjective(gap_ratio=0.3, strategy=strategy)
    example = objective.example(sentence_ids(), scores, np.random.default_rng(0), eos_id=EOS,
                                max_source_length=100, max_target_length=100)  # fmt: skip
    assert example["labels"] == [t for i in expected for t in sentence_ids()[i]] + [EOS]
    pieces = [[MASK_SENTENCE_ID] if i in expected else s for i, s in enumerate(sentence_ids())]
    assert example["input_ids"] == [t for piece in pieces for t in piece] + [EOS]
    assert "mlm_labels" not in example


def test_random_and_stochastic_selection_follow_their_generator():
    scores = list(np.linspace(1, 0, 20))
    random = GapSentenceObjective(strategy="random")
    draws = [random.select(scores, np.random.default_rng(seed)) for seed in range(5)]
    assert all(len(d) == 6 for d in draws) and len({tuple(d) for d in draws}) > 1
    assert random.select(scores, np.random.default_rng(3)) == draws[3]
    stochastic = GapSentenceObjective(stochastic=True)
    counts = {len(stochastic.select(scores, np.random.default_rng(seed))) for seed in range(50)}
    assert min(counts) >= 3 and max(counts) <= 9 and len(counts) > 3  # ratio drawn from [0.15, 0.45] of 20
    noisy = [stochastic.select(scores, np.random.default_rng(seed)) for seed in range(50)]
    assert any(d != list(range(len(d))) for d in noisy)  # noise on the scores changes which sentences win
    assert GapSentenceObjective().select(scores, np.random.default_rng(0)) == list(range(6))


def test_mlm_masks_other_sentences_tokens_with_mask_2_and_labels_them():
    objective = GapSentenceObjective(mlm_probability=0.5)
    example = objective.example(sentence_ids(), [0.0] * 10, np.random.default_rng(0), eos_id=EOS,
                                max_source_length=100, max_target_length=100)  # fmt: skip
    ids, mlm = example["input_ids"], example["mlm_labels"]
    assert len(ids) == len(mlm)
    masked = [i for i, token in enumerate(ids) if token == MASK_TOKEN_ID]
    assert masked and all(mlm[i] >= 100 for i in masked)
    assert all(label == -100 for i, label in enumerate(mlm) if i not in masked)


def test_intact_gap_sentences_stay_in_the_input_and_are_still_generated():
    scores = [0.1, 0.2, 0.9, 0.0, 0.3, 0.8, 0.1, 0.7, 0.2, 0.1]  # gaps: sentences 2, 5, 7
    objective = GapSentenceObjective(gap_ratio=0.3, intact_probability=0.5)
    kept_counts = set()
    for seed in range(40):
        example = objective.example(sentence_ids(), scores, np.random.default_rng(seed), eos_id=EOS,
                                    max_source_length=100, max_target_length=100)  # fmt: skip
        assert example["labels"] == [t for i in (2, 5, 7) for t in sentence_ids()[i]] + [EOS]
        masks = example["input_ids"].count(MASK_SENTENCE_ID)
        kept = [i for i in (2, 5, 7) if sentence_ids()[i][0] in example["input_ids"]]
        assert masks + len(kept) == 3  # each gap is either <mask_1> or itself, in place
        pieces = [[MASK_SENTENCE_ID] if i in {2, 5, 7} - set(kept) else s for i, s in enumerate(sentence_ids())]
        assert example["input_ids"] == [t for piece in pieces for t in piece] + [EOS]
        kept_counts.add(len(kept))
    assert kept_counts == {0, 1, 2, 3}  # drawn per sentence
    with pytest.raises(ValueError, match="intact_probability must lie in"):
        GapSentenceObjective(intact_probability=1.0)


def test_impossible_objectives_are_refused():
    with pytest.raises(ValueError, match="strategy='best' is unknown"):
        GapSentenceObjective(strategy="best")
    with pytest.raises(ValueError, match="must lie in"):
        GapSentenceObjective(gap_ratio=1.0)
