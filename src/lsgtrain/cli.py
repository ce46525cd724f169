"""`lsgtrain` command line: `train` and `eval` (the Hydra apps, with any overrides), `predict` over files or a dataset
split, `summarize` text files, `compare` two runs' predictions, `push` an export to the hub, `convert` a Pegasus
checkpoint to LSG, run the offline `demo`."""

import argparse
import json
import logging
import runpy
import sys
import time
from pathlib import Path

from .compare import add_compare_parser
from .hub import push_command
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


def _predict(args: argparse.Namespace) -> None:
    """Summaries or labels for files or a dataset split, one JSON line per document (lsgtrain.predict)."""
    from .predict import read_documents

    documents = read_documents(
        args.input, dataset=args.dataset, split=args.split, config=args.config, text_column=args.text_column,
        reference_column=args.reference_column, id_column=args.id_column,
    )  # fmt: skip
    _run_prediction(args, documents)


def _summarize(args: argparse.Namespace) -> None:
    """`predict` over text files, one document each (the file's path is the row's id)."""
    from .predict import read_documents

    _run_prediction(args, read_documents(args.files))


def _run_prediction(args: argparse.Namespace, documents) -> None:
    from .predict import metrics_path, predict

    generation = {key: getattr(args, key) for key in GENERATION_OPTIONS if getattr(args, key) is not None}
    report = predict(
        args.model, documents, output=args.output, resume=args.resume, batch_size=args.batch_size,
        device=args.device, dtype=args.dtype, max_length=args.max_length, generation=generation,
        trust_remote_code=args.trust_remote_code, bootstrap=(args.bootstrap_resamples, args.bootstrap_seed),
    )  # fmt: skip
    out = sys.stdout if args.output else sys.stderr  # stdout carries the rows when there is no --output
    lines = [f"{report.written} predictions written to {args.output or 'stdout'}"
             + (f" ({report.resumed} already there)" if report.resumed else "")
             + (f", {len(report.empty_ids)} empty documents skipped" if report.empty_ids else "")
             + (f", {report.truncated} documents truncated" if report.truncated else "")]  # fmt: skip
    lines += [f"  {name:<12} {value:.4f}" for name, value in report.metrics.items()]
    if report.metrics and args.output:
        lines.append(f"metrics written to {metrics_path(args.output)}")
    print("\n".join(lines), file=out)


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


GENERATION_OPTIONS = (
    "num_beams", "max_new_tokens", "min_new_tokens", "length_penalty", "no_repeat_ngram_size", "early_stopping",
)  # fmt: skip


def _early_stopping(value: str) -> bool | str:
    """generate()'s `early_stopping`: true, false or never (beam search's stopping rule)."""
    choices = {"true": True, "false": False, "never": "never"}
    if value.lower() not in choices:
        raise argparse.ArgumentTypeError(f"--early-stopping={value!r}: choose true, false or never")
    return choices[value.lower()]


def _add_prediction_options(parser: argparse.ArgumentParser) -> None:
    """The options `predict` and `summarize` share: output, batching, device, lengths, generation."""
    from .predict import DEVICES, DTYPES

    parser.add_argument("--output", help="JSON lines file, appended row by row as batches finish (default: stdout)")
    parser.add_argument("--resume", action="store_true", help="skip the ids already in --output, append the others")
    parser.add_argument("--batch-size", type=int, default=8, help="documents per batch (batched by token length)")
    parser.add_argument("--device", choices=DEVICES, default="auto", help="auto: cuda if there is a GPU")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32", help="dtype of the model's weights")
    parser.add_argument(
        "--max-length",
        type=int,
        help="source tokens (default: the length the model was trained on, its tokenizer's "
        "model_max_length, at most its position table)",
    )
    generation = parser.add_argument_group("generation (default: the model's generation_config)")
    generation.add_argument("--num-beams", type=int)
    generation.add_argument("--max-new-tokens", type=int)
    generation.add_argument("--min-new-tokens", type=int)
    generation.add_argument("--length-penalty", type=float)
    generation.add_argument("--no-repeat-ngram-size", type=int)
    generation.add_argument(
        "--early-stopping", type=_early_stopping, metavar="{true,false,never}",
        help="beam search: stop when num_beams candidates are finished (true), by a heuristic (false), or never",
    )  # fmt: skip
    parser.add_argument("--bootstrap-resamples", type=int, default=1000, help="of each ROUGE's 95%% interval")
    parser.add_argument("--bootstrap-seed", type=int, default=0, help="seeds those resamples")
    parser.add_argument(
        "--trust-remote-code", action="store_true",
        help="run the model folder's own Python files (only for folders you trust; not needed for lsgtrain exports)",
    )  # fmt: skip


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

    predict = commands.add_parser(
        "predict", help="summaries or labels for jsonl/csv/parquet files or a dataset split, with metrics"
    )
    predict.add_argument("model", help="an HF model folder, e.g. outputs/.../hf_model")
    source = predict.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--input", nargs="+", help=".jsonl/.json/.csv/.parquet files (one document a row) or .txt files"
    )
    source.add_argument("--dataset", help="a hub dataset name or a local dataset folder (datasets.load_dataset)")
    predict.add_argument("--split", default="test", help="split of --dataset")
    predict.add_argument("--config", help="config of --dataset (e.g. section for ccdv/arxiv-summarization)")
    predict.add_argument("--text-column", default="document")
    predict.add_argument("--reference-column", help="summaries or labels to score against (ROUGE / accuracy, F1)")
    predict.add_argument("--id-column", help="written with each row (default: the row index)")
    _add_prediction_options(predict)
    predict.set_defaults(run=_predict)

    summarize = commands.add_parser("summarize", help="summarize text files with a trained model folder")
    summarize.add_argument("model", help="an HF model folder, e.g. outputs/.../hf_model")
    summarize.add_argument("files", nargs="+", help="UTF-8 text files, one document each (the path is its id)")
    _add_prediction_options(summarize)
    summarize.set_defaults(run=_summarize)

    add_compare_parser(commands)

    push = commands.add_parser("push", help="upload a run's export (model, tokenizer, card) to the Hugging Face hub")
    push.add_argument("folder", help="a finished run's hf_model folder")
    push.add_argument("repo_id", help="hub repository, user/name or org/name (created if missing)")
    visibility = push.add_mutually_exclusive_group()
    visibility.add_argument("--private", dest="private", action="store_true", default=True, help="(default)")
    visibility.add_argument("--public", dest="private", action="store_false", help="a public repository")
    push.add_argument("--token", help="a hub token with write access (default: HF_TOKEN or `hf auth login`'s)")
    push.set_defaults(run=push_command)

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
