"""The figures of an evaluation (PNG, matplotlib), drawn from what the ROUGE evaluation computed.

`{stage}_rouge_by_length.png`: ROUGE per source-length bucket with its 95% interval, the lead baseline beside it and
the buckets the model read only in part shaded; `{stage}_lengths.png`: generated against reference length;
`{stage}_coverage_density.png`: extractive fragment coverage against density (Grusky et al. 2018's Figure 4) of the
summaries, the lead and the references; `validation_curve.png`: validation ROUGE and loss by optimizer step.
A figure that cannot be drawn is a warning: the run's numbers are already logged and written.
"""

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lightning import Callback, LightningModule, Trainer
from typing_extensions import override

from ..metrics.evaluation import SOURCES, SummaryEvaluation
from .rouge_evaluation import RougeEvaluation

logger = logging.getLogger(__name__)

CURVE_ROUGE = ("rouge1", "rouge2", "rougeLsum")
SOURCE_LABELS = {"gen": "model", "lead": "lead baseline", "ref": "reference"}


class EvaluationFigures(Callback):
    """Draws the figures of each test and of a validation run on its own (`trainer.validate`: the final scoring,
    `lsgtrain eval`) into `figures_dir`, and after `fit` the validation curve.

    Args:
        figures_dir: where the PNG files go (the run folder's `figures/`).
    """

    def __init__(self, figures_dir: str):
        self.figures_dir = Path(figures_dir)
        self.history: list[dict[str, float]] = []  # one entry per validation during fit: step, loss, ROUGE

    def _rouge(self, trainer: Trainer) -> RougeEvaluation | None:
        return next((c for c in trainer.callbacks if isinstance(c, RougeEvaluation)), None)

    @override
    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking:
            return
        if trainer.state.fn != "fit":
            self._draw_evaluation(trainer, "val")
            return
        metrics = {key: float(value) for key, value in trainer.callback_metrics.items()}
        entry = {"step": float(trainer.global_step)}
        if "val/loss" in metrics:
            entry["loss"] = metrics["val/loss"]
        rouge = self._rouge(trainer)
        if rouge is not None and rouge.computes_metric:
            entry.update({name: metrics[f"val/{name}"] for name in CURVE_ROUGE if f"val/{name}" in metrics})
        self.history.append(entry)

    @override
    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._draw_evaluation(trainer, "test")

    @override
    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.is_global_zero and self.history and not trainer.fast_dev_run:
            _save(self.figures_dir / "validation_curve.png", lambda figure: draw_validation_curve(figure, self.history))

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = list(state_dict.get("history", []))

    def _draw_evaluation(self, trainer: Trainer, stage: str) -> None:
        rouge = self._rouge(trainer)
        if not trainer.is_global_zero or trainer.fast_dev_run or rouge is None or stage not in rouge.evaluations:
            return
        write_evaluation_figures(self.figures_dir, stage, rouge.evaluations[stage])


def write_evaluation_figures(folder: Path, stage: str, evaluation: SummaryEvaluation) -> list[Path]:
    """Draw the figures of one evaluation into `folder`; returns those written (one that fails: a warning)."""
    drawings: dict[str, Callable[[Any], None]] = {}
    if evaluation.buckets:
        drawings["rouge_by_length"] = lambda figure: draw_rouge_by_length(figure, evaluation)
    if evaluation.statistics:
        drawings["lengths"] = lambda figure: draw_lengths(figure, evaluation)
        drawings["coverage_density"] = lambda figure: draw_coverage_density(figure, evaluation)
    written = [_save(folder / f"{stage}_{name}.png", draw) for name, draw in drawings.items()]
    return [path for path in written if path is not None]


def _save(path: Path, draw: Callable[[Any], None]) -> Path | None:
    """Draw on a new figure and save it as `path`; any error is logged as a warning (None), never raised."""
    try:
        from matplotlib.figure import Figure  # no pyplot: no global state, no display backend

        figure = Figure(figsize=(7, 4.5), layout="constrained")
        draw(figure)
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=120)
    except Exception as error:  # a figure is a convenience: the run's numbers are already written
        logger.warning("could not draw %s (%s: %s); the metrics are unaffected", path.name, type(error).__name__, error)
        return None
    logger.info("figure written to %s", path)
    return path


