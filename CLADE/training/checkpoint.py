"""Checkpoints and the output folder's run record, written so that a crash never loses a run.

Output folder of ``clade train --out DIR``:

* ``run.json``: the run's settings and inputs, written before training starts; its presence
  marks the folder as holding a run (a new run there is refused unless ``--resume``).
* ``checkpoint.pt``: the latest training state (see :func:`save_checkpoint`).
* ``model_final.pt``, ``model_best.pt``: generator ``G_X`` as CLADE model files.
* ``events.jsonl`` (unless ``--events`` points elsewhere) and ``training.png``.

A checkpoint is ``torch.save`` of plain dicts, numbers, strings and tensors only, read back with
``torch.load(weights_only=True)``. It is written to a temporary file in the same folder, flushed
to disk, and renamed over the previous one (``os.replace`` is atomic), so after a kill, a power
cut or a full disk either the old or the new checkpoint is there, complete.
"""

from __future__ import annotations

import json
import os
import pickle
import zipfile
from pathlib import Path

import torch

from ..atomic_files import write_atomically
from ..errors import CladeError

CHECKPOINT_NAME = "checkpoint.pt"
RUN_RECORD_NAME = "run.json"
CHECKPOINT_FORMAT = "clade-training-checkpoint"
RUN_FORMAT = "clade-training-run"
FORMAT_VERSION = 1


def atomic_write(path: str | os.PathLike, write) -> Path:
    """Call ``write(temporary_path)`` then rename the result to ``path``; clean up on failure.

    A failure to write (disk full, quota, I/O error) raises :class:`CladeError` and leaves any
    previous ``path`` untouched.

    Example:
        >>> import tempfile, os
        >>> target = os.path.join(tempfile.mkdtemp(), "a.txt")
        >>> atomic_write(target, lambda p: open(p, "w").write("hello")).read_text()
        'hello'
    """
    path = Path(path)

    def write_and_sync(name: str) -> None:
        write(name)
        with open(name, "rb") as written:
            os.fsync(written.fileno())

    try:
        write_atomically(path, write_and_sync)
    except (OSError, RuntimeError) as error:
        # torch's zip writer reports a full disk as RuntimeError("... file write failed").
        if isinstance(error, RuntimeError) and "write" not in str(error).lower():
            raise
        raise CladeError(
            f"Could not write {path.name} in {path.parent} ({_short(error)}), the previous "
            "file is kept: free disk space and rerun with --resume."
        ) from None
    return path


def _short(error: BaseException) -> str:
    if isinstance(error, OSError) and error.strerror:
        return error.strerror.lower()
    return str(error).splitlines()[0].rstrip(".")


def save_checkpoint(path: str | os.PathLike, state: dict) -> Path:
    """Write a training checkpoint atomically (see the module docstring).

    Example:
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "checkpoint.pt")
        >>> _ = save_checkpoint(path, {"epoch": 2, "w": torch.ones(2)})
        >>> load_checkpoint(path)["epoch"]
        2
    """
    record = {"format": CHECKPOINT_FORMAT, "format_version": FORMAT_VERSION, **state}
    return atomic_write(path, lambda temporary: torch.save(record, temporary))


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a checkpoint safely (``weights_only=True``); :class:`CladeError` if unusable."""
    path = Path(path)
    if not path.is_file():
        raise CladeError(
            f"There is no checkpoint to resume in {path.parent}: start without --resume."
        )
    try:
        record = torch.load(path, map_location="cpu", weights_only=True)
    except (
        pickle.UnpicklingError,
        RuntimeError,
        EOFError,
        zipfile.BadZipFile,
        ValueError,
        OSError,
    ):
        raise CladeError(
            f"The checkpoint {path} is damaged or not a CLADE training checkpoint: start a new "
            "run in another folder."
        ) from None
    if not isinstance(record, dict) or record.get("format") != CHECKPOINT_FORMAT:
        raise CladeError(
            f"{path} is not a CLADE training checkpoint: start a new run in another folder."
        )
    if record.get("format_version") != FORMAT_VERSION:
        raise CladeError(
            f"The checkpoint {path} was written by another CLADE version (format "
            f"{record.get('format_version')}): resume it with that version."
        )
    return record


def holds_run(out: str | os.PathLike) -> bool:
    """True if ``out`` already holds a training run (a run record or a checkpoint)."""
    out = Path(out)
    return (out / RUN_RECORD_NAME).exists() or (out / CHECKPOINT_NAME).exists()


def read_run_record(out: str | os.PathLike) -> dict | None:
    path = Path(out) / RUN_RECORD_NAME
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise CladeError(
            f"The run record {path} is damaged: start a new run in another folder."
        ) from None
    if not isinstance(record, dict) or record.get("format") != RUN_FORMAT:
        raise CladeError(f"{path} is not a CLADE run record: choose another output folder.")
    return record


def write_run_record(out: str | os.PathLike, record: dict) -> Path:
    text = json.dumps({"format": RUN_FORMAT, "format_version": FORMAT_VERSION, **record}, indent=2)
    return atomic_write(
        Path(out) / RUN_RECORD_NAME, lambda p: Path(p).write_text(text + "\n", encoding="utf-8")
    )


def check_output_folder(out: str | os.PathLike, resume: bool) -> Path:
    """Check ``out`` before any work: refuse to mix runs, or to resume nothing.

    Example:
        >>> import tempfile
        >>> check_output_folder(tempfile.mkdtemp(), resume=True)
        Traceback (most recent call last):
        ...
        CLADE.errors.CladeError: There is no checkpoint to resume in ... start without --resume.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise CladeError(f"The output {out} is a file: give a folder for the training run.")
    if resume:
        if not holds_run(out):
            raise CladeError(f"There is no checkpoint to resume in {out}: start without --resume.")
    elif holds_run(out):
        raise CladeError(
            f"The folder {out} already holds a training run: add --resume to continue it, or "
            "choose another output folder."
        )
    if out.exists() and not os.access(out, os.W_OK):
        raise CladeError(f"The output folder {out} cannot be written: choose another folder.")
    return out
