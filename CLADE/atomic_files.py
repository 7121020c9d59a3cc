"""Write-then-rename: a file appears under its final name only once it is complete and checked.

Every output of CLADE (volumes, model files, checkpoints, reports, figures) is first written to a
hidden temporary file beside its final name, flushed to disk, optionally verified, then renamed
over it (``os.replace`` is atomic on one file system), so a crash, a full disk or a cancel never
leaves half a file under the name a user would open, and never replaces a good earlier output.

Formats with a detached header (MetaImage ``.mhd`` + ``.raw``, NRRD ``.nhdr`` + data) are two
files, and the header names its data file. They are written into a hidden temporary *folder*
beside the output under their final names (so the header already names the final data file),
checked, and then moved out, data first and header last: a reader finds either the previous pair
or the new one, never a header whose data is missing or half-written.

Temporaries carry the id of the process that made them (``.out.nii.gz.<pid>-<random>.partial``).
A process killed with SIGKILL cannot remove its own, so every write first removes the temporaries
of the *same* output whose process is gone; those of a live process (a concurrent run) are kept.

A write that fails because the device is full raises :class:`CladeError` with one sentence
naming the folder, whatever the writer's own error looked like (torch's serialiser reports
``unexpected pos``, ITK prints C++ file names).

Why not ``tempfile.mkstemp``: it creates the file with mode 0600, and a rename keeps that mode,
so results would be unreadable by the user's group (a shared research server, a PACS export
folder). Here the temporary file is created like any ``open(path, "w")`` would create it: mode
0666 less the process umask.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path

from .errors import CladeError

#: Below this many free bytes at the moment a write failed, the failure is a full device.
#: A write fails with ENOSPC when not even one more block fits, so a device that still has a
#: megabyte free after a failure failed for another reason.
FULL_DEVICE_BYTES = 1 << 20


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
        candidate = folder / _temporary_name(path, suffix)
        try:
            # O_EXCL: never reuse (and so never clobber) a file that already exists.
            handle = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(handle)
        return candidate
    raise FileExistsError(f"no free temporary name beside {path}")


def reserve_temporary_folder(path: str | os.PathLike) -> Path:
    """Create an empty, hidden, uniquely named folder beside ``path`` and return its name.

    Example:
        >>> import tempfile
        >>> folder = reserve_temporary_folder(Path(tempfile.mkdtemp()) / "out.mhd")
        >>> folder.is_dir() and folder.name.startswith(".out.mhd.")
        True
    """
    path = Path(path)
    parent = path.resolve().parent
    for _ in range(100):
        candidate = parent / _temporary_name(path, ".partial")
        try:
            os.mkdir(candidate)  # fails if it exists: never shared with another writer
        except FileExistsError:
            continue
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


class DeviceFull(CladeError):
    """A write failed because the device holding it is full (one sentence; see
    :func:`no_space_message`). Callers that can say more, e.g. which checkpoint survives, catch
    it and re-word it."""


def write_atomically(
    path: str | os.PathLike,
    write: Callable[[str], object],
    suffix: str = ".partial",
    *,
    verify: Callable[[str], object] | None = None,
    companions: bool = False,
) -> Path:
    """Call ``write(temporary_name)``, then ``verify(temporary_name)`` if given, then rename the
    result to ``path``; on any failure the temporaries are removed, any previous ``path`` is
    kept and the error propagates (as :class:`DeviceFull`, a :class:`CladeError` with the
    sentence of :func:`no_space_message`, when the device is full).

    ``companions=True`` is for formats that write more than one file (a detached header and its
    data): ``write`` gets ``path``'s own name inside a private temporary folder, may create
    other files there, and all of them are moved beside ``path``, ``path`` itself last.

    Example:
        >>> import tempfile
        >>> target = Path(tempfile.mkdtemp()) / "b.txt"
        >>> write_atomically(target, lambda name: Path(name).write_text("ok")).read_text()
        'ok'
        >>> pair = target.with_name("c.hdr")
        >>> def write_pair(name):
        ...     _ = Path(name).write_text("data: c.dat")
        ...     _ = Path(name).with_name("c.dat").write_text("42")
        >>> _ = write_atomically(pair, write_pair, companions=True)
        >>> sorted(p.name for p in target.parent.iterdir())
        ['b.txt', 'c.dat', 'c.hdr']
    """
    path = Path(path)
    remove_stale_temporaries(path)
    if companions:
        folder = reserve_temporary_folder(path)
        temporary = folder / path.name
    else:
        folder = None
        temporary = reserve_temporary(path, suffix)
    try:
        try:
            write(str(temporary))
            written = sorted(folder.iterdir()) if folder else [temporary]
            for name in written:
                _sync(name)
            if verify is not None:
                verify(str(temporary))
        except Exception as error:  # noqa: BLE001 - re-raised unless the device is full
            if _device_full(path, error):
                raise DeviceFull(no_space_message(path)) from None
            raise
        if folder is None:
            return publish(temporary, path)
        # Data first, header last: until the header is renamed, readers see the previous pair.
        for name in written:
            if name != temporary:
                publish(name, path.with_name(name.name))
        return publish(temporary, path)
    finally:
        if folder is None:
            discard(temporary)
        else:
            shutil.rmtree(folder, ignore_errors=True)


def write_file(
    path: str | os.PathLike, write: Callable[[str], object], suffix: str = ".partial"
) -> Path:
    """:func:`write_atomically` for CLADE's own outputs: a failure of the operating system
    (permissions, a vanished folder) becomes one :class:`CladeError` sentence naming the file.

    Example:
        >>> write_file("/proc/no-such/report.json", lambda name: None)
        Traceback (most recent call last):
        ...
        CLADE.errors.CladeError: Could not write /proc/no-such/report.json: No such file or directory.
    """
    try:
        return write_atomically(path, write, suffix)
    except OSError as error:
        raise CladeError(f"Could not write {path}: {error.strerror or error}.") from None


def no_space_message(path: str | os.PathLike) -> str:
    """The sentence for a write that failed on a full device.

    Example:
        >>> no_space_message("/data/out/sr.nii.gz")
        'There is no space left on the device holding /data/out: free some space or choose another folder (sr.nii.gz was not written; any earlier file of that name is unchanged).'
    """
    path = Path(path)
    folder = Path(os.path.abspath(path)).parent
    return (
        f"There is no space left on the device holding {folder}: free some space or choose "
        f"another folder ({path.name} was not written; any earlier file of that name is "
        "unchanged)."
    )


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Remove the temporaries of ``path`` left by processes that no longer run; return them.

    Example:
        >>> import tempfile
        >>> target = Path(tempfile.mkdtemp()) / "d.nii"
        >>> stale = target.with_name(".d.nii.999999999-0123abcd.partial.nii")
        >>> _ = stale.write_text("half")
        >>> [p.name for p in remove_stale_temporaries(target)]
        ['.d.nii.999999999-0123abcd.partial.nii']
    """
    path = Path(path)
    folder = path.resolve().parent
    base = re.escape(_temporary_base(path.name))
    pattern = re.compile(rf"\.{base}\.(\d+)-[0-9a-f]{{8}}\.partial")
    removed = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    for entry in entries:
        match = pattern.match(entry.name)
        if not match or _process_alive(int(match.group(1))):
            continue
        try:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                discard(entry)
        except OSError:  # not ours to remove (another user's folder): leave it
            continue
        removed.append(entry)
    return removed


