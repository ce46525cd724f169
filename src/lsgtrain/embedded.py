"""Models shipped inside the package, named in configs as `${lsgtrain_embedded:NAME}` (an OmegaConf resolver)."""

from pathlib import Path

from omegaconf import OmegaConf

EMBEDDED_DIR = Path(__file__).parent / "pretrained"
# how each embedded model is made again (docs/training.md, "The embedded pretrained model")
RECIPES = {"aclsum_tiny": "python experiments/make_embedded_model.py"}


def embedded_model(name: str) -> str:
    """The folder of the embedded model `name` (a Hugging Face folder with its tokenizer)."""
    path = EMBEDDED_DIR / name
    if not (path / "config.json").is_file():
        recipe = RECIPES.get(name)
        how = f"make it with `{recipe}` in a clone" if recipe else f"known: {sorted(RECIPES)}"
        raise FileNotFoundError(f"lsgtrain has no embedded model {name!r} in {EMBEDDED_DIR}: {how}")
    return str(path)


OmegaConf.register_new_resolver("lsgtrain_embedded", embedded_model, replace=True)
