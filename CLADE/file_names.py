"""The files a volume reads or writes, and the checks on them made before any work.

A volume is not always one file: a detached NRRD header (``.nhdr``) or MetaImage header
(``.mhd``) names its data file(s), which may have any name (an edited ``scan_fixed.nhdr`` still
reading ``scan.raw.gz``), and a DICOM series is a folder of files. So "the output is the input"
is decided on every file an output would write against every file an input reads
(:func:`check_outputs_spare_inputs`), or an output could overwrite the input's pixel data.

SimpleITK takes file names as UTF-8 text; a name that is not valid UTF-8 (a Latin-1 ``café``
made on another system) reaches it as Python's surrogate escapes and aborts the whole process
from C++ (``std::logic_error``) with no message, so such names are refused in one sentence
first (:func:`check_utf8_name`). Messages show them with ``\\xNN`` escapes (:func:`display`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from .errors import CladeError

#: The longest file name most file systems accept (bytes), when the system does not say.
DEFAULT_NAME_MAX = 255


def display(path: str | os.PathLike) -> str:
    """``path`` as printable text: bytes that are not UTF-8 shown as ``\\xNN``.

    Example:
        >>> display(os.fsdecode(b"caf\\xe9.nii.gz"))
        'caf\\\\xe9.nii.gz'
    """
    return os.fsencode(os.fspath(path)).decode("utf-8", "backslashreplace")


def check_utf8_name(path: str | os.PathLike, role: str = "file") -> None:
    """Refuse a file name that is not valid UTF-8 (SimpleITK would abort the process on it).

    Example:
        >>> check_utf8_name(os.fsdecode(b"/data/caf\\xe9.nii.gz"), "input")
        Traceback (most recent call last):
        ...
        CLADE.errors.CladeError: The input name /data/caf\\xe9.nii.gz is not valid UTF-8 text (it was made with another character encoding), which the image library cannot open: rename it using plain letters, e.g. with convmv or by hand.
    """
    try:
        os.fspath(path).encode("utf-8")
    except UnicodeEncodeError:
        raise CladeError(
            f"The {role} name {display(path)} is not valid UTF-8 text (it was made with another "
            "character encoding), which the image library cannot open: rename it using plain "
            "letters, e.g. with convmv or by hand."
        ) from None


def files_read_by(source: str | os.PathLike) -> list[Path]:
    """Every file reading ``source`` opens: the file, the data files its header names, or the
    files of a DICOM folder.

    Example:
        >>> files_read_by("/data/scan.nii.gz")
        [PosixPath('/data/scan.nii.gz')]
    """
    from .volume_headers import data_file_names

    source = Path(source)
    if source.is_dir():
        try:
            return sorted(p for p in source.iterdir() if p.is_file())
        except OSError:
            return []
    return [source, *(source.parent / name for name in data_file_names(source))]


def files_written_by(output: str | os.PathLike) -> list[Path]:
    """Every file writing ``output`` may create: the file, and for ``.nhdr``/``.mhd`` the data
    file SimpleITK names after it (compressed or not).

    Example:
        >>> [p.name for p in files_written_by("out/sr.nhdr")]
        ['sr.nhdr', 'sr.raw', 'sr.raw.gz']
    """
    output = Path(output)
    name = output.name
    stem, ending = name[: -len(output.suffix)], output.suffix.lower()
    data = {".nhdr": (".raw", ".raw.gz"), ".mhd": (".raw", ".zraw")}.get(ending, ())
    return [output, *(output.with_name(stem + end) for end in data)]


def check_outputs_spare_inputs(
    outputs: Iterable[str | os.PathLike], inputs: Iterable[str | os.PathLike]
) -> None:
    """Refuse when a file any of ``outputs`` would write is a file any of ``inputs`` reads.

    Example:
        >>> check_outputs_spare_inputs(["a/out.nrrd"], ["a/in.nrrd"])  # different files: fine
        >>> check_outputs_spare_inputs(["a/in.nrrd"], ["a/in.nrrd"])
        Traceback (most recent call last):
        ...
        CLADE.errors.CladeError: The output a/in.nrrd is the input: choose another output path so the input is kept.
    """
    read: dict = {}
    for source in inputs:
        for used in files_read_by(source):
            for key in _identities(used):
                read.setdefault(key, (source, used))
    for output in outputs:
        for written in files_written_by(output):
            hit = next((read[k] for k in _identities(written) if k in read), None)
            if hit is not None:
                source, used = hit
                if written == Path(output) and used == Path(source):
                    raise CladeError(
                        f"The output {display(output)} is the input: choose another output path "
                        "so the input is kept."
                    )
                raise CladeError(
                    f"The output {display(output)} would overwrite {display(used)}, which the "
                    f"input {display(source)} reads: choose another output name so the input "
                    "is kept."
                )


def check_name_lengths(output: str | os.PathLike) -> None:
    """Refuse an output whose file names (data file included) the folder cannot hold.

    Example:
        >>> check_name_lengths("/tmp/" + "x" * 300 + ".nrrd")
        Traceback (most recent call last):
        ...
        CLADE.errors.CladeError: The output name xxxxxxxxxxxxxxxxxxxxxxxxxxxxxx....nrrd is 305 bytes long, more than the 255 a file name may have in /tmp: choose a shorter name.
    """
    output = Path(output)
    folder = Path(os.path.abspath(output)).parent
    try:
        limit = os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        limit = DEFAULT_NAME_MAX
    for written in files_written_by(output):
        length = len(os.fsencode(written.name))
        if length > limit:
            shown = display(written.name)
            shown = shown if len(shown) <= 60 else f"{shown[:30]}...{shown[-5:]}"
            raise CladeError(
                f"The output name {shown} is {length} bytes long, more than the {limit} a file "
                f"name may have in {display(folder)}: choose a shorter name."
            )


def _identities(path: Path) -> list:
    """Keys under which two names are the same file: the resolved path, and for an existing
    file its device and inode (a hard link, another case on a case-insensitive disk)."""
    keys: list = [os.path.abspath(path)]
    try:
        keys.append(str(Path(path).resolve()))
        status = os.stat(path)
        keys.append((status.st_dev, status.st_ino))
    except (OSError, RuntimeError):
        pass
    return keys
