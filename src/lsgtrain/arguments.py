"""How every component refuses a bad argument: `ConfigError` naming the config key as the user writes it, the value
and a value that works, and `unwritable`, the probe of a folder written later. Imports nothing of lsgtrain, so data,
tasks, callbacks and the pre-flight checks share it."""

import tempfile
from pathlib import Path
from typing import Any

# `data.batch_size=auto`: the largest micro-batch whose training step fits the device (`lsgtrain.callbacks.batch_size`)
AUTO = "auto"


class ConfigError(ValueError):
    """A config value that cannot work, with the key, the value and the fix."""


def check_number(
    key: str,
    value: Any,
    kind: type,
    minimum: float | None,
    example: str,
    *,
    exclusive: bool = False,
    below: float | None = None,
) -> None:
    """Raise `ConfigError` unless `value` (None: unset, accepted) is a number of `kind` (int: a whole number) of at
    least `minimum` (None: any; `exclusive`: above it) and, when given, below `below`; `example` goes in the fix."""
    if value is None:
        return
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        numeric = numeric and float(value).is_integer()
    in_range = numeric and (minimum is None or (value > minimum if exclusive else value >= minimum))
    in_range = in_range and (below is None or value < below)
    if not in_range:
        what = "an integer" if kind is int else "a number"
        bound = "" if minimum is None else f"> {minimum:g}" if exclusive else f">= {minimum:g}"
        bound += f" and < {below:g}" if below is not None else ""
        raise ConfigError(f"{key}={value!r} must be {what}{' ' + bound if bound else ''}, e.g. {key}={example}")


def unwritable(folder: Path) -> str | None:
    """Why nothing can be written in `folder` (or, while it does not exist, in its nearest existing parent, where
    it would be created), or None. Probes with a temporary file: permissions, read-only mounts and full quotas alike;
    creates no folder."""
    existing = folder.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is a file, not a folder"
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        return f"cannot write in {existing} ({error.strerror or error})"
    return None
