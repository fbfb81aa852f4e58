"""An exclusive lock on a file beside a local database, for the first open of a new store."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def exclusive_file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive flock on `path` (created if absent) for the block. Several commands started together
    on a new workspace then create a database's tables one after another instead of all at once. Where there
    is no fcntl (Windows) nothing is locked: concurrent first use there is not guarded."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
