"""`lsgtrain` command line: `train` and `eval` (the Hydra apps, with any overrides), `convert` a Pegasus checkpoint to
LSG, `summarize` text files, run the offline `demo`."""

import argparse
import json
import logging
import runpy
import sys
import time
from pathlib import Path

from .modeling.configuration_lsg_pegasus import SPARSITY_TYPES

logger = logging.getLogger("lsgtrain")


def _convert(args: argparse.Namespace) -> None:
    from .modeling.convert import convert_checkpoint

    lsg_keys = {
        key: getattr(args, key)
        for key in ("block_size", "sparse_block_size", "sparsity_factor", "sparsity_type", "num_global_tokens")
        if getattr(args, key) is not None
    }
    if args.model_kwargs:
        lsg_keys.update(json.loads(args.model_kwargs.replace("'", '"')))
    model, _ = convert_checkpoint(
        args.source,
        args.output_dir,
        max_sequence_length=args.max_sequence_length,
        global_positional_stride=args.global_positional_stride,
        random_global_init=args.random_global_init,
        keep_first_global_token=args.keep_first_global_token,
        architecture=args.architecture,
        seed=args.seed,
        overwrite=args.overwrite,
        allow_weight_mismatch=args.allow_weight_mismatch,
        **lsg_keys,
    )
    print(f"converted {args.source} -> {args.output_dir} ({type(model).__name__}, {args.max_sequence_length} tokens)")


def _summarize(args: argparse.Namespace) -> None:
    """Summarize text files with an exported (or converted) LSG-Pegasus folder; one JSON line per file."""
    import torch
    from transformers import AutoTokenizer

    model_dir = Path(args.model)
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"{model_dir} is not a model folder (no config.json); pass a run's hf_model folder")
    missing = [path for path in args.files if not Path(path).is_file()]
    if missing:
        raise FileNotFoundError(f"no such file: {', '.join(missing)}")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = _load_seq2seq(model_dir, trust_remote_code=args.trust_remote_code).eval()
    broken = [name for name, value in model.state_dict().items() if not torch.isfinite(value).all()]
    if broken:
        raise ValueError(f"{model_dir} has non-finite weights ({len(broken)} tensors, e.g. {broken[0]}): its training "
                         "diverged; it would only produce empty summaries")  # fmt: skip
    max_length = args.max_length or model.config.max_position_embeddings
    generation = {"num_beams": args.num_beams, "max_new_tokens": args.max_new_tokens,
                  "length_penalty": args.length_penalty, "no_repeat_ngram_size": args.no_repeat_ngram_size}  # fmt: skip
    rows = []
    for path in args.files:
        inputs = tokenizer(Path(path).read_text(), truncation=True, max_length=max_length, return_tensors="pt")
        with torch.no_grad():
            ids = model.generate(**inputs, **generation)
        summary = tokenizer.decode(ids[0], skip_special_tokens=True).strip()
        rows.append({"file": str(path), "input_tokens": inputs["input_ids"].shape[1], "summary": summary})
    lines = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    if args.output:
        Path(args.output).write_text(lines)
        print(f"{len(rows)} summaries written to {args.output}")
    else:
        sys.stdout.write(lines)


def _load_seq2seq(model_dir: Path, *, trust_remote_code: bool):
    """Our LSG exports load with lsgtrain's own classes and other folders with transformers' own; the folder's
    `.py` files run only with `trust_remote_code` (a folder's code can do anything a Python program can)."""
    from transformers import AutoModelForSeq2SeqLM

    from .modeling import LSGPegasusForConditionalGeneration

    if trust_remote_code:
        return AutoModelForSeq2SeqLM.from_pretrained(model_dir, trust_remote_code=True)
    architectures = json.loads((model_dir / "config.json").read_text()).get("architectures") or []
    if LSGPegasusForConditionalGeneration.__name__ in architectures:
        return LSGPegasusForConditionalGeneration.from_pretrained(model_dir)
    if any(name.startswith("LSG") for name in architectures):
        raise ValueError(f"{model_dir} holds a {architectures[0]}, not a summarization (seq2seq) model")
    return AutoModelForSeq2SeqLM.from_pretrained(model_dir, trust_remote_code=False)


def _hydra_app(args: argparse.Namespace) -> None:
    """Run `python -m lsgtrain.train` (or `lsgtrain.evaluate`) in this process with the arguments after the subcommand
    as its command line: `@hydra.main` reads them from sys.argv (overrides, `-m`, `--cfg job`, `--help`), and Lightning
    starts each further DDP process as `python -m <that module>` with the same arguments."""
    argv = sys.argv
    sys.argv = [argv[0], *args.overrides]
    try:
        runpy.run_module(f"{__package__}.{args.module}", run_name="__main__", alter_sys=True)
    finally:
        sys.argv = argv


