"""`lsgtrain compare A B`: is B better than A on the same documents, beyond resampling noise?

A and B are predictions files (`.jsonl`: a run's `predictions/test.jsonl`, `lsgtrain predict --output`), run or
evaluation folders (their `predictions/{split}.jsonl`; an `hf_model` folder: its run's), or `lead:<A or B>`, the
lead baseline of those same rows. Both must hold the same documents (by id) with the same references, each row
scored (per-row ROUGE); otherwise the comparison is refused with the counts. Per metric: the means of A and B, the
mean per-document difference B - A, its 95% paired bootstrap interval and the p-value of a paired permutation test
(`lsgtrain.metrics.intervals.paired_difference`).
"""

import argparse
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .metrics.intervals import PairedDifference, paired_difference
from .metrics.rouge import ROUGE_TYPES

LEAD = "lead:"


@dataclass(frozen=True)
class ScoredRows:
    """One side: per document id (as JSON text), its reference and its per-document scores."""

    label: str
    references: dict[str, str]
    scores: dict[str, dict[str, float]]


def predictions_path(source: str | Path, split: str) -> Path:
    """The predictions file `source` names: itself, or a run / evaluation folder's `predictions/{split}.jsonl`
    (an `hf_model` folder: its run folder's)."""
    path = Path(source).expanduser()
    if path.is_file():
        return path
    for folder in (path, path.parent):
        candidate = folder / "predictions" / f"{split}.jsonl"
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"{source}: neither a predictions file nor a folder with predictions/{split}.jsonl (a run or `lsgtrain eval` "
        "folder); pass the .jsonl file, or --split for another split"
    )


def read_scored_rows(source: str, split: str = "test") -> ScoredRows:
    """Read a side: `source` as `predictions_path` finds it, or `lead:<source>` for the lead baseline's scores of
    the same rows (`lead_rouge1`, ... in each row: the ROUGE evaluation writes them)."""
    lead = source.startswith(LEAD)
    path = predictions_path(source.removeprefix(LEAD), split)
    prefix = "lead_" if lead else ""
    references, scores = {}, {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        row = json.loads(line)
        missing = [name for name in ROUGE_TYPES if f"{prefix}{name}" not in row]
        if missing or row.get("reference") is None:
            what = "the lead baseline's ROUGE" if lead else "per-row ROUGE and a reference"
            raise ValueError(f"{path}:{number} has no {what} ({', '.join(missing) or 'reference'} missing)")
        key = json.dumps(row["id"])
        references[key] = str(row["reference"])
        scores[key] = {name: float(row[f"{prefix}{name}"]) for name in ROUGE_TYPES}
    if not scores:
        raise ValueError(f"{path} holds no rows")
    return ScoredRows(f"{LEAD}{path}" if lead else str(path), references, scores)


def check_same_documents(a: ScoredRows, b: ScoredRows) -> list[str]:
    """The shared document ids in A's order; refused (ValueError with the counts) unless A and B hold the same
    documents with the same references."""
    only_a, only_b = a.scores.keys() - b.scores.keys(), b.scores.keys() - a.scores.keys()
    if only_a or only_b:
        raise ValueError(
            f"A and B hold different documents: A {len(a.scores)}, B {len(b.scores)}, "
            f"{len(a.scores) - len(only_a)} in both ({len(only_a)} only in A, e.g. {sorted(only_a)[:3]}; "
            f"{len(only_b)} only in B, e.g. {sorted(only_b)[:3]}): compare predictions of the same split"
        )
    differing = [key for key in a.scores if a.references[key] != b.references[key]]
    if differing:
        raise ValueError(
            f"{len(differing)} of {len(a.scores)} documents have different references in A and B (e.g. id "
            f"{differing[0]}): they were scored against other summaries, so their ROUGE does not compare"
        )
    return list(a.scores)


@dataclass(frozen=True)
class MetricComparison:
    """A's and B's mean of one metric and the paired difference B - A."""

    metric: str
    a: float
    b: float
    paired: PairedDifference


def compare(a: ScoredRows, b: ScoredRows, *, resamples: int = 10000, seed: int = 0) -> list[MetricComparison]:
    """Each ROUGE of B against A over their (identical) documents."""
    ids = check_same_documents(a, b)
    result = []
    for name in ROUGE_TYPES:
        scores_a, scores_b = [a.scores[key][name] for key in ids], [b.scores[key][name] for key in ids]
        result.append(MetricComparison(
            name, sum(scores_a) / len(ids), sum(scores_b) / len(ids),
            paired_difference(scores_a, scores_b, resamples=resamples, seed=seed),
        ))  # fmt: skip
    return result


HEADER = ("metric", "A", "B", "B - A", "95% interval", "p")


def _cells(row: MetricComparison) -> tuple[str, ...]:
    paired = row.paired
    return (row.metric, f"{row.a:.2f}", f"{row.b:.2f}", f"{paired.difference:+.2f}",
            f"[{paired.low:+.2f}, {paired.high:+.2f}]", f"{paired.p_value:.4f}")  # fmt: skip


def format_table(rows: list[MetricComparison]) -> str:
    """The terminal table, columns aligned."""
    cells = [HEADER, *map(_cells, rows)]
    widths = [max(len(line[k]) for line in cells) for k in range(len(HEADER))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)) for line in cells)


