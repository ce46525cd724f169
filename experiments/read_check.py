"""Does a finished aclsum summarization run read its documents? Distinct test predictions, and test ROUGE when each
paper is summarised from another paper's body (the next one of the test split) instead of its own.

    python experiments/read_check.py outputs/train/runs/<run>

Reads the run's `predictions/test.jsonl` and `run_summary.json`, then runs `lsgtrain.predict` on its `hf_model`
(the run's generation settings, its `data.max_source_length`) over the 100 test papers with their bodies shifted by
one, scored against the original abstracts. Prints and writes `read_check.json` into the run folder; the figures of
docs/training.md ("The embedded pretrained model") come from it.
"""

import argparse
import json
from pathlib import Path

from omegaconf import OmegaConf

from lsgtrain.data.aclsum import load_aclsum_split
from lsgtrain.metrics.rouge import compute_rouge
from lsgtrain.predict import Documents, predict


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="a finished run folder of the aclsum summarization default")
    args = parser.parse_args()
    rows = [json.loads(line) for line in (args.run / "predictions" / "test.jsonl").read_text().splitlines()]
    predictions = [row["prediction"] for row in rows]
    max_length = OmegaConf.load(args.run / ".hydra" / "config.yaml").data.max_source_length
    papers = [load_aclsum_split("test")[row["id"]] for row in rows]  # the papers predicted (all 100 in a full run)
    references = [paper["summary"] for paper in papers]
    assert [row["reference"] for row in rows] == references, "predictions/test.jsonl is not of the aclsum test split"
    shifted = Documents(ids=list(range(len(papers))), texts=[papers[i - 1]["document"] for i in range(len(papers))],
                        references=references)  # fmt: skip
    output = args.run / "read_check_shifted.jsonl"
    output.unlink(missing_ok=True)
    report = predict(args.run / "hf_model", shifted, output=output, max_length=max_length)
    own = compute_rouge(predictions, references)
    result = {
        "distinct_test_predictions": len(set(predictions)),
        "test_papers": len(predictions),
        "rouge1_own_body": round(own["rouge1"], 2),
        "rouge1_other_body": round(report.metrics["rouge1"], 2),
        "drop": round(own["rouge1"] - report.metrics["rouge1"], 2),
    }
    (args.run / "read_check.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
