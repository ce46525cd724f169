"""An installed lsgtrain, built as a wheel into a fresh venv (not `pip install -e`), trains, sweeps and evaluates from
any folder; `lsgtrain train` / `eval` pass every argument to Hydra."""

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
import yaml

from lsgtrain import cli, train

from ..helpers import QUICK

ROOT = Path(__file__).resolve().parents[2]


BUILD_INPUTS = ("pyproject.toml", "README.md", "src", "conf")  # what pyproject.toml builds the wheel from


def _run(command: list, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run([str(part) for part in command], capture_output=True, text=True, timeout=300, **kwargs)
    assert result.returncode == 0, f"{command}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The project's wheel, built from a copy of its sources (a build leaves build/ and *.egg-info beside them)."""
    source = tmp_path_factory.mktemp("source")
    for name in BUILD_INPUTS:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(ROOT / name, source / name)
    dist = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "pip", "wheel", source, "--no-deps", "--no-build-isolation", "-q", "-w", dist])
    (built,) = dist.glob("lsgtrain-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """A fresh venv with the wheel installed. Its dependencies come from this venv's site-packages through a `.pth`
    path line instead of a download; such a line runs none of that folder's own `.pth` files, so this venv's
    editable lsgtrain stays out of it."""
    venv = tmp_path_factory.mktemp("venv")
    _run([sys.executable, "-m", "venv", "--without-pip", venv])
    python = venv / "bin" / "python"
    site = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip()
    (Path(site) / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", "-q", wheel])
    return venv


def test_wheel_ships_every_config_and_module(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    conf, package = ROOT / "conf", ROOT / "src" / "lsgtrain"
    configs = {f"lsgtrain/conf/{path.relative_to(conf).as_posix()}" for path in conf.rglob("*.yaml")}
    modules = {f"lsgtrain/{path.relative_to(package).as_posix()}" for path in package.rglob("*.py")}
    assert "lsgtrain/conf/hydra/launcher/slurm.yaml" in configs  # sub-folders of sub-folders too
    assert {name for name in names if name.endswith(".yaml")} == configs
    assert sorted(modules - names) == []
    embedded = {
        f"lsgtrain/pretrained/aclsum_tiny/{name}"
        for name in ("config.json", "model.safetensors", "tokenizer.json", "generation_config.json")
    }
    assert embedded <= names  # the default's pretrained model ships in the wheel
    assert not [name for name in names if name.startswith(("conf/", "experiments/", "tests/"))]


@pytest.mark.slow
def test_installed_wheel_trains_sweeps_and_evaluates_from_any_folder(installed, tmp_path):
    work = tmp_path / "work"  # an empty folder, not the repository
    work.mkdir()
    env = {key: value for key, value in os.environ.items()
           if key not in ("PYTHONPATH", "LSGTRAIN_CONFIG_DIR", "LSGTRAIN_ROOT", "LSGTRAIN_CACHE")}  # fmt: skip
    env.update(HF_HUB_OFFLINE="1", WANDB_MODE="offline", OMP_NUM_THREADS="1")
    lsgtrain = installed / "bin" / "lsgtrain"
    where = "import importlib.resources, lsgtrain; print(lsgtrain.__file__, importlib.resources.files('lsgtrain.conf'))"
    for path in _run([installed / "bin" / "python", "-c", where], cwd=work, env=env).stdout.split():
        assert Path(path).is_relative_to(installed), path  # the wheel, not the source tree

    commands = _run([lsgtrain, "--help"], cwd=work, env=env).stdout
    assert re.search(r"^\s+train\s", commands, re.MULTILINE) and re.search(r"^\s+eval\s", commands, re.MULTILINE)

    # two processes: Lightning starts the second as `python -m lsgtrain.train` with the same arguments
    ddp = ["trainer=ddp_cpu", "trainer.devices=2"]
    _run([lsgtrain, "train", "debug=fast_dev_run", "run_name=installed", *QUICK, *ddp], cwd=work, env=env)
    run = work / "outputs" / "debug" / "runs" / "installed"
    assert (run / "run_summary.json").is_file() and (run / "train_ddp_process_1.log").is_file()
    assert (work / "cache" / "tokenizers").is_dir()

    _run([lsgtrain, "eval", f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}", *QUICK], cwd=work, env=env)
    (metrics,) = (work / "outputs" / "eval" / "runs").glob("*/metrics.json")
    assert "test/rougeLsum" in json.loads(metrics.read_text())["metrics"]

    # a sweep names its folder before any job runs: under this folder's outputs/ too
    _run([lsgtrain, "train", "-m", "debug=fast_dev_run", *QUICK, "seed=1"], cwd=work, env=env)
    (trial,) = (work / "outputs" / "debug" / "multiruns").glob("*/trials/0.json")
    assert json.loads(trial.read_text())["status"] == "ok"


# The modules were imported by this test session before `lsgtrain train` runs them as __main__ (a fresh `lsgtrain`
# process has not imported them).
@pytest.mark.filterwarnings("ignore:'lsgtrain.* found in sys.modules:RuntimeWarning")
def test_train_and_eval_pass_every_argument_to_hydra(capsys):
    argv = list(sys.argv)
    assert cli.main(["train", "--cfg", "job", "seed=7", "model.lsg.block_size=32"]) == 0
    job = yaml.safe_load(capsys.readouterr().out)
    assert (job["task_name"], job["seed"], job["model"]["lsg"]["block_size"]) == ("train", 7, 32)
    assert cli.main(["eval", "--cfg", "job", "ckpt_path=run/checkpoints/last.ckpt"]) == 0
    job = yaml.safe_load(capsys.readouterr().out)
    assert (job["task_name"], job["ckpt_path"]) == ("eval", "run/checkpoints/last.ckpt")
    assert sys.argv == argv
    # Hydra's help, not argparse's. In a process of its own: Hydra's logging set-up closes every logging handler ever
    # created, and absl's (imported by rouge-score) closes its stream unless it is the current sys.stderr, which
    # pytest's capture has swapped here.
    helped = subprocess.run(
        [sys.executable, "-m", "lsgtrain.cli", "train", "--help"], capture_output=True, text=True, timeout=300
    )
    assert helped.returncode == 0, helped.stderr
    assert "experiment: aclsum_pretrain, aclsum_sum, aclsum_venue_cls" in helped.stdout


def test_an_install_without_the_configs_says_to_reinstall(monkeypatch):
    monkeypatch.delenv("LSGTRAIN_CONFIG_DIR", raising=False)
    monkeypatch.setitem(sys.modules, "lsgtrain.conf", None)  # what an editable install made before conf/ shipped sees
    with pytest.raises(ModuleNotFoundError, match=r"lsgtrain\.conf.*reinstall lsgtrain"):
        train._config_dir()
