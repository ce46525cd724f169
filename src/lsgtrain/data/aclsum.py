"""The embedded long-document corpus: the 250 ACL papers shipped by the `aclsum` package.

Each paper's full body text (median 4,400 words) is the document and its abstract (median 121 words) the summary,
read directly from the package's `paper_jsons/`; the official splits (100 / 50 / 100 ids) come from its
`dataset/{train,val,test}.jsonl`. ACL Anthology ids name the venue, which gives a classification label.
"""

import json
import re
from functools import cache
from pathlib import Path

SPLITS = ("train", "val", "test")


def aclsum_dir() -> Path:
    """The `dataset/` folder of the installed `aclsum` package."""
    import aclsum

    return Path(aclsum.__file__).parent / "dataset"


def venue_of(paper_id: str) -> str:
    """Venue of an ACL Anthology id: `P06-1112` -> `acl`, `N19-1001` -> `naacl`, `2020.aacl-main.33` -> `aacl`."""
    if "." in paper_id:  # new-style ids: 2020.acl-main.12
        return re.sub(r"-.*", "", paper_id.split(".")[1])
    return {"P": "acl", "N": "naacl", "D": "emnlp", "E": "eacl", "C": "coling", "Q": "tacl", "K": "conll"}.get(
        paper_id[0], "other"
    )


@cache
def load_aclsum_split(split: str) -> tuple[dict[str, str], ...]:
    """Papers of one official split as rows `{id, document, summary, venue}` (paragraphs joined by newlines)."""
    if split not in SPLITS:
        raise ValueError(f"aclsum has no split '{split}'; choose one of {SPLITS}")
    root = aclsum_dir()
    rows = []
    for line in (root / f"{split}.jsonl").read_text().splitlines():
        paper_id = json.loads(line)["id"]
        parse = json.loads((root / "paper_jsons" / f"{paper_id}.json").read_text())["pdf_parse"]
        rows.append(
            {
                "id": paper_id,
                "document": "\n".join(p["text"] for p in parse["body_text"]),
                "summary": "\n".join(p["text"] for p in parse["abstract"]),
                "venue": venue_of(paper_id),
            }
        )
    return tuple(rows)
