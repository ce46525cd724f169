"""Files a run reads or writes cannot hurt it: checkpoints load with weights_only (a crafted one runs no code), a failed
save leaves nothing, truncated or pickled weight files are named with the fix."""

from pathlib import Path

import pytest
import torch

from lsgtrain.checkpointing import CheckpointError
from lsgtrain.evaluate import evaluate
from lsgtrain.train import train

from ..helpers import QUICK, SHORT


class RunsCode:
    """Pickles to a call of `exec`: loading it with plain `pickle` runs the code."""

    def __init__(self, code: str):
        self.code = code

    def __reduce__(self):
        return exec, (self.code,)


class RunsPrint:
    def __reduce__(self):
        return exec, ("print('ran')",)


def test_checkpoints_load_with_weights_only_and_a_crafted_one_runs_no_code(make_cfg, tmp_path):
    train(make_cfg(*SHORT, "trainer.max_epochs=1", "test=false", "callbacks.hf_export=null"))
    saved = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)  # plain data only
    marker = tmp_path / "code-ran"
    saved["state_dict"]["payload"] = RunsCode(f"open({str(marker)!r}, 'w').write('ran')")
    crafted = tmp_path / "crafted.ckpt"
    torch.save(saved, crafted)
    cfg = make_cfg(*SHORT, f"ckpt_path={crafted}", config_name="eval")
    cfg.paths.output_dir = str(tmp_path / "eval")
    with pytest.raises(CheckpointError, match=r"holds objects other than tensors.*weights_only=True"):
        evaluate(cfg)
    resume = make_cfg(*SHORT, f"ckpt_path={crafted}")
    resume.paths.output_dir = str(tmp_path / "resumed")
    with pytest.raises(CheckpointError, match=r"holds objects other than tensors"):
        train(resume)
    assert not marker.exists()
    torch.load(crafted, weights_only=False)  # the file does run code when loaded without the restriction
    assert marker.read_text() == "ran"


def test_a_failing_save_leaves_no_temporary_file(tmp_path, monkeypatch):
    from lightning.pytorch.plugins.io import TorchCheckpointIO

    from lsgtrain.checkpointing import AtomicCheckpointIO

    def disk_full(self, checkpoint, path, *args, **kwargs):
        Path(path).write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(TorchCheckpointIO, "save_checkpoint", disk_full)
    with pytest.raises(OSError, match="No space left"):
        AtomicCheckpointIO().save_checkpoint({"state_dict": {}}, tmp_path / "last.ckpt")
    assert list(tmp_path.iterdir()) == []


def test_corrupt_weight_files_are_named_with_the_fix(make_cfg, tiny_checkpoint, tmp_path, capsys):
    import shutil

    from lsgtrain.cli import main as cli_main

    folder = tmp_path / "truncated"
    shutil.copytree(tiny_checkpoint, folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    cfg = make_cfg(*QUICK, f"model.pretrained={folder}")
    with pytest.raises(CheckpointError, match=rf"model.pretrained={folder}: {weights} is not a readable weight file "
                       r"\(truncated or corrupt.*Download or export it again"):  # fmt: skip
        train(cfg)
    document = tmp_path / "doc.txt"
    document.write_text("Long documents need sparse attention. " * 20)
    assert cli_main(["summarize", str(folder), str(document), "--max-new-tokens", "3"]) == 2
    assert f"{weights} is not a readable weight file (truncated or corrupt" in capsys.readouterr().err


def test_a_crafted_pickle_is_refused_without_suggesting_weights_only_false(make_cfg, tiny_checkpoint, tmp_path):
    import shutil

    from safetensors.torch import load_file

    folder = tmp_path / "pickled"
    shutil.copytree(tiny_checkpoint, folder)
    state = load_file(folder / "model.safetensors")
    (folder / "model.safetensors").unlink()
    torch.save({**state, "payload": RunsPrint()}, folder / "pytorch_model.bin")
    with pytest.raises(CheckpointError) as error:
        train(make_cfg(*QUICK, f"model.pretrained={folder}"))
    text = "".join(__import__("traceback").format_exception(error.value))
    assert f"{folder / 'pytorch_model.bin'} holds objects other than tensors" in text
    assert "weights_only=False" not in text
