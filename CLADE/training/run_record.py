"""The run record: what a training run is (settings, inputs, patches, validation volumes).

One :class:`RunRecord` describes a run. It is written to ``OUT/run.json`` when a run starts (and
again when a resume changes a resumable setting), and the same keys are stored at the top level
of every checkpoint, so both files answer "what was this run" in one schema. The training state
(epoch, weights, optimiser moments) is the checkpoint's own (:mod:`CLADE.training.checkpoint`).
:mod:`CLADE.training.resume` reads the record back, once, when a run is resumed.

Checkpoints written before this record existed kept ``config`` and a ``data`` dict
(``inputs``, ``fingerprint``, ``n_x``, ``n_y``); :meth:`RunRecord.from_checkpoint` reads both.
This module imports no torch.

Example:
    >>> import tempfile
    >>> from CLADE.training.presets import TrainingConfig
    >>> record = RunRecord(TrainingConfig(epochs=2), inputs=["/data/a.nrrd"], fingerprint="ab")
    >>> out = tempfile.mkdtemp()
    >>> _ = record.write(out)
    >>> RunRecord.read(out) == record
    True
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import CladeError
from .presets import TrainingConfig
from .write_errors import guarded_write

RUN_RECORD_NAME = "run.json"
RUN_FORMAT = "clade-training-run"
RUN_FORMAT_VERSION = 1


@dataclass(frozen=True)
class RunRecord:
    """The facts of one run; ``volumes`` onwards are known once the patch bank is built."""

    config: TrainingConfig
    #: The DATA given (resolved paths): files or folders.
    inputs: list[str] = field(default_factory=list)
    #: The volume files the patches came from, and those skipped (``[path, reason]``).
    volumes: list[str] = field(default_factory=list)
    skipped: list = field(default_factory=list)
    #: A hash of the patch bank: a resume must rebuild the very same bank.
    fingerprint: str | None = None
    #: ``{"x": n, "y": n}``: patches per domain.
    patches: dict | None = None
    #: Validation volume names, and the files and references (resolved paths).
    validation: list[str] = field(default_factory=list)
    validation_files: list[str] = field(default_factory=list)
    validation_references: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        record = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        record["config"] = self.config.to_dict()
        record["skipped"] = [list(item) for item in self.skipped]
        return record

    @classmethod
    def from_dict(cls, record: dict) -> RunRecord:
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in record.items() if k in names}
        values["config"] = TrainingConfig.from_dict(record["config"])
        return cls(**values)

    @classmethod
    def from_checkpoint(cls, state: dict) -> RunRecord:
        """The record stored in a checkpoint, also one written before records existed."""
        if "data" in state and "inputs" not in state:
            data = state["data"]
            return cls(
                TrainingConfig.from_dict(state["config"]),
                inputs=list(data["inputs"]),
                fingerprint=data["fingerprint"],
                patches={"x": int(data["n_x"]), "y": int(data["n_y"])},
            )
        return cls.from_dict(state)

    def replace(self, **changes) -> RunRecord:
        return dataclasses.replace(self, **changes)

    def write(self, out: str | os.PathLike) -> Path:
        """Write ``OUT/run.json`` atomically."""
        text = json.dumps(
            {"format": RUN_FORMAT, "format_version": RUN_FORMAT_VERSION, **self.to_dict()},
            indent=2,
        )
        return guarded_write(
            Path(out) / RUN_RECORD_NAME,
            lambda p: Path(p).write_text(text + "\n", encoding="utf-8"),
        )

    @classmethod
    def read(cls, out: str | os.PathLike) -> RunRecord | None:
        """The record in ``OUT/run.json``, ``None`` if there is none; CladeError if damaged."""
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
        return cls.from_dict(record)
