"""The test suite. The environment is set here, before any test module, or a helper it imports, loads
huggingface_hub, whose constants read it once."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
