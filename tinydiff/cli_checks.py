"""Checks the command line makes before any long work: paths it reads and writes, and a
resumed run's options against its checkpoint. Each failure is a `UsageError` (exit 2) or a
`PathError` (exit 1) whose message says what was wrong and what was expected."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


class UsageError(ValueError):
    """Options that cannot go together, or that contradict the checkpoint (exit status 2)."""


class PathError(ValueError):
    """A path that cannot be read or written as asked (exit status 1)."""


def _nearest_existing(path: Path) -> Path:
    """`path` itself or its closest ancestor that exists."""
    for candidate in (path, *path.absolute().parents):
        if candidate.exists():
            return candidate
    return Path("/")


def _check_creatable(path: Path, option: str) -> None:
    """`path` (which may not exist yet) can be created: its nearest existing ancestor is a
    writable folder."""
    ancestor = _nearest_existing(path.parent)
    if not ancestor.is_dir():
        raise PathError(f"{option} {path}: {ancestor} is a file, not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise PathError(f"{option} {path}: cannot write in {ancestor} (permission denied)")


def check_output_file(path: Path, option: str) -> None:
    """`path` can be written as a file: not a folder, its folder writable or creatable."""
    if path.is_dir():
        raise PathError(f"{option} {path} is a folder; expected a file name")
    if path.exists() and not os.access(path, os.W_OK):
        raise PathError(f"{option} {path}: the file is not writable (permission denied)")
    _check_creatable(path, option)


def check_output_folder(path: Path, option: str) -> None:
    """`path` is a writable folder or can be created as one."""
    if path.exists() and not path.is_dir():
        raise PathError(f"{option} {path} is a file; expected a folder (it is created if "
                        "missing)")
    if path.is_dir() and not os.access(path, os.W_OK | os.X_OK):
        raise PathError(f"{option} {path}: cannot write in this folder (permission denied)")
    _check_creatable(path, option)


def check_input_folder(path: Path, option: str) -> None:
    """`path` is an existing folder whose files can be listed and read."""
    if not path.exists():
        raise PathError(f"{option} {path}: no such folder")
    if not path.is_dir():
        raise PathError(f"{option} {path} is a file; expected a folder")
    if not os.access(path, os.R_OK | os.X_OK):
        raise PathError(f"{option} {path}: cannot read this folder (permission denied)")


def _same_file(a: Path, b: Path) -> bool:
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return a.resolve() == b.resolve()


def check_distinct(inputs: Mapping[str, Path | None], outputs: Mapping[str, Path | None]) -> None:
    """UsageError if an output is (or resolves to) the same file as an input or as another
    output: writing it would destroy the other."""
    given_outputs = [(option, path) for option, path in outputs.items() if path is not None]
    for index, (option, path) in enumerate(given_outputs):
        for other, source in [*inputs.items(), *given_outputs[:index]]:
            if source is not None and _same_file(path, source):
                raise UsageError(f"{option} {path} is the same file as {other} {source}; "
                                 "writing it would destroy that file: choose another name")


# ---- resume -------------------------------------------------------------------------------

# TrainConfig fields a resumed run takes from the command line: where and how long it runs,
# not what it learns (steps: to extend the run). Every other given option must match.
RESUME_APPLIES = ("steps", "checkpoint_every", "keep_checkpoints", "data_dir")


def resume_conflicts(given: Mapping[str, Any], saved: Mapping[str, Any]) -> list[str]:
    """'--OPTION VALUE (the checkpoint has SAVED)' for each given recipe option (TrainConfig
    field -> value) that differs from the checkpoint's train config."""
    conflicts = []
    for name, value in given.items():
        if name in RESUME_APPLIES or name not in saved or saved[name] == value:
            continue
        flag = "preset" if name == "model" else name.replace("_", "-")
        if isinstance(value, bool):
            conflicts.append(f"--{'' if value else 'no-'}{flag} (the checkpoint has "
                             f"{'' if saved[name] else 'no-'}{flag})")
        else:
            conflicts.append(f"--{flag} {value} (the checkpoint has {saved[name]})")
    return conflicts


def given_destinations(parser: argparse.ArgumentParser, argv: Sequence[str],
                       command: str) -> set[str]:
    """The destinations of the options of `command` given in `argv` (not left at their
    defaults): `argv` parsed again with every default of that command suppressed."""
    # argparse has no public handle on a subcommand's parser: reach it through the
    # subparsers action (stable since Python 3.2)
    commands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    actions = commands[command]._actions
    defaults = [action.default for action in actions]
    try:
        for action in actions:
            action.default = argparse.SUPPRESS
        return set(vars(parser.parse_args(argv)))
    finally:
        for action, default in zip(actions, defaults):
            action.default = default
