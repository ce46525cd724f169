"""The one format of every predictions file lsgtrain writes: a training run's and `lsgtrain eval`'s
(`predictions/{stage}[_epoch{N}].jsonl`, summaries and labels alike) and `lsgtrain predict`'s output."""

import json
import os
from pathlib import Path
from typing import Any


def prediction_row(row_id: Any, prediction: Any, reference: Any, metrics: dict[str, Any] | None = None) -> dict:
    """`{"id", "prediction", "reference", ...the row's own metrics}`: ROUGE F1 x 100 (2 decimals) of a summary,
    `correct` of a label."""
    row = {"id": row_id, "prediction": prediction, "reference": reference}
    for name, value in (metrics or {}).items():
        row[name] = round(value, 2) if isinstance(value, float) else value
    return row


def write_predictions(path: Path, rows: list[dict]) -> None:
    """Write `rows` as JSON lines through a temporary file and a rename (never a half-written file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    os.replace(tmp, path)
