"""Every command and config key that README.md and docs/*.md show exists, so the docs cannot rot.

What is checked, without running anything:
* Commands (`python train.py ...`, `lsgtrain ...`, `python -m lsgtrain.train` / `lsgtrain.evaluate ...`) from code
  blocks (continuation lines joined, `# comments` dropped, `VAR=value` lines of the block substituted into `$VAR`)
  and from inline code. The Hydra ones (train.py, `lsgtrain train` / `eval`, `python -m lsgtrain.*`) compose
  in-process with Hydra's compose API, as `--cfg job` would: an unknown key, group or option fails. `-m` sweeps
  compose with every option of a swept config group and the first value of a swept key; `--cfg`, `--help`, `--info`
  are dropped; `--config-dir my_conf` composes with a folder holding an empty `experiment/mine.yaml`, the example the
  README gives. The other subcommands (`predict`, `summarize`, `push`, `convert`, `demo`) go through lsgtrain's own
  argument parser: every option must exist and every required argument be given; a bare `lsgtrain <sub>` only has
  to name a subcommand.
* Placeholders: `<name>` (e.g. `<run>/hf_model`) becomes `x`, since Hydra's grammar has no `<`; an unset `$VAR`
  and `...` inside a value stay as they are (plain strings to Hydra and argparse, whose values are not checked here).
  In a Hydra command a lone `...` stands for more arguments and is dropped (`python train.py ...`), and an override
  `key=...` stands for any value, so its key (or config group) must exist.
* Inline `key=value` overrides of the config (`data.val_fraction=null`) compose alone, or with one of `CONTEXTS`
  (the option that brings the key, e.g. `callbacks/early_stopping=default`); inline dotted keys
  (`data.max_train_samples`) must be in the config composed alone or with one of `KEY_CONTEXTS` (experiments too).
* Scripts run as `python experiments/....py` exist; relative links (`[...](data.md#data-with-holes)`) lead to an
  existing file and heading."""

import contextlib
import io
import itertools
import re
import shlex
from functools import cache
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from lsgtrain.cli import build_parser
from lsgtrain.train import CONFIG_DIR

ROOT = Path(__file__).resolve().parents[2]


DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


GUIDES = (
    "training.md",
    "data.md",
    "after-training.md",
    "cluster.md",
    "gpu-quickstart.md",
    "performance.md",
    "model.md",
    "troubleshooting.md",
)


HYDRA_ENTRIES = {  # how a command starts -> the config it composes
    ("python", "train.py"): "train",
    ("python", "-m", "lsgtrain.train"): "train",
    ("python", "-m", "lsgtrain.evaluate"): "eval",
    ("lsgtrain", "train"): "train",
    ("lsgtrain", "eval"): "eval",
}


DROPPED_FLAGS = {"-m", "--multirun", "--help", "-h", "--info", "--cfg", "-c", "job", "hydra", "all"}


# Options, off by default, that bring keys of their own: a documented override must compose alone or with one of them.
CONTEXTS = [
    [], ["callbacks/early_stopping=default"], ["hparams_search=lsg_optuna"], ["hydra/launcher=slurm"],
    ["data=gap_sentences"],  # pretraining's data keys (data.max_windows)
]  # fmt: skip


# A documented key must exist in one of these configs (an experiment brings keys too, e.g. `data.dataset_config`).
KEY_CONTEXTS = [
    *CONTEXTS,
    *[[f"experiment={path.stem}"] for path in sorted((Path(CONFIG_DIR) / "experiment").glob("*.yaml"))],
]


# Dotted names in the docs that are not config keys.
NOT_CONFIG_KEYS = {"model.encoder.global_embeddings.weight"}  # a weight of the model's state dict


COMMAND = re.compile(r"^(python3? (train\.py|-m lsgtrain\.(train|evaluate))|lsgtrain)(\s|$)")


INLINE_OVERRIDE = re.compile(r"^\+{0,2}[A-Za-z_][\w/]*(\.\w+)*=\S+$")


INLINE_KEY = re.compile(r"^[a-z_]+(\.\w+)+$")


FILE_NAME = re.compile(r"\.(py|log|md|json|jsonl|yaml|csv|ckpt|txt|parquet|sbatch|safetensors)$")  # train.log


MISSING_KEY = object()


def _code_blocks_and_inline(text: str) -> tuple[list[tuple[str, str]], list[str]]:
    """(language, body) of every fenced block, and every inline code span outside them (line breaks as spaces)."""
    blocks = [(m.group(1), m.group(2)) for m in re.finditer(r"^```(\w*)\n(.*?)^```", text, flags=re.S | re.M)]
    prose = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    inline = [" ".join(m.group(1).split()) for m in re.finditer(r"`([^`]+)`", prose)]
    return blocks, inline


