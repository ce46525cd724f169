"""A markdown table of a run's first test predictions beside their references, for the README.

Reads `RUN/predictions/test.jsonl` (or the predictions file given), takes the first `--rows` documents by id and
prints `| id | prediction | reference |`, each text cut at `--chars` characters on a word boundary, then how many of
the split's predictions are distinct (a model that ignores its documents writes one summary for all of them).

    python experiments/default_run_predictions.py outputs/train/runs/<run_name>
    python experiments/default_run_predictions.py outputs/train/runs/<run_name>/predictions/test.jsonl --rows 5
"""

import argparse
import json
from pathlib import Path


def read_predictions(path: Path) -> list[dict]:
    """The rows of a predictions file (a run folder: its `predictions/test.jsonl`), sorted by document id."""
    if path.is_dir():
        path = path / "predictions" / "test.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: give a run folder that was tested, or a predictions file")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if not rows:
        raise ValueError(f"{path} holds no predictions")
    missing = [key for key in ("prediction", "reference") if key not in rows[0]]
    if missing or not {"id", "idx"} & rows[0].keys():
        raise ValueError(f"{path} is not a predictions file: its rows have {sorted(rows[0])}, not id, prediction, "
                         "reference")  # fmt: skip
    return sorted(rows, key=_row_id)


def _row_id(row: dict) -> int | str:
    """The document id: `id`, or `idx` in files written before predictions carried ids."""
    return row["id"] if "id" in row else row["idx"]


def shorten(text: str, chars: int) -> str:
    """`text` on one line, cut at the last word boundary within `chars` characters (marked by an ellipsis)."""
    text = " ".join(text.split())
    if len(text) <= chars:
        return text
    cut = text[:chars].rsplit(" ", 1)[0] if " " in text[:chars] else text[:chars]
    return cut + " …"


def markdown_table(rows: list[dict], *, count: int, chars: int) -> str:
    """The first `count` rows as a markdown table, then the number of distinct predictions of all rows."""
    lines = ["| id | prediction | reference |", "|---|---|---|"]
    for row in rows[:count]:
        cells = [str(_row_id(row)), shorten(row["prediction"], chars), shorten(row["reference"], chars)]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    distinct = len({row["prediction"] for row in rows})
    lines += ["", f"{distinct} of the {len(rows)} test predictions are distinct."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("path", type=Path, help="a run folder, or its predictions/test.jsonl")
    parser.add_argument("--rows", type=int, default=3, help="how many documents to show (default 3)")
    parser.add_argument("--chars", type=int, default=300, help="characters kept of each text (default 300)")
    args = parser.parse_args()
    print(markdown_table(read_predictions(args.path), count=args.rows, chars=args.chars))


if __name__ == "__main__":
    main()