def format_markdown(rows: list[MetricComparison], a: ScoredRows, b: ScoredRows, resamples: int) -> str:
    """The comparison as a markdown table, with what A and B are and how the numbers were computed."""
    lines = [f"A: `{a.label}`  ", f"B: `{b.label}`", "", f"| {' | '.join(HEADER)} |", f"|{'---|' * len(HEADER)}"]
    lines += [f"| {' | '.join(_cells(row))} |" for row in rows]
    lines += ["", _method(len(a.scores), resamples)]
    return "\n".join(lines) + "\n"


def _method(documents: int, resamples: int) -> str:
    return (f"{documents} documents; ROUGE F1 x 100; B - A: mean per-document difference, 95% paired bootstrap "
            f"interval and two-sided paired permutation test (sign flips), {resamples} resamples each.")  # fmt: skip


def comparison_record(rows: list[MetricComparison], a: ScoredRows, b: ScoredRows, resamples: int, seed: int) -> dict:
    """The JSON form: the sides, the settings and per metric the means, difference, interval and p-value."""
    return {
        "a": a.label, "b": b.label, "documents": len(a.scores), "resamples": resamples, "seed": seed,
        "test": "paired bootstrap interval, paired permutation (sign-flip) p-value, two-sided",
        "metrics": {row.metric: {"a": row.a, "b": row.b, **asdict(row.paired)} for row in rows},
    }  # fmt: skip


def compare_command(args: argparse.Namespace) -> None:
    """`lsgtrain compare`: print the table; write `--json` / `--markdown` when given."""
    if args.resamples < 1:
        raise ValueError(f"--resamples={args.resamples} must be >= 1")
    a, b = read_scored_rows(args.a, args.split), read_scored_rows(args.b, args.split)
    rows = compare(a, b, resamples=args.resamples, seed=args.seed)
    print(f"A: {a.label}\nB: {b.label}\n{format_table(rows)}\n{_method(len(a.scores), args.resamples)}")
    if args.json:
        Path(args.json).write_text(json.dumps(comparison_record(rows, a, b, args.resamples, args.seed), indent=2))
    if args.markdown:
        Path(args.markdown).write_text(format_markdown(rows, a, b, args.resamples))


def add_compare_parser(commands: Any) -> None:
    """The `compare` subcommand's arguments."""
    parser = commands.add_parser("compare", help="paired comparison of two runs' predictions: B - A, interval, p")
    parser.add_argument("a", help="A: a predictions .jsonl, a run / eval folder, or lead:<one of those>")
    parser.add_argument("b", help="B: the same kinds; B - A is reported")
    parser.add_argument("--split", default="test", help="the predictions file a folder gives (predictions/SPLIT.jsonl)")
    parser.add_argument("--resamples", type=int, default=10000, help="bootstrap resamples and permutations")
    parser.add_argument("--seed", type=int, default=0, help="seeds the resamples and permutations")
    parser.add_argument("--json", help="also write the comparison as JSON to this file")
    parser.add_argument("--markdown", help="also write it as a markdown table to this file")
    parser.set_defaults(run=compare_command)