def draw_rouge_by_length(figure: Any, evaluation: SummaryEvaluation) -> None:
    """ROUGE-1/2/Lsum per length bucket, 95% intervals as error bars, the lead baseline dashed; buckets with
    documents longer than the truncation length shaded."""
    axes = figure.subplots()
    positions = range(len(evaluation.buckets))
    for offset, name in zip((-0.15, 0.0, 0.15), CURVE_ROUGE, strict=True):
        values = [bucket.rouge[name] for bucket in evaluation.buckets]
        errors = [[v - b.intervals[name][0] for v, b in zip(values, evaluation.buckets, strict=True)],
                  [b.intervals[name][1] - v for v, b in zip(values, evaluation.buckets, strict=True)]]  # fmt: skip
        line = axes.errorbar([p + offset for p in positions], values, yerr=errors, marker="o", capsize=3, label=name)
        if evaluation.lead_per_document is not None:
            lead = [bucket.lead[name] for bucket in evaluation.buckets]
            axes.plot([p + offset for p in positions], lead, linestyle="--", marker="x", color=line[0].get_color(),
                      label=f"lead {name}")  # fmt: skip
    for position, bucket in zip(positions, evaluation.buckets, strict=True):
        if bucket.truncated:
            axes.axvspan(
                position - 0.45, position + 0.45, color="grey", alpha=0.12 + 0.2 * bucket.truncated / bucket.documents
            )
    axes.set_xticks(list(positions), [f"{b.name}\n(n={b.documents}, {b.truncated} cut)" for b in evaluation.buckets])
    axes.set_xlabel(f"source length in tokens before truncation (shaded: longer than {evaluation.truncation} tokens)")
    axes.set_ylabel("F1 x 100")
    axes.set_title("ROUGE by document length (95% bootstrap intervals)")
    axes.legend(fontsize="small", ncols=2)


def draw_lengths(figure: Any, evaluation: SummaryEvaluation) -> None:
    """Generated against reference length in words, one point per document, the diagonal for equal lengths."""
    axes = figure.subplots()
    reference = [row["words"] for row in evaluation.statistics["ref"]]
    generated = [row["words"] for row in evaluation.statistics["gen"]]
    axes.scatter(reference, generated, s=12, alpha=0.7, label="documents")
    top = max(*reference, *generated, 1)
    axes.plot([0, top], [0, top], color="grey", linestyle=":", label="same length")
    if evaluation.lead_words is not None:
        axes.axhline(evaluation.lead_words, color="tab:orange", linestyle="--", label="lead baseline length")
    axes.set_xlabel("reference summary (words)")
    axes.set_ylabel("generated summary (words)")
    axes.set_title("Generated vs reference length")
    axes.legend(fontsize="small")


def draw_coverage_density(figure: Any, evaluation: SummaryEvaluation) -> None:
    """Extractive fragment coverage (x) against density (y, symmetric log), per summary source."""
    axes = figure.subplots()
    for source in SOURCES:
        rows = evaluation.statistics[source]
        axes.scatter([r["coverage"] for r in rows], [r["density"] for r in rows], s=12, alpha=0.6,
                     label=SOURCE_LABELS[source])  # fmt: skip
    axes.set_yscale("symlog", linthresh=1.0)
    axes.set_xlim(-0.02, 1.02)
    axes.set_xlabel("extractive fragment coverage")
    axes.set_ylabel("extractive fragment density")
    axes.set_title("Coverage vs density (Grusky et al. 2018)")
    axes.legend(fontsize="small")


def draw_validation_curve(figure: Any, history: list[dict[str, float]]) -> None:
    """Validation ROUGE (the validations that generated) and loss by optimizer step."""
    rouge_axes, loss_axes = figure.subplots(1, 2)
    for name in CURVE_ROUGE:
        points = [(entry["step"], entry[name]) for entry in history if name in entry]
        if points:
            rouge_axes.plot(*zip(*points, strict=True), marker="o", label=name)
    losses = [(entry["step"], entry["loss"]) for entry in history if "loss" in entry]
    if losses:
        loss_axes.plot(*zip(*losses, strict=True), marker="o", color="tab:red")
    rouge_axes.set_xlabel("optimizer step")
    rouge_axes.set_ylabel("validation ROUGE (F1 x 100)")
    rouge_axes.legend(fontsize="small")
    loss_axes.set_xlabel("optimizer step")
    loss_axes.set_ylabel("validation loss")
    figure.suptitle("Validation curve")
