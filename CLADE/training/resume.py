"""Starting or resuming a run: the one place that reconciles what is asked with what is stored.

:func:`plan_run` reads the output folder once (the checkpoint if there is one, else the run
record ``run.json``; a run killed before its first checkpoint has only its record, and resuming
it starts over with the recorded settings and inputs) and settles:

* the settings: a new run takes ``config``, or the preset with ``overrides``; a resumed run
  takes the stored settings with ``overrides`` (the flat names of ``clade train``'s options), or
  the ``config`` given, and refuses any change outside the resumable groups
  (:data:`CLADE.training.presets.RESUMABLE_CHANGES`);
* the inputs: a resumed run reuses its own unless the same ones are given;
* the validation volumes: a resumed run keeps validating on its own unless others are given.

After the patch bank is built, :meth:`RunPlan.check_bank` makes sure a resume rebuilt the very
same patches.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import CladeError
from .checkpoint import CHECKPOINT_NAME, check_output_folder, load_checkpoint
from .presets import TrainingConfig
from .run_record import RunRecord


@dataclass(frozen=True)
class RunPlan:
    """What a process is about to train: settled settings, inputs and the state to continue."""

    out: Path
    config: TrainingConfig
    inputs: list[str]
    #: Validation volumes and references as given (a resumed run: its own, resolved).
    validation_files: list[str]
    validation_references: list[str]
    #: The record the folder holds (``None`` for a new run).
    stored: RunRecord | None = None
    #: The checkpoint to continue from (``None``: start at epoch 0).
    checkpoint: dict | None = None

    def check_bank(self, fingerprint: str) -> None:
        """Refuse a resume whose volumes no longer give the patches the run was trained on."""
        if self.stored is not None and fingerprint != self.stored.fingerprint:
            raise CladeError(
                f"The training volumes changed since the checkpoint in {self.out} was "
                "written: resume with the same volumes, or start a new run in another folder."
            )


def plan_run(
    out: str | os.PathLike,
    data: Sequence[str | os.PathLike] = (),
    config: TrainingConfig | None = None,
    *,
    overrides: Mapping | None = None,
    preset: str | None = None,
    resume: bool = False,
    val: Sequence[str | os.PathLike] = (),
    val_reference: Sequence[str | os.PathLike] = (),
) -> RunPlan:
    """Check the folder and settle the run (see the module docstring)."""
    out = check_output_folder(out, resume)
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    checkpoint = stored = None
    if resume:
        json_record = RunRecord.read(out)
        if (out / CHECKPOINT_NAME).is_file():
            checkpoint = load_checkpoint(out / CHECKPOINT_NAME)
            stored = RunRecord.from_checkpoint(checkpoint)
            if json_record is not None and not stored.validation_files:
                # Checkpoints older than the record kept validation files only in run.json.
                stored = stored.replace(
                    volumes=json_record.volumes,
                    skipped=json_record.skipped,
                    validation=json_record.validation,
                    validation_files=json_record.validation_files,
                    validation_references=json_record.validation_references,
                )
        else:
            stored = json_record
    config = _settle_config(out, stored, config, overrides, preset)
    inputs = _settle_inputs(out, stored, data)
    if stored is not None and not val:
        val, val_reference = stored.validation_files, stored.validation_references
    return RunPlan(
        out,
        config,
        inputs,
        [str(v) for v in val],
        [str(v) for v in val_reference],
        stored,
        checkpoint,
    )


def _settle_config(out, stored, config, overrides, preset) -> TrainingConfig:
    if stored is None:
        if config is not None:
            return config.with_settings(**overrides) if overrides else config
        return TrainingConfig.from_preset(preset or "mri", **overrides)
    if config is None:
        if preset is not None and preset != stored.config.preset:
            config = TrainingConfig.from_preset(preset, **overrides)
        else:
            config = stored.config.with_settings(**overrides) if overrides else stored.config
    different = config.differences(stored.config)
    if different:
        raise CladeError(
            f"The checkpoint in {out} was made with other settings ({', '.join(different)}): "
            "resume with the run's settings, or start a new run in another folder."
        )
    return config


def _settle_inputs(out, stored, data) -> list[str]:
    given = [str(Path(p).resolve()) for p in data]
    if stored is None:
        if not given:
            raise CladeError("No training data was given: name volume files or folders.")
        return given
    if given and given != list(stored.inputs):
        raise CladeError(
            f"The checkpoint in {out} was trained on other inputs: resume with the same DATA "
            "(or none, to reuse the run's), or start a new run in another folder."
        )
    return list(stored.inputs)
