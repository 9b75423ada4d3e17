"""Atomic file writes: a temporary file in the same folder, then `os.replace`, so a crash or
a kill never leaves a half-written file under the final name (only a temporary one, which
`remove_stale_temporaries` deletes at the next run)."""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

# ".NAME.XXXXXXXX.tmp": what `tempfile.mkstemp(prefix=".NAME.", suffix=".tmp")` makes
_TEMPORARY_NAME = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")
_UMASK = os.umask(0)
os.umask(_UMASK)


@contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file beside `path` (mode "wb" or "w"); when the block ends without
    an error it is flushed to disk and renamed to `path`, otherwise deleted. The folder is
    created if needed; the file gets the usual permissions (0o666 less the umask)."""
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_write: mode must be 'wb' or 'w', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp",
                                             dir=path.parent)
    try:
        os.chmod(temporary, 0o666 & ~_UMASK)
        with os.fdopen(descriptor, mode, **({} if "b" in mode else {"newline": ""})) as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def is_temporary(path: str | os.PathLike) -> bool:
    """Whether `path` is named as `atomic_write`'s temporary files are."""
    return bool(_TEMPORARY_NAME.match(Path(path).name))


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files a killed `atomic_write` left in `folder`; returns them."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = sorted(path for path in folder.iterdir() if is_temporary(path) and path.is_file())
    for path in stale:
        path.unlink(missing_ok=True)
    return stale
