"""Write-then-rename: a file appears under its final name only once it is complete.

Every output of CLADE (volumes, model files, checkpoints) is first written to a hidden temporary
file beside its final name, then renamed over it (``os.replace`` is atomic on one file system),
so a crash, a full disk or a cancel never leaves half a file under the name a user would open.

Why not ``tempfile.mkstemp``: it creates the file with mode 0600, and a rename keeps that mode,
so results would be unreadable by the user's group (a shared research server, a PACS export
folder). Here the temporary file is created like any ``open(path, "w")`` would create it: mode
0666 less the process umask.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path


def reserve_temporary(path: str | os.PathLike, suffix: str = ".partial") -> Path:
    """Create an empty, hidden, uniquely named file beside ``path`` and return its name.

    The name ends with ``suffix`` (writers such as SimpleITK choose the format by the ending).
    The caller writes into it, then calls :func:`publish`, or removes it on failure.

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> temporary = reserve_temporary(folder / "out.nii.gz", ".partial.nii.gz")
        >>> temporary.name.startswith(".out.nii.gz.") and temporary.name.endswith(".nii.gz")
        True
    """
    path = Path(path)
    folder = path.resolve().parent
    for _ in range(100):
        candidate = folder / f".{path.name}.{secrets.token_hex(4)}{suffix}"
        try:
            # O_EXCL: never reuse (and so never clobber) a file that already exists.
            handle = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(handle)
        return candidate
    raise FileExistsError(f"no free temporary name beside {path}")


def publish(temporary: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Rename the finished ``temporary`` file to ``path``, replacing any previous file at once.

    Example:
        >>> import tempfile
        >>> target = Path(tempfile.mkdtemp()) / "a.txt"
        >>> temporary = reserve_temporary(target)
        >>> _ = temporary.write_text("done")
        >>> publish(temporary, target).read_text()
        'done'
    """
    os.replace(temporary, path)
    return Path(path)


def write_atomically(
    path: str | os.PathLike, write: Callable[[str], object], suffix: str = ".partial"
) -> Path:
    """Call ``write(temporary_name)``, then rename the result to ``path``; on any failure the
    temporary file is removed, any previous ``path`` is kept and the error propagates.

    Example:
        >>> import tempfile
        >>> target = Path(tempfile.mkdtemp()) / "b.txt"
        >>> write_atomically(target, lambda name: Path(name).write_text("ok")).read_text()
        'ok'
    """
    temporary = reserve_temporary(path, suffix)
    try:
        write(str(temporary))
        return publish(temporary, path)
    finally:
        discard(temporary)


def discard(temporary: str | os.PathLike) -> None:
    """Remove ``temporary`` if it is still there (after a failed write)."""
    try:
        os.remove(temporary)
    except FileNotFoundError:
        pass
