"""Hydra configs, installed as the `lsgtrain.conf` package (pyproject.toml maps it to this folder)."""
