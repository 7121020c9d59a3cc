"""A failed write of a run's file (full disk, quota, I/O error) as one sentence, without torch.

Every file of a training run is written under a temporary name and renamed when complete
(:func:`CLADE.atomic_files.write_atomically`), so a failed write leaves the previous file as it
was. What remains is to say so: :func:`guarded_write` turns the failure into a
:class:`CLADE.errors.CladeError` naming the folder, saying whether the disk is full and that the
previous file is kept. torch's zip writer reports a full disk not as ``OSError`` but as a
``RuntimeError`` from ``inline_container.cc`` (``file write failed``, ``unexpected pos``,
``iostream error``); the free space left then tells a full disk from other failures.

Example:
    >>> import errno, os, tempfile
    >>> def full(name):
    ...     raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    >>> guarded_write(os.path.join(tempfile.mkdtemp(), "run.json"), full)
    Traceback (most recent call last):
    ...
    CLADE.errors.CladeError: The disk holding ... is full (no space left on device): run.json was not written and the previous file is kept; free disk space and rerun with --resume.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from ..atomic_files import DeviceFull, write_atomically
from ..errors import CladeError

#: Free space below which a failed write counts as a full disk, beyond the bytes it needed.
FULL_MARGIN_BYTES = 2**20

_TORCH_WRITER_MARKS = ("inline_container", "pytorchstreamwriter", "iostream error", "write")


def is_write_error(error: BaseException) -> bool:
    """Whether ``error`` is a failure to write a file (rather than a bug in what was written)."""
    if isinstance(error, OSError):
        return True
    while error is not None:
        if isinstance(error, RuntimeError) and any(
            mark in str(error).lower() for mark in _TORCH_WRITER_MARKS
        ):
            return True
        error = error.__cause__ or error.__context__
    return False


def is_disk_full(error: BaseException, folder: str | os.PathLike, needed: int = 0) -> bool:
    """Whether the failed write ``error`` in ``folder`` was for want of space.

    ``needed`` is the size of what was being written; after the temporary file is removed, a
    disk with less free space than that (plus :data:`FULL_MARGIN_BYTES`) could not hold it.
    """
    # torch's writer raises RuntimeError("unexpected pos ...") with the OSError as its context.
    cause = error
    while cause is not None:
        if isinstance(cause, OSError) and cause.errno is not None:
            return cause.errno in (errno.ENOSPC, errno.EDQUOT)
        cause = cause.__cause__ or cause.__context__
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return False
    return free < needed + FULL_MARGIN_BYTES


def write_failure(
    path: str | os.PathLike, error: BaseException, needed: int = 0, kept: str = ""
) -> CladeError:
    """The one-sentence error for a failed write of ``path`` (``kept``: what survives, if any)."""
    path = Path(path)
    folder = path.parent.resolve()
    kept = kept or "the previous file is kept"
    if isinstance(error, DeviceFull) or is_disk_full(error, folder, needed):
        return CladeError(
            f"The disk holding {folder} is full (no space left on device): {path.name} was not "
            f"written and {kept}; free disk space and rerun with --resume."
        )
    return CladeError(
        f"Could not write {path.name} in {folder} ({_short(error)}), {kept}: free disk space "
        "and rerun with --resume."
    )


def guarded_write(
    path: str | os.PathLike,
    write: Callable[[str], object],
    needed: int = 0,
    kept: str = "",
    sync: bool = True,
) -> Path:
    """Write ``path`` atomically with ``write(temporary_name)``; a write failure is a CladeError.

    ``sync`` flushes the file to disk before the rename, so a power cut cannot leave a renamed
    but empty file. Errors that are not write failures propagate unchanged.
    """
    path = Path(path)

    def write_and_sync(name: str) -> None:
        write(name)
        if sync:
            with open(name, "rb") as written:
                os.fsync(written.fileno())

    try:
        write_atomically(path, write_and_sync)
    except DeviceFull as error:  # found full by write_atomically: say what survives, too
        raise write_failure(path, error, needed, kept) from None
    except (OSError, RuntimeError) as error:
        if not is_write_error(error):
            raise
        raise write_failure(path, error, needed, kept) from None
    return path


def _short(error: BaseException) -> str:
    """The OS's reason if there is one in the chain, else the first line of the message."""
    cause = error
    while cause is not None:
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror.lower()
        cause = cause.__cause__ or cause.__context__
    return str(error).splitlines()[0].rstrip(".")
