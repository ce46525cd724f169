"""Tokenisation is cached and reused, redone when a data file or `overwrite_cache` says so, run in processes; stale
temporary files are removed."""

from pathlib import Path

from lsgtrain.train import train

from ..helpers import QUICK
from .helpers import own_datamodule, own_files, own_rows, write_rows


def _tokenized_files(cache: Path) -> dict[str, float]:
    return {path.name: path.stat().st_mtime_ns for path in (cache / "tokenized").glob("*.arrow")}


def test_tokenization_is_cached_and_reused(make_cfg, cache_dir):
    from hydra.utils import instantiate

    cfg = make_cfg("data.max_samples=4")
    first = instantiate(cfg.data, _convert_="all")
    first.tokenizer = first.train_tokenizer()
    first.prepare_data()
    files = {p: p.stat().st_mtime_ns for p in Path(cache_dir, "tokenized").glob("*.arrow")}
    second = instantiate(cfg.data, _convert_="all")
    second.tokenizer = second.train_tokenizer()
    second.setup("fit")
    assert {p: p.stat().st_mtime_ns for p in Path(cache_dir, "tokenized").glob("*.arrow")} == files
    assert second.datasets["train"].cache_files[0]["filename"] in {str(p) for p in files}


def test_num_proc_tokenises_in_processes_and_overwrite_cache_tokenises_again(make_cfg, tmp_path):
    files = own_files(tmp_path, train=8, val=4, test=4)
    tokenizer = own_datamodule(make_cfg, files).train_tokenizer()

    def datamodule(cache: Path, *overrides: str):
        module = own_datamodule(make_cfg, files, *overrides)
        module.cache_dir = cache
        module.tokenizer = tokenizer
        module.prepare_data()
        module.setup("fit")
        return module

    single = datamodule(tmp_path / "cache")
    written = _tokenized_files(tmp_path / "cache")
    assert len(written) == 3
    assert _tokenized_files(datamodule(tmp_path / "cache").cache_dir) == written  # reused as it is
    rewritten = _tokenized_files(datamodule(tmp_path / "cache", "data.overwrite_cache=true").cache_dir)
    assert rewritten.keys() == written.keys() and all(rewritten[name] != written[name] for name in written)

    parallel = datamodule(tmp_path / "parallel_cache", "data.num_proc=2")
    shards = [name for name in _tokenized_files(parallel.cache_dir) if name.endswith("_of_00002.arrow")]
    assert len(shards) == 6  # 2 per split, one per process
    for split in ("train", "val", "test"):
        assert list(parallel.datasets[split]["input_ids"]) == list(single.datasets[split]["input_ids"])


def test_editing_a_data_file_retokenises_and_retrains_the_tokenizer(make_cfg, tmp_path):
    files = own_files(tmp_path, train=8, val=4, test=4)
    cache = tmp_path / "cache"

    def tokenized_train():
        module = own_datamodule(make_cfg, files)
        module.cache_dir = cache
        module.tokenizer = module.train_tokenizer()
        module.setup("fit")
        return module.tokenizer.decode(module.datasets["train"][0]["input_ids"], skip_special_tokens=True)

    assert tokenized_train().startswith("document 0.")
    rows = own_rows(8)
    rows[0]["document"] = rows[0]["document"].replace("document 0.", "edited text.")
    write_rows(Path(files["train"]), rows)
    assert tokenized_train().startswith("edited text.")
    assert len(list((cache / "tokenizers").iterdir())) == 2  # the tokenizer trained on the old texts is not reused


def test_stale_temporary_tokenisation_files_are_removed_by_the_next_run(make_cfg, tmp_path):
    tokenized = tmp_path / "cache" / "tokenized"
    tokenized.mkdir(parents=True)
    stale = [tokenized / "tmpabc123", tokenized / "tmp_folder_xyz"]
    stale[0].write_bytes(b"x" * 1000)
    stale[1].mkdir()
    (stale[1] / "part.arrow").write_bytes(b"x")
    cfg = make_cfg(*QUICK)
    cfg.paths.cache_dir = str(tmp_path / "cache")
    train(cfg)
    assert not any(path.exists() for path in stale)
    assert list(tokenized.glob("*.arrow"))  # the run's own cache files are there