def discard(temporary: str | os.PathLike) -> None:
    """Remove ``temporary`` if it is still there (after a failed write)."""
    try:
        os.remove(temporary)
    except FileNotFoundError:
        pass


#: Output names longer than this (bytes) get a shortened temporary name: the temporary adds ~35
#: bytes, and a legal 247-byte name would otherwise fail only at the end ("File name too long").
SHORTEN_NAMES_OVER = 160


def _temporary_base(name: str) -> str:
    """``name``, or for a long one its first 100 bytes plus a hash of the whole (the same
    every time, so stale temporaries of the same output are still recognised)."""
    raw = os.fsencode(name)
    if len(raw) <= SHORTEN_NAMES_OVER:
        return name
    digest = hashlib.sha256(raw).hexdigest()[:8]
    return f"{raw[:100].decode('utf-8', 'ignore')}~{digest}"


def _temporary_name(path: Path, suffix: str) -> str:
    return f".{_temporary_base(path.name)}.{os.getpid()}-{secrets.token_hex(4)}{suffix}"


def _process_alive(pid: int) -> bool:
    # Process ids are those of this machine: a folder shared with another host could hold a live
    # writer's temporary whose id is free here; such a writer would fail its rename, not corrupt.
    if pid == os.getpid():
        return True
    if os.name == "nt":
        return _windows_process_alive(pid)
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # gone, or an id no process can have
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _windows_process_alive(pid: int) -> bool:
    # os.kill(pid, 0) would send CTRL_C_EVENT on Windows; ask the kernel for a handle instead.
    import ctypes

    kernel32 = ctypes.windll.kernel32
    handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
    if handle:
        kernel32.CloseHandle(handle)
        return True
    return kernel32.GetLastError() != 87  # ERROR_INVALID_PARAMETER: no such process


def _sync(name: Path) -> None:
    # Data can sit in the page cache after write() returned; a full device (or a network file
    # system) may report the failure only here, and a rename before it would publish a hole.
    handle = os.open(name, os.O_RDWR)  # Windows' fsync needs a handle open for writing
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def _device_full(path: Path, error: BaseException) -> bool:
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    # Other writers (ITK, torch) lose the errno; the free space at the moment of the failure,
    # with the partial temporary still holding its blocks, tells a full device apart.
    try:
        free = shutil.disk_usage(path.resolve().parent).free
    except OSError:
        return False
    return free < FULL_DEVICE_BYTES
