"""Publishing an export on the Hugging Face hub: `lsgtrain push FOLDER REPO_ID`, or
`callbacks.hf_export.push_to_hub.repo_id` at the end of a run.

Only a complete export is pushed (weights, tokenizer, generation settings, model card), into a private repository
unless asked otherwise; the hub is checked (offline mode, network, token, an existing repository's visibility)
before anything is uploaded, and before a run that is to push trains.
"""

import argparse
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi, is_offline_mode
from huggingface_hub.errors import (
    HfHubHTTPError,
    HFValidationError,
    LocalTokenNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
)
from huggingface_hub.utils import validate_repo_id

from .modeling.loading import architectures, read_config

logger = logging.getLogger(__name__)

# What an lsgtrain export holds: (what, file patterns, any of which will do). The card is written last (after the
# test set), so a folder without it comes from a run that did not finish.
EXPORT_PARTS = (
    ("the model config", ("config.json",)),
    ("the weights", ("model.safetensors", "model.safetensors.index.json")),
    ("the tokenizer", ("tokenizer.json", "spiece.model")),
    ("the model card", ("README.md",)),
)


class HubUnavailable(RuntimeError):
    """The hub cannot be used from here (offline mode, no network, no or a rejected token), with the fix."""


class IncompleteExport(ValueError):
    """A folder that is not a complete lsgtrain export, with what it lacks."""


@dataclass(frozen=True)
class PushTarget:
    """Where an export goes: `repo_id` (`user/name` or `org/name`; None: not pushed) and its visibility."""

    repo_id: str | None = None
    private: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.private, bool):
            raise ValueError(f"private={self.private!r} must be true or false")
        if self.repo_id is not None:
            try:
                validate_repo_id(self.repo_id)
            except HFValidationError as error:
                raise ValueError(f"repo id {self.repo_id!r} is not a hub repository id ({error})") from error

    @classmethod
    def from_config(cls, settings: Mapping[str, Any] | None) -> "PushTarget":
        """From `callbacks.hf_export.push_to_hub` (`{repo_id, private}` or null), errors naming that key."""
        try:
            return cls(**(settings or {}))
        except (TypeError, ValueError) as error:
            raise ValueError(f"callbacks.hf_export.push_to_hub (keys: repo_id, private): {error}") from error


def check_export_folder(folder: str | Path) -> None:
    """Raise `IncompleteExport` unless `folder` holds every part of an export (see `EXPORT_PARTS`); a
    seq2seq model also needs `generation_config.json`, or `generate()` after loading would ignore the run's
    settings."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no export folder at {folder}: pass a run's hf_model folder")
    names = [path.name for path in folder.iterdir()]
    missing = [
        f"{what} ({' or '.join(patterns)})"
        for what, patterns in EXPORT_PARTS
        if not any(fnmatch(name, pattern) for name in names for pattern in patterns)
    ]
    if _generates(folder) and "generation_config.json" not in names:
        missing.append("the generation settings (generation_config.json)")
    if missing:
        raise IncompleteExport(
            f"{folder} is not a complete lsgtrain export: it lacks {', '.join(missing)}. An export is written by "
            "callbacks.hf_export at the end of a run, and its model card once the test set has run: a folder "
            "without it comes from a run that did not finish"
        )


def check_hub_access(token: str | None = None) -> str:
    """The user name the hub knows `token` (default: `HF_TOKEN` or `hf auth login`'s) by, or `HubUnavailable`
    saying why the hub cannot be used: offline mode, no network, no token, a rejected token."""
    api = HfApi(token=token)
    if is_offline_mode():
        raise HubUnavailable(
            "HF_HUB_OFFLINE is set: nothing can be pushed to the Hugging Face hub offline. Unset HF_HUB_OFFLINE "
            "where there is internet, then push the export with `lsgtrain push FOLDER REPO_ID`"
        )
    try:
        return api.whoami()["name"]
    except LocalTokenNotFoundError as error:
        raise HubUnavailable(
            "no Hugging Face token: log in with `hf auth login` or set HF_TOKEN to a token with write access"
        ) from error
    except OfflineModeIsEnabled as error:
        raise HubUnavailable(f"offline mode is enabled: {error}") from error
    except HfHubHTTPError as error:
        status = error.response.status_code if error.response is not None else None
        if status == 401:
            raise HubUnavailable(
                "the Hugging Face hub rejected the token (401): log in again with `hf auth login` or set HF_TOKEN "
                "to a valid token with write access"
            ) from error
        raise HubUnavailable(f"the Hugging Face hub at {api.endpoint} answered with an error: {error}") from error
    except Exception as error:  # the HTTP client's transport errors (refused, DNS, timeout): no network
        raise HubUnavailable(
            f"cannot reach the Hugging Face hub at {api.endpoint} (no network here?): {type(error).__name__}: "
            f"{error}. Push from a machine with internet: `lsgtrain push FOLDER REPO_ID`"
        ) from error


def check_push_target(target: PushTarget, token: str | None = None) -> None:
    """Raise unless `target` can be pushed to: the hub is reachable with a token, and an existing repository has
    the visibility asked for (pushing into a public repository when private was asked would publish the model)."""
    user = check_hub_access(token)
    try:
        info = HfApi(token=token).repo_info(target.repo_id)
    except RepositoryNotFoundError:
        logger.info("%s does not exist yet: it will be created (%s) as %s", target.repo_id, _visibility(target), user)
        return
    if info.private is not None and info.private != target.private:
        raise ValueError(
            f"{target.repo_id} exists and is {'private' if info.private else 'public'}, but a "
            f"{_visibility(target)} push was asked for: pass {'--private' if info.private else '--public'} "
            f"(callbacks.hf_export.push_to_hub.private={str(info.private).lower()}) to push into it, change its "
            "visibility in its settings on the hub, or push to another repository"
        )


def push_folder(folder: str | Path, target: PushTarget, token: str | None = None) -> str:
    """Upload a complete export to `target.repo_id` (created if needed, private unless `target.private` is False);
    returns the repository's URL. Everything is checked before anything is created or uploaded."""
    if target.repo_id is None:
        raise ValueError("no repository to push to: give a repo id (user/name)")
    check_export_folder(folder)
    check_push_target(target, token)
    api = HfApi(token=token)
    url = api.create_repo(target.repo_id, private=target.private, exist_ok=True)
    api.upload_folder(
        repo_id=target.repo_id, folder_path=str(folder), commit_message="Upload LSG-Pegasus model trained with lsgtrain"
    )
    logger.info("pushed %s to %s (%s)", folder, url, _visibility(target))
    return str(url)


def push_command(args: argparse.Namespace) -> None:
    """`lsgtrain push FOLDER REPO_ID [--public] [--token TOKEN]`."""
    url = push_folder(args.folder, PushTarget(args.repo_id, private=args.private), token=args.token)
    print(f"pushed {args.folder} to {url} ({'private' if args.private else 'public'})")


def _generates(folder: Path) -> bool:
    """Whether the folder's model is a generating (seq2seq) one, by its config's architectures (a folder without
    config.json is reported as lacking it)."""
    if not (folder / "config.json").is_file():
        return False
    return any(name.endswith("ForConditionalGeneration") for name in architectures(read_config(folder, "folder")))


def _visibility(target: PushTarget) -> str:
    return "private" if target.private else "public"


__all__ = [
    "HubUnavailable",
    "IncompleteExport",
    "PushTarget",
    "check_export_folder",
    "check_hub_access",
    "check_push_target",
    "push_command",
    "push_folder",
]
