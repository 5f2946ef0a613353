"""Write a folder all at once: into a temporary sibling, renamed into place at the end."""
from __future__ import annotations

import contextlib
from pathlib import Path

from ..errors import AidgeLiteError


class ExportError(AidgeLiteError):
    """The export cannot write its output folder (it exists and holds other files, ...)."""


def check_target_folder(out) -> Path:
    """`out` as a Path; refused if it exists and is not an empty directory."""
    out = Path(out)
    if out.exists():
        if not out.is_dir():
            raise ExportError(f"output '{out}' exists and is not a directory")
        if any(out.iterdir()):
            raise ExportError(f"output folder '{out}' exists and is not empty: give a new or "
                              "empty folder (nothing was written)")
    return out


@contextlib.contextmanager
def staged_folder(out):
    """Yield a temporary folder next to `out`; on success its files are flushed to disk
    and it becomes `out` (`aidge_lite.atomic.atomic_folder`); on any error or
    interruption it is removed and `out` is left untouched."""
    from ..atomic import atomic_folder

    with atomic_folder(out, check=check_target_folder) as tmp:  # checked again before the swap
        yield tmp
