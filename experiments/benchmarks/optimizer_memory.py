"""Optimizer-state memory of LSG-Pegasus-large (568M parameters) for each `module/optimizer`, in bytes per parameter.

    python experiments/benchmarks/optimizer_memory.py       # seconds, no memory needed

The model is built on the `meta` device (parameter shapes only, nothing allocated) with pegasus-large's dimensions
and the LSG-4096 recipe's attention (`conf/model/lsg_pegasus_large.yaml`); each optimizer is built from its config
file with the parameter groups `configure_optimizers` makes, takes one step on meta gradients, and the bytes of every
tensor in its state are counted exactly (numel x element size, float32 parameters). Prints the markdown table of
docs/training.md.
"""

from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

CONF = Path(__file__).resolve().parents[2] / "conf" / "module" / "optimizer"
# google/pegasus-large's config, as gpu_benchmark.py builds it
LARGE = dict(
    vocab_size=96103, d_model=1024, encoder_layers=16, decoder_layers=16, encoder_attention_heads=16,
    decoder_attention_heads=16, encoder_ffn_dim=4096, decoder_ffn_dim=4096, max_position_embeddings=4096,
    scale_embedding=True, block_size=128, sparse_block_size=128, sparsity_factor=2, sparsity_type="norm",
    num_global_tokens=1,
)  # fmt: skip


def optimizer_config(name: str) -> dict:
    """`conf/module/optimizer/<name>.yaml` with its defaults list applied (adafactor_relative extends adafactor)."""
    config = OmegaConf.load(CONF / f"{name}.yaml")
    for parent in config.pop("defaults", []):
        if parent != "_self_":
            config = OmegaConf.merge(optimizer_config(parent), config)
    return OmegaConf.to_container(config)


def state_bytes(name: str) -> tuple[int, int]:
    """(trained parameters, bytes of optimizer state after one step) for `module/optimizer=<name>`."""
    from lsgtrain.modeling import LSGPegasusConfig, LSGPegasusForConditionalGeneration

    with torch.device("meta"):
        model = LSGPegasusForConditionalGeneration(LSGPegasusConfig(**LARGE))
    parameters = [p for p in model.parameters() if p.requires_grad]
    no_decay = [p for n, p in model.named_parameters() if p.requires_grad and (p.ndim < 2 or "norm" in n)]
    decay = [p for p in parameters if all(p is not q for q in no_decay)]
    config = optimizer_config(name)
    # scale_parameter reads each parameter's RMS with .item(), which meta tensors lack; it scales the step size
    # only, so the state tensors (their shapes and dtypes) are the same without it
    if "scale_parameter" in config:
        config["scale_parameter"] = False
    optimizer = instantiate(config, _convert_="all")(
        params=[{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}]
    )
    for parameter in parameters:
        parameter.grad = torch.empty_like(parameter)
    optimizer.step()
    total = sum(
        value.numel() * value.element_size()
        for state in optimizer.state.values()
        for value in state.values()
        if isinstance(value, torch.Tensor) and value.ndim > 0  # the step counters are scalars
    )
    return sum(p.numel() for p in parameters), total


def main() -> None:
    lines = [
        "| module/optimizer | state of pegasus-large | bytes per parameter | what it keeps |",
        "|---|---|---|---|",
    ]
    kept = {
        "adamw": "exp_avg + exp_avg_sq, float32, per parameter",
        "adafactor": "a row and a column mean of the squared gradients per matrix; full for vectors; no first moment",
        "adafactor_relative": "as adafactor (the relative step changes the learning rate, not the state)",
    }
    for name in kept:
        parameters, total = state_bytes(name)
        lines.append(f"| {name} | {total / 2**30:.3f} GiB | {total / parameters:.3f} | {kept[name]} |")
    print(f"{parameters:,} trained parameters (LSG-Pegasus-large, float32)\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
