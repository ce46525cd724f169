"""Pushing the export (hub.py), at the end of a run or with `lsgtrain push`, against a stand-in `HfApi`: private by
default, complete exports only, offline and network failures named with the retry."""

import shutil
import socket
from pathlib import Path

import pytest
from huggingface_hub import constants

from lsgtrain import hub
from lsgtrain.callbacks.hf_export import push_export
from lsgtrain.cli import main as cli_main

from ..helpers import REPO, FakeHub


def test_a_run_with_push_to_hub_pushes_the_finished_export_privately(exported_run):
    calls = exported_run["hub"].calls
    assert [name for name, _ in calls] == ["create_repo", "upload_folder"]
    assert calls[0][1]["repo_id"] == REPO and calls[0][1]["private"] is True
    upload = calls[1][1]
    assert upload["repo_id"] == REPO and Path(upload["folder_path"]) == exported_run["export"]
    assert {"README.md", "config.json", "generation_config.json", "model.safetensors", "tokenizer.json"} <= set(
        upload["files"]
    )  # the card was written before the upload


def test_push_command_uploads_a_complete_export(exported_run, monkeypatch, capsys):
    fake = FakeHub().install(monkeypatch)
    assert cli_main(["push", str(exported_run["export"]), "me/private-model"]) == 0
    assert cli_main(["push", str(exported_run["export"]), "me/public-model", "--public"]) == 0
    created = [kwargs for name, kwargs in fake.calls if name == "create_repo"]
    assert [(c["repo_id"], c["private"]) for c in created] == [("me/private-model", True), ("me/public-model", False)]
    uploads = [kwargs for name, kwargs in fake.calls if name == "upload_folder"]
    assert [Path(u["folder_path"]) for u in uploads] == [exported_run["export"]] * 2
    assert "pushed" in capsys.readouterr().out


@pytest.mark.parametrize("missing", ["README.md", "generation_config.json", "model.safetensors"])
def test_push_refuses_an_incomplete_export(exported_run, tmp_path, monkeypatch, capsys, missing):
    folder = tmp_path / "hf_model"
    shutil.copytree(exported_run["export"], folder)
    (folder / missing).unlink()
    fake = FakeHub().install(monkeypatch)
    assert cli_main(["push", str(folder), "me/model"]) == 2
    error = capsys.readouterr().err
    assert "not a complete lsgtrain export" in error and missing in error
    assert fake.calls == []


def test_push_refuses_a_public_repository_when_private_is_asked(exported_run, monkeypatch, capsys):
    fake = FakeHub(existing={"me/model": False}).install(monkeypatch)
    assert cli_main(["push", str(exported_run["export"]), "me/model"]) == 2
    assert "exists and is public" in capsys.readouterr().err
    assert fake.calls == []


def test_push_offline_says_so(exported_run, capsys):
    assert constants.HF_HUB_OFFLINE  # the tests' setting (tests/conftest.py)
    assert cli_main(["push", str(exported_run["export"]), "me/model"]) == 2
    assert "HF_HUB_OFFLINE is set" in capsys.readouterr().err


def test_push_without_network_names_the_problem(exported_run, monkeypatch, capsys):
    with socket.socket() as probe:  # a local port nobody listens on: the connection is refused at once
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    assert cli_main(["push", str(exported_run["export"]), "me/model"]) == 2
    assert "cannot reach the Hugging Face hub" in capsys.readouterr().err


def test_a_push_failing_at_the_end_of_a_run_says_how_to_retry(exported_run, monkeypatch):
    FakeHub(upload_error=ConnectionResetError("connection reset by peer")).install(monkeypatch)
    with pytest.raises(
        RuntimeError, match=rf"the run finished .* `lsgtrain push {exported_run['export']} me/model --public`"
    ):
        push_export(exported_run["export"], hub.PushTarget("me/model", private=False))
