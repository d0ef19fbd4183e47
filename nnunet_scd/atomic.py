"""Atomic file writes: one mechanism for every file nnunet-scd writes (datasets, plans, weights, checkpoints).

A file is written under a temporary name that is unique to this write, then renamed onto its
target. An interrupted run therefore never leaves a half-written file under the final name, and
two runs writing into one folder never share a temporary file: each removes only its own.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_target", "write_text_atomic"]


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
