"""Atomic file writes: one mechanism for every file nnunet-scd writes (datasets, plans, weights, checkpoints).

A file is written under a temporary name that is unique to this write, then renamed onto its
target. An interrupted run therefore never leaves a half-written file under the final name, and
two runs writing into one folder never share a temporary file: each removes only its own.

A writer that fills a whole folder (a dataset) also holds ``folder_lock``, so that two runs never
interleave their cases: the second waits for the first, then finds its work done or redoes it.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_target", "folder_lock", "write_text_atomic"]


def _default_permissions(path: str) -> None:
    # mkstemp creates files readable by the owner only; give them the mode a plain open() would.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


@contextmanager
def atomic_target(path: str | os.PathLike, suffix: str = "", tmp_dir: str | os.PathLike | None = None,
                  fsync: bool = False, exclusive: bool = False) -> Iterator[str]:
    """Yield a unique temporary file name; when the block succeeds, rename it onto ``path``.

    Args:
        path: the final file.
        suffix: ending of the temporary name (writers that pick a format by ending need it, e.g. ``.nii.gz``).
        tmp_dir: folder of the temporary file; it must be on the same file system as ``path``
            (default: ``path``'s folder).
        fsync: flush the file to disk before the rename (checkpoints: the rename must never expose
            a file whose data is still only in the page cache).
        exclusive: never replace an existing ``path``: FileExistsError if one is there (also when
            another run creates it meanwhile; a hard link is created atomically or not at all).

    The temporary file exists (empty) when the block starts; if the block raises, it is removed
    and ``path`` is left as it was.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tmp_dir) if tmp_dir is not None else target.parent
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".tmp_{target.name}.", suffix=suffix, dir=folder)
    os.close(fd)
    try:
        yield tmp
        if fsync:
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
        _default_permissions(tmp)
        if exclusive:
            os.link(tmp, target)
        else:
            os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text_atomic(text: str, path: str | os.PathLike, exclusive: bool = False) -> None:
    """Write ``text`` to ``path`` via a unique temporary file and a rename (``exclusive``: see ``atomic_target``)."""
    with atomic_target(path, exclusive=exclusive) as tmp, open(tmp, "w") as handle:
        handle.write(text)


@contextmanager
def folder_lock(folder: str | os.PathLike, on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold an exclusive lock on ``folder`` for the block; wait while another run holds it.

    The lock is ``flock`` on ``.<name>.lock`` beside the folder, not in it: the folder may not exist
    yet, and must not hold files that nnU-Net or a "foreign folder" check would see. The kernel
    releases it when the process dies, so a killed run never blocks the next one. The lock file is
    left in place: removing it would let a waiting run lock a file that a third run no longer sees.
    Once the lock is held, temporary files (``.tmp_*``) in the folder are removed: every writer of
    the folder holds the lock, so they are leftovers of a run that was killed.

    Args:
        folder: the folder the block writes.
        on_wait: called with a line to show when another run holds the lock, before waiting for it.
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / f".{folder.name}.lock", "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait(f"waiting for another nnunet-scd run that is writing {folder} to finish")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            _remove_leftover_temporaries(folder)
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _remove_leftover_temporaries(folder: Path) -> None:
    # Under the lock no other run writes here, so a temporary file in the folder is what a killed run
    # (kill -9, power loss) left behind: its ``finally`` never ran.
    if folder.is_dir():
        for path in folder.glob(".tmp_*"):
            if path.is_file():
                path.unlink(missing_ok=True)
