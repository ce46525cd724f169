"""The figures of an evaluation are written as PNGs; a figure that fails to draw is a warning, never an error."""

import logging

from lsgtrain.callbacks import plots
from lsgtrain.data.aclsum import load_aclsum_split
from lsgtrain.metrics.evaluation import evaluate_summaries
from lsgtrain.metrics.rouge import lead

PNG = b"\x89PNG\r\n\x1a\n"


def _evaluation():
    papers = load_aclsum_split("test")[:12]
    documents, references = [p["document"] for p in papers], [p["summary"] for p in papers]
    return evaluate_summaries(
        [lead(d, 30) for d in documents], references, documents, source_tokens=[len(d.split()) for d in documents],
        truncation=2048, resamples=50, seed=0,
    )  # fmt: skip


def test_evaluation_and_validation_figures_are_pngs(tmp_path):
    written = plots.write_evaluation_figures(tmp_path, "test", _evaluation())
    assert sorted(path.name for path in written) == [
        "test_coverage_density.png", "test_lengths.png", "test_rouge_by_length.png",
    ]  # fmt: skip
    history = [
        {"step": 10.0, "loss": 5.0, "rouge1": 20.0, "rouge2": 4.0, "rougeLsum": 18.0},
        {"step": 20.0, "loss": 4.0},
    ]
    curve = plots._save(tmp_path / "validation_curve.png", lambda figure: plots.draw_validation_curve(figure, history))
    for path in [*written, curve]:
        assert path.read_bytes().startswith(PNG)


def test_a_figure_that_fails_is_a_warning(tmp_path, monkeypatch, caplog):
    def broken(figure, evaluation):
        raise RuntimeError("no font")

    monkeypatch.setattr(plots, "draw_lengths", broken)
    with caplog.at_level(logging.WARNING):
        written = plots.write_evaluation_figures(tmp_path, "val", _evaluation())
    assert sorted(path.name for path in written) == ["val_coverage_density.png", "val_rouge_by_length.png"]
    assert "could not draw val_lengths.png (RuntimeError: no font)" in caplog.text
