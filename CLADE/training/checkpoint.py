"""Checkpoints and the output folder, written so that a crash never loses a run.

Output folder of ``clade train --out DIR``:

* ``run.json``: the run record (:mod:`CLADE.training.run_record`), written before training
  starts; its presence marks the folder as holding a run (a new run there is refused unless
  ``--resume``).
* ``checkpoint.pt``: the latest training state (see :func:`save_checkpoint`).
* ``model_final.pt``, ``model_best.pt``: generator ``G_X`` as CLADE model files.
* ``events.jsonl`` (unless ``--events`` points elsewhere) and ``training.png``.

A checkpoint holds the run record's keys (those of ``run.json``) and the training state
(:mod:`CLADE.training.state`). It is ``torch.save`` of plain dicts, numbers, strings and tensors
only, read back with
``torch.load(weights_only=True)``. It is written to a temporary file in the same folder, flushed
to disk, and renamed over the previous one (``os.replace`` is atomic), so after a kill, a power
cut or a full disk either the old or the new checkpoint is there, complete.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..errors import CladeError
from ..model_file import read_clade_record
from .run_record import RUN_RECORD_NAME
from .write_errors import guarded_write

CHECKPOINT_NAME = "checkpoint.pt"
CHECKPOINT_FORMAT = "clade-training-checkpoint"
FORMAT_VERSION = 1


def atomic_write(path: str | os.PathLike, write, needed: int = 0, kept: str = "") -> Path:
    """Call ``write(temporary_path)`` then rename the result to ``path``; clean up on failure.

    A failure to write (disk full, quota, I/O error) raises :class:`CladeError` and leaves any
    previous ``path`` untouched (:func:`CLADE.training.write_errors.guarded_write`).

    Example:
        >>> import tempfile, os
        >>> target = os.path.join(tempfile.mkdtemp(), "a.txt")
        >>> atomic_write(target, lambda p: open(p, "w").write("hello")).read_text()
        'hello'
    """
    return guarded_write(path, write, needed, kept)


def save_checkpoint(path: str | os.PathLike, state: dict, kept: str = "") -> Path:
    """Write a training checkpoint atomically (see the module docstring).

    On a full disk the :class:`CladeError` says so and that the previous file is kept
    (``kept`` may say more, e.g. which epoch it holds).

    Example:
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "checkpoint.pt")
        >>> _ = save_checkpoint(path, {"epoch": 2, "w": torch.ones(2)})
        >>> load_checkpoint(path)["epoch"]
        2
    """
    record = {"format": CHECKPOINT_FORMAT, "format_version": FORMAT_VERSION, **state}
    return atomic_write(
        path, lambda temporary: torch.save(record, temporary), _tensor_bytes(record), kept
    )


def _tensor_bytes(value) -> int:
    """Bytes of the tensors in ``value`` (nested dicts and lists): about a checkpoint's size."""
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, dict):
        return sum(_tensor_bytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(_tensor_bytes(v) for v in value)
    return 0


def rng_state() -> dict:
    """torch's random state (CPU, and every GPU's), for a checkpoint."""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` saved (the GPUs this machine has)."""
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"][: torch.cuda.device_count()])


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a checkpoint safely (``weights_only=True``); :class:`CladeError` if unusable."""
    path = Path(path)
    damaged = (
        f"The checkpoint {path} is damaged or not a CLADE training checkpoint: start a new run in "
        "another folder."
    )
    return read_clade_record(
        path,
        CHECKPOINT_FORMAT,
        FORMAT_VERSION,
        missing=f"There is no checkpoint to resume in {path.parent}: start without --resume.",
        pickled=damaged,
        damaged=damaged,
        foreign=f"{path} is not a CLADE training checkpoint: start a new run in another folder.",
        other_version=f"The checkpoint {path} was written by another CLADE version (format "
        "{version}): resume it with that version.",
    )


def holds_run(out: str | os.PathLike) -> bool:
    """True if ``out`` already holds a training run (a run record or a checkpoint)."""
    out = Path(out)
    return (out / RUN_RECORD_NAME).exists() or (out / CHECKPOINT_NAME).exists()


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