def _demo(args: argparse.Namespace) -> None:
    """Offline end-to-end tour: tokenizer, tiny plain Pegasus, conversion, a long document encoded, generation."""
    import torch
    from transformers import PegasusConfig, PegasusForConditionalGeneration

    from .data.aclsum import load_aclsum_split
    from .data.tokenizer import cached_pegasus_tokenizer
    from .modeling.convert import convert_checkpoint

    torch.manual_seed(0)
    work = Path(args.output_dir)
    papers = load_aclsum_split("train")
    tokenizer = cached_pegasus_tokenizer(
        [p["document"] + "\n" + p["summary"] for p in papers], args.vocab_size, work / "tokenizer-cache"
    )
    plain_config = PegasusConfig(
        vocab_size=len(tokenizer), d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128, max_position_embeddings=512,
        scale_embedding=True,
    )  # fmt: skip
    plain = PegasusForConditionalGeneration(plain_config)
    plain.save_pretrained(work / "plain-pegasus")
    tokenizer.save_pretrained(work / "plain-pegasus")
    print(f"1. tiny plain Pegasus ({sum(p.numel() for p in plain.parameters()) / 1e6:.1f}M params) saved")

    model, tokenizer = convert_checkpoint(
        work / "plain-pegasus", work / "lsg-pegasus", max_sequence_length=args.max_length, block_size=64,
        sparse_block_size=64, sparsity_factor=4, sparsity_type="norm", overwrite=True,
    )  # fmt: skip
    print(f"2. converted to LSG-Pegasus, {args.max_length} tokens -> {work / 'lsg-pegasus'}")

    document = load_aclsum_split("test")[0]["document"]
    inputs = tokenizer(document, truncation=True, max_length=args.max_length, return_tensors="pt")
    model.eval()
    with torch.no_grad():
        start = time.perf_counter()
        encoded = model.get_encoder()(**inputs)
        elapsed = time.perf_counter() - start
    print(
        f"3. encoded a {inputs['input_ids'].shape[1]}-token paper in {elapsed:.2f} s on the LSG path: "
        f"{tuple(encoded.last_hidden_state.shape)} (1 global token + tokens)"
    )
    with torch.no_grad():
        summary_ids = model.generate(**inputs, max_new_tokens=20, num_beams=2)
    summary = tokenizer.decode(summary_ids[0], skip_special_tokens=True)
    print(f"4. beam-search generation (untrained weights, so the words are random): {summary[:120]!r}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lsgtrain", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    # No option prefix: every argument after the subcommand (`-m`, `--cfg job`, `--help` included) goes to Hydra.
    for name, module, summary in (
        ("train", "train", "train, as python train.py: lsgtrain train [-m] [experiment=NAME] [key=value ...]"),
        ("eval", "evaluate", "validate and test a checkpoint: lsgtrain eval ckpt_path=PATH [key=value ...]"),
    ):
        app = commands.add_parser(name, help=summary, add_help=False, prefix_chars="\0")
        app.add_argument("overrides", nargs="*", help="Hydra overrides and flags; `--help` lists the config groups")
        app.set_defaults(run=_hydra_app, module=module)

    convert = commands.add_parser("convert", help="convert a Pegasus checkpoint to LSG-Pegasus")
    convert.add_argument("source", help="checkpoint folder, or hub name (needs internet)")
    convert.add_argument("output_dir", help="folder to write (must be empty unless --overwrite)")
    convert.add_argument("--max-sequence-length", type=int, default=4096)
    convert.add_argument("--block-size", dest="block_size", type=int)
    convert.add_argument("--sparse-block-size", dest="sparse_block_size", type=int)
    convert.add_argument("--sparsity-factor", dest="sparsity_factor", type=int)
    convert.add_argument("--sparsity-type", dest="sparsity_type", choices=SPARSITY_TYPES)
    convert.add_argument("--num-global-tokens", dest="num_global_tokens", type=int)
    convert.add_argument("--model-kwargs", help="other config keys as JSON, e.g. '{\"mask_first_token\": true}'")
    convert.add_argument("--global-positional-stride", type=int, default=64)
    convert.add_argument("--random-global-init", action="store_true")
    convert.add_argument("--keep-first-global-token", action="store_true")
    convert.add_argument("--architecture", help="e.g. PegasusForSequenceClassification (default: the checkpoint's)")
    convert.add_argument("--seed", type=int, default=123)
    convert.add_argument("--overwrite", action="store_true")
    convert.add_argument("--allow-weight-mismatch", action="store_true", help="convert despite missing weights")
    convert.set_defaults(run=_convert)

    summarize = commands.add_parser("summarize", help="summarize text files with a trained model folder")
    summarize.add_argument("model", help="an HF model folder, e.g. outputs/.../hf_model")
    summarize.add_argument("files", nargs="+", help="UTF-8 text files, one document each")
    summarize.add_argument("--output", help="JSON lines file (default: stdout)")
    summarize.add_argument("--max-length", type=int, help="source tokens (default: the model's maximum)")
    summarize.add_argument("--num-beams", type=int, default=4)
    summarize.add_argument("--max-new-tokens", type=int, default=256)
    summarize.add_argument("--length-penalty", type=float, default=1.0)
    summarize.add_argument("--no-repeat-ngram-size", type=int, default=3)
    summarize.add_argument(
        "--trust-remote-code", action="store_true",
        help="run the model folder's own Python files (only for folders you trust; not needed for lsgtrain exports)",
    )  # fmt: skip
    summarize.set_defaults(run=_summarize)

    demo = commands.add_parser("demo", help="offline tour: tokenizer, tiny Pegasus, conversion, long input")
    demo.add_argument("--output-dir", default="outputs/demo")
    demo.add_argument("--max-length", type=int, default=8192)
    demo.add_argument("--vocab-size", type=int, default=4000)
    demo.set_defaults(run=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from huggingface_hub.errors import StrictDataclassError

    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except (ValueError, FileNotFoundError, RuntimeError, StrictDataclassError) as error:
        print(f"lsgtrain {args.command}: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