def _block_commands(body: str) -> list[str]:
    """The command lines of a shell block, continuations joined and `$VAR`s set earlier in the block substituted."""
    variables: dict[str, str] = {}
    commands = []
    for line in body.replace("\\\n", " ").splitlines():
        assignment = re.fullmatch(r"([A-Za-z_]\w*)=(\S*)\s*(#.*)?", line.strip())  # `H=/data/hub   # ...`
        if assignment:
            variables[assignment.group(1)] = assignment.group(2)
            continue
        line = re.sub(r"\$(\w+)", lambda m: variables.get(m.group(1), m.group(0)), line.strip())
        for part in line.split("&&"):  # `... && .venv/bin/python train.py`: each command, without its venv path
            part = re.sub(r"^\S*/(?=(python3?|lsgtrain) )", "", part.strip())
            if COMMAND.match(part):
                commands.append(part)
    return commands


@cache
def _compose(config_name: str, overrides: tuple[str, ...], search_dir: str | None = None) -> DictConfig:
    GlobalHydra.instance().clear()
    extra = [f"hydra.searchpath=[file://{search_dir}]"] if search_dir else []
    try:
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            return compose(config_name=config_name, overrides=[*extra, *overrides], return_hydra_config=True)
    finally:
        GlobalHydra.instance().clear()


def _config_root(key: str) -> bool:
    """Whether `key` (an override's key or a dotted name) addresses the training config: a top-level key or group."""
    root = re.split(r"[./]", key)[0]
    return root in set(_compose("train", ())) | {"hydra", "experiment", "debug", "hparams_search"}


@cache
def documented() -> dict[str, list[str]]:
    """`commands`, inline `overrides`, inline `keys` and `scripts` of the docs, each as `file: text` entries."""
    found: dict[str, list[str]] = {"commands": [], "overrides": [], "keys": [], "scripts": []}
    for path in DOCS:
        text = path.read_text()
        where = path.relative_to(ROOT)
        blocks, inline = _code_blocks_and_inline(text)
        for language, body in blocks:
            if language in ("", "bash", "sh", "console"):
                found["commands"] += [f"{where}: {command}" for command in _block_commands(body)]
        for span in inline:
            if COMMAND.match(span):
                found["commands"].append(f"{where}: {span}")
            elif INLINE_OVERRIDE.match(span) and _config_root(span.lstrip("+").split("=")[0]):
                found["overrides"].append(f"{where}: {span}")
            elif (
                INLINE_KEY.match(span)
                and not FILE_NAME.search(span)
                and _config_root(span)
                and span not in NOT_CONFIG_KEYS
            ):
                found["keys"].append(f"{where}: {span}")
        found["scripts"] += [f"{where}: {m.group(1)}" for m in re.finditer(r"python3? (experiments/\S+\.py)", text)]
    return {kind: sorted(set(entries)) for kind, entries in found.items()}


def _words(command: str) -> list[str]:
    """The command's words, `<placeholders>` as `x`."""
    return shlex.split(re.sub(r"<[^<>\s]+>", "x", command), comments=True)


def _any_value(override: str, config_name: str = "train") -> bool:
    """`key=...`: whether `key` is a config group (`experiment`) or a key of the config."""
    key = override.lstrip("+").split("=")[0]
    if (Path(CONFIG_DIR) / key).is_dir():
        return True
    return OmegaConf.select(_compose(config_name, ()), key, default=MISSING_KEY) is not MISSING_KEY


def _hydra_overrides(words: list[str]) -> tuple[list[list[str]], bool]:
    """The override lists a (multirun) command line composes, and whether it asks for `--config-dir`."""
    overrides, config_dir, skip = [], False, False
    for word in words:
        if skip:
            skip = False
        elif word in ("--config-dir", "-cd"):
            config_dir, skip = True, True
        elif word not in DROPPED_FLAGS:
            overrides.append(word)
    choices = []
    for override in OverridesParser.create().parse_overrides(overrides):
        if override.is_sweep_override():  # every option of a group, the first value of a key (values are not checked)
            key, values = override.get_key_element(), list(override.sweep_string_iterator())
            group = (Path(CONFIG_DIR) / override.key_or_group).is_dir()
            choices.append([f"{key}={value}" for value in (values if group else values[:1])])
        else:
            choices.append([override.input_line])
    return [list(combination) for combination in itertools.product(*choices)], config_dir


def _check_command(command: str, my_conf: Path) -> None:
    words = _words(command)
    for start, config_name in HYDRA_ENTRIES.items():
        if tuple(words[: len(start)]) == start:
            arguments = [word for word in words[len(start) :] if word != "..."]  # `...`: more arguments
            combinations, config_dir = _hydra_overrides(arguments)
            for overrides in combinations:
                assert all(_any_value(o, config_name) for o in overrides if o.endswith("=...")), f"{overrides}"
                overrides = [o for o in overrides if not o.endswith("=...")]
                _compose(config_name, tuple(overrides), str(my_conf) if config_dir else None)
            return
    argv = words[1:]
    if not argv:  # `lsgtrain` names the program
        return
    parser = build_parser()
    if len(argv) == 1 and not argv[0].startswith("-"):  # a bare `lsgtrain <sub>` names a subcommand
        subcommands = next(a for a in parser._actions if a.dest == "command").choices
        assert argv[0] in subcommands, f"no subcommand {argv[0]!r}; lsgtrain has {sorted(subcommands)}"
        return
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors), contextlib.redirect_stdout(io.StringIO()):
            parser.parse_args(argv)
    except SystemExit as exit_:
        assert exit_.code == 0, errors.getvalue().strip().splitlines()[-1]


@pytest.fixture(scope="module")
def my_conf(tmp_path_factory) -> Path:
    """The README's `--config-dir my_conf experiment=mine` example: a config folder with one empty experiment."""
    folder = tmp_path_factory.mktemp("my_conf")
    (folder / "experiment").mkdir()
    (folder / "experiment" / "mine.yaml").write_text("# @package _global_\n")
    return folder


def _composes_in_some_context(check, contexts: list[list[str]]) -> bool:
    for context in contexts:
        try:
            if check(context):
                return True
        except Exception:
            continue
    return False


def _anchors(path: Path) -> set[str]:
    """GitHub's anchors for the headings of a markdown file: lowercase, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.S | re.M)
    headings = re.findall(r"^#+ (.+)$", text, flags=re.M)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


def _relative_links() -> list[str]:
    links = []
    for path in [*DOCS, ROOT / "CHANGELOG.md"]:
        prose = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.S | re.M)
        for target in re.findall(r"\]\(([^)\s]+)\)", prose):
            if not re.match(r"[a-z]+://", target):
                links.append(f"{path.relative_to(ROOT)}: {target}")
    return sorted(set(links))


def test_the_docs_show_commands_overrides_and_keys():
    """The extraction finds what the docs are made of (a broken pattern would check nothing)."""
    found = documented()
    readme = [c for c in found["commands"] if c.startswith("README.md: ")]
    assert "README.md: python train.py" in readme  # the main job of "Two commands", its `.venv/bin/` stripped
    assert any(" lsgtrain predict " in c for c in readme) and any("lsgtrain train -m" in c for c in readme)
    assert len(found["commands"]) >= 60 and len(found["overrides"]) >= 20 and len(found["keys"]) >= 20
    assert {"docs/cluster.md", "docs/data.md", "docs/model.md"} <= {c.split(":")[0] for c in found["commands"]}


def test_readme_two_commands_are_what_ci_runs():
    """The README's test command is the one `.ci/run` runs."""
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    test_command = (
        "python3 -m venv .venv && .venv/bin/pip install -q torch==2.13.0 -e '.[dev]' && .venv/bin/python -m pytest"
    )
    assert test_command in readme and test_command in ci
    assert ".venv/bin/pip install -q torch==2.13.0 -e . && .venv/bin/python train.py" in readme


def test_readme_is_a_short_entry_page_linking_the_guides():
    """The README stays short (at most 250 lines) and leads to every guide; the manual lives in docs/."""
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    sections = re.findall(r"^## (.+)$", readme, flags=re.M)
    assert sections == [
        "Two commands",
        "Installation",
        "A one-minute smoke run",
        "Outputs",
        "Command cheat-sheet",
        "Guides",
    ]
    guides = {path.name for path in (ROOT / "docs").glob("*.md")}
    assert guides >= set(GUIDES) and all(f"(docs/{guide})" in readme for guide in guides)


@pytest.mark.parametrize("entry", documented()["commands"], ids=str)
def test_documented_command_composes(entry, my_conf):
    where, command = entry.split(": ", 1)
    try:
        _check_command(command, my_conf)
    except Exception as error:
        pytest.fail(f"{where}: `{command}` does not compose: {type(error).__name__}: {error}")


@pytest.mark.parametrize("entry", documented()["overrides"])
def test_documented_override_composes(entry):
    where, override = entry.split(": ", 1)
    if override.endswith("=..."):
        assert _any_value(override), f"{where}: `{override}`: no such key or config group"
        return
    composes = _composes_in_some_context(
        lambda context: _compose("train", (*context, _words(override)[0])), KEY_CONTEXTS
    )
    assert composes, f"{where}: `{override}` composes in no context ({KEY_CONTEXTS})"


@pytest.mark.parametrize("entry", documented()["keys"])
def test_documented_config_key_exists(entry):
    where, key = entry.split(": ", 1)
    assert _composes_in_some_context(
        lambda context: (
            OmegaConf.select(_compose("train", tuple(context)), key, default=MISSING_KEY) is not MISSING_KEY
        ),
        KEY_CONTEXTS,
    ), f"{where}: `{key}` is not a key of the config, alone or with any of {KEY_CONTEXTS}"


@pytest.mark.parametrize("entry", documented()["scripts"])
def test_documented_script_exists(entry):
    where, script = entry.split(": ", 1)
    assert (ROOT / script).is_file(), f"{where}: {script} does not exist"


@pytest.mark.parametrize("entry", _relative_links())
def test_documented_link_leads_somewhere(entry):
    """A link between the guides names an existing file and, after `#`, one of its headings."""
    where, target = entry.split(": ", 1)
    file, _, anchor = target.partition("#")
    path = (ROOT / where).parent / file if file else ROOT / where
    assert path.exists(), f"{where}: the link {target} leads to no file"
    if anchor:
        assert anchor in _anchors(path), f"{where}: {path.name} has no heading #{anchor} ({sorted(_anchors(path))})"
