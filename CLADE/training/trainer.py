"""The CLADE training run: G_X, G_Y, D_X, D_Y on unpaired patches, from one CPU to many GPUs.

:func:`train` settles the run once (:mod:`~CLADE.training.resume`), builds the patch bank
(:mod:`~CLADE.training.sampling`) and the networks, and runs the epochs: each step is a
:class:`~CLADE.training.step.TrainStep`, its losses go to a
:class:`~CLADE.training.step_log.StepLog`, and after each epoch the
:class:`~CLADE.training.export.Exporter` validates and writes the best model; checkpoints hold the
:class:`~CLADE.training.run_record.RunRecord` and the
:class:`~CLADE.training.state.TrainingState`.

Device: ``auto`` takes CUDA when present (:func:`CLADE.device.resolve_device`); cuDNN
autotuning is on there. Under torchrun every process trains on its shard with
DistributedDataParallel (:mod:`CLADE.training.distributed`).

Resume guarantee: a run killed at any moment (even SIGKILL) and resumed with ``--resume``
continues from its last checkpoint (end of each epoch, and every ``checkpoint_minutes``) with the
same networks, optimiser moments, epoch, position in the epoch and RNG state. On CPU with the
same number of processes and threads, it ends with bitwise the same weights as an uninterrupted
run (tested). On CUDA, cuDNN's autotuned kernels are not bitwise reproducible, so the resumed run
is an equally valid continuation but not bit-identical.

Python API (what ``clade train`` calls)::

    from CLADE.training import TrainingConfig, train
    config = TrainingConfig.from_preset("mri", epochs=5)
    result = train(["scans/"], "runs/mri1", config, val=["held_out.nrrd"],
                   progress=print)            # called with every event dict
    result.final_model, result.best_model    # CLADE model files of G_X
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..device import resolve_device
from ..errors import Cancelled, CladeError
from ..volume_files import expand_inputs
from . import distributed
from .checkpoint import CHECKPOINT_NAME, rng_state, save_checkpoint, set_rng_state
from .events import EventWriter
from .export import BEST_MODEL, FINAL_MODEL, Exporter
from .initial_weights import initial_generator_weights
from .loss_terms import LOSS_NAMES
from .plot import plot_history
from .presets import TrainingConfig
from .resume import RunPlan, plan_run
from .run_record import RunRecord
from .sampling import EpochSampler, PatchBank, build_patch_bank
from .state import TrainingState
from .step import TrainStep, build_networks
from .step_log import StepLog
from .validation import ValidationSet, choose_metric

PLOT_NAME = "training.png"
EVENTS_NAME = "events.jsonl"


@dataclass
class TrainingResult:
    """What a finished run produced."""

    out: Path
    final_model: Path | None
    best_model: Path | None
    best_epoch: int | None
    history: list[dict] = field(default_factory=list)


def train(
    data: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    config: TrainingConfig | None = None,
    *,
    overrides: Mapping | None = None,
    preset: str | None = None,
    val: Sequence[str | os.PathLike] = (),
    val_reference: Sequence[str | os.PathLike] = (),
    resume: bool = False,
    events: str | os.PathLike | None = None,
    progress: Callable[[dict], None] | None = None,
    cancel: Callable[[], bool] | None = None,
    progress_bar: bool = True,
) -> TrainingResult:
    """Train CLADE on ``data`` (volume files or folders) into the folder ``out``.

    Settings: ``config``, or ``preset`` (default ``mri``) with ``overrides`` (flat setting names,
    as :meth:`TrainingConfig.from_preset`). With ``resume=True`` they default to the run's own
    and may differ only in the resumable groups (loss weights, schedule, bookkeeping: see
    :data:`CLADE.training.presets.RESUMABLE_CHANGES`); ``data`` may then be empty (the run's
    inputs are used). ``events`` is the JSON-lines file (default ``out/events.jsonl``),
    ``progress`` receives every event dict, ``cancel`` is polled each step: when it returns True
    a checkpoint is written and :class:`CLADE.errors.Cancelled` is raised. User errors raise
    :class:`CLADE.errors.CladeError` with one sentence. Under torchrun this runs on every rank.
    """
    plan = plan_run(
        out,
        data,
        config,
        overrides=overrides,
        preset=preset,
        resume=resume,
        val=val,
        val_reference=val_reference,
    )
    context, device_name = distributed.setup(plan.config.bookkeeping.device)
    try:
        # Every rank has checked the folder before rank 0 creates anything in it.
        context.barrier()
        session = _Session(plan, context, device_name, events, progress, cancel, progress_bar)
        return session.run()
    finally:
        distributed.teardown(context)


class _Session:
    """One process's part of a training run: the bank, the networks, the epochs, the files."""

    def __init__(self, plan: RunPlan, context, device_name, events, progress, cancel, bar):
        self.plan, self.config, self.out = plan, plan.config, plan.out
        self.context, self.main = context, context.is_main
        self.cancel, self.progress_bar = cancel, bar
        if self.main:
            self.out.mkdir(parents=True, exist_ok=True)
        events_path = Path(events) if events is not None else self.out / EVENTS_NAME
        self.log = EventWriter(events_path if self.main else None, progress if self.main else None)
        name = device_name if context.enabled else self.config.bookkeeping.device
        self.device = resolve_device(name).device
        c = self.config
        self.validation = (
            ValidationSet.load(
                plan.validation_files,
                plan.validation_references,
                c.sampling.plane,
                c.export.val_stride or c.export.default_stride,
            )
            if plan.validation_files
            else None
        )
        self.metric = choose_metric(c.export.best_metric, self.validation)
        self.pairs_per_step = c.optimiser.batch_size * context.world_size
        self.last_checkpoint = time.monotonic()
        #: (epoch, step) of the checkpoint on disk, for the message if the next one fails.
        self.saved_at = None

    def run(self) -> TrainingResult:
        try:
            return self._run()
        except Cancelled as error:
            self._emit_error(error, stopped=True)
            raise
        except CladeError as error:
            self._emit_error(error, stopped=False)
            raise
        finally:
            self.log.close()

    def _emit_error(self, error: CladeError, stopped: bool) -> None:
        try:
            self.log.emit("error", message=str(error), stopped=stopped)
        except CladeError:
            pass  # the events file cannot be written either (full disk): the error says why

    # -- set-up ---------------------------------------------------------------------------------

    def _run(self) -> TrainingResult:
        c, context = self.config, self.context
        # A fine-tuning start is checked before the (slow) patch sampling; a resumed run's
        # checkpoint holds its networks already.
        initial = initial_generator_weights(c) if self.plan.checkpoint is None else None
        self.bank = self._build_bank()
        self.sampler = EpochSampler(
            len(self.bank.x),
            len(self.bank.y),
            c.optimiser.batch_size,
            context.world_size,
            context.rank,
            c.optimiser.seed,
        )
        if self.sampler.steps_per_epoch == 0:
            ranks = f" x {context.world_size} processes" if context.enabled else ""
            raise CladeError(
                f"The training volumes gave only {len(self.bank.x)} LR-plane and "
                f"{len(self.bank.y)} HR-plane patches, fewer than one batch of "
                f"{c.optimiser.batch_size}{ranks}: lower --batch-size or add volumes."
            )
        torch.manual_seed(c.optimiser.seed)
        self.networks = build_networks(c)
        if initial is not None:
            self.networks["g_x"].load_state_dict(initial)
        self.step_fn = TrainStep(self.networks, c, self.device, context)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        self.state = self._restore_state()
        self.exporter = Exporter(
            self.out,
            c,
            self.bank,
            self.validation,
            self.metric,
            context.world_size,
            str(self.device),
        )
        self.record = RunRecord(
            c,
            inputs=self.plan.inputs,
            volumes=self.bank.volumes,
            skipped=[list(s) for s in self.bank.skipped],
            fingerprint=self.bank.fingerprint(),
            patches={"x": len(self.bank.x), "y": len(self.bank.y)},
            validation=self.validation.names if self.validation else [],
            validation_files=[str(Path(v).resolve()) for v in self.plan.validation_files],
            validation_references=[str(Path(v).resolve()) for v in self.plan.validation_references],
        )
        if self.main and (self.plan.checkpoint is None or self.record != self.plan.stored):
            self.record.write(self.out)
        s = self.state
        self.log.emit(
            "start",
            out=self.out,
            config=c.to_dict(),
            volumes=self.bank.volumes,
            skipped=self.bank.skipped,
            patches=self.record.patches,
            bank_mib=round(self.bank.nbytes / 2**20, 1),
            steps_per_epoch=self.sampler.steps_per_epoch,
            epochs=c.schedule.epochs,
            batch_size=c.optimiser.batch_size,
            world_size=context.world_size,
            device=str(self.device),
            resumed=({"epoch": s.epoch, "step": s.step} if self.plan.checkpoint else None),
        )
        self.last_checkpoint = time.monotonic()
        while True:
            if len(s.history) < s.epoch:
                self._finish_epoch()
            if s.epoch >= c.schedule.epochs:
                break
            self._train_epoch()
        return self._finish_run()

    def _build_bank(self) -> PatchBank:
        def on_volume(report: dict) -> None:
            self.log.emit("sampling", **report)

        # The sampling group's fields are build_patch_bank's keywords, passed whole.
        bank = build_patch_bank(
            self.plan.inputs,
            seed=self.config.optimiser.seed,
            on_volume=on_volume,
            paired=self.config.loss.paired_term,
            **dataclasses.asdict(self.config.sampling),
        )
        self.plan.check_bank(bank.fingerprint())
        return bank

    def _restore_state(self) -> TrainingState:
        checkpoint = self.plan.checkpoint
        if checkpoint is None:
            return TrainingState.fresh(self.device)
        self.step_fn.load_state_dict(checkpoint["networks"])
        set_rng_state(checkpoint["rng"])
        state = TrainingState.from_checkpoint(checkpoint, self.pairs_per_step, self.device)
        self.saved_at = (state.epoch, state.step)
        return state

    # -- epochs ---------------------------------------------------------------------------------

    def _train_epoch(self) -> None:
        c, s, sampler = self.config, self.state, self.sampler
        steps = sampler.steps_per_epoch
        step_log = StepLog(
            self.log,
            epoch=s.epoch,
            step=s.step,
            epochs=c.schedule.epochs,
            steps_per_epoch=steps,
            log_every=c.bookkeeping.log_every,
            pairs_per_step=self.pairs_per_step,
            bar=self.main and self.progress_bar,
            sums_like=s.sums,
        )
        epoch_start = time.monotonic()
        seen = {"x": [], "y": []} if self.context.enabled else None
        if c.schedule.starts_cyclegan(s.epoch) and s.step == 0:
            self.step_fn.reset_generator_optimizer()
        warmup = c.schedule.is_warmup(s.epoch)
        try:
            while s.step < steps:
                if self._cancelled():
                    self._save_checkpoint("stopped")
                    raise Cancelled(
                        f"Training stopped at epoch {s.epoch + 1}, step {s.step}: the "
                        f"checkpoint in {self.out} keeps it, rerun with --resume to continue."
                    )
                progress = (s.epoch * steps + s.step) / (c.schedule.epochs * steps)
                self.step_fn.set_learning_rate(c.optimiser.lr_at(progress))
                values = self._step(warmup, seen)
                s.sums += values
                s.sum_steps += 1
                s.step += 1
                s.global_step += 1
                step_log.add(values, s.step, s.global_step)
                due = _minutes_since(self.last_checkpoint) >= c.bookkeeping.checkpoint_minutes
                if s.step < steps and due:
                    self._save_checkpoint("time")
        finally:
            step_log.close()
            s.train_seconds += time.monotonic() - epoch_start
            s.epoch_seconds += time.monotonic() - epoch_start
        s.epoch_shards = distributed.shard_report(self.context, seen)
        s.epoch += 1
        s.step = 0
        if self.validation is not None:
            # Validation can take long: do not redo the epoch if it is interrupted.
            self._save_checkpoint("epoch")

    def _step(self, warmup: bool, seen: dict | None) -> torch.Tensor:
        """One training step at the state's position; returns its losses."""
        bank = self.bank
        x_idx, y_idx = self.sampler.batch(self.state.epoch, self.state.step)
        if seen is not None:
            seen["x"].append(x_idx)
            seen["y"].append(y_idx)
        degraded = None if bank.y_degraded is None else self._batch(bank.y_degraded, y_idx)
        if warmup:
            return self.step_fn.warmup(self._batch(bank.y, y_idx), degraded)
        ratios = (
            torch.from_numpy(bank.x_ratios(x_idx)).to(self.device)
            if self.config.loss.dc_term
            else None
        )
        return self.step_fn(
            self._batch(bank.x, x_idx), self._batch(bank.y, y_idx), degraded, ratios
        )

    def _batch(self, patches: np.ndarray, indices: np.ndarray) -> torch.Tensor:
        batch = torch.from_numpy(patches[indices])
        return batch.to(self.device, non_blocking=True).float().unsqueeze(1)

    def _cancelled(self) -> bool:
        flag = bool(self.cancel and self.cancel())
        return distributed.all_agree(self.context, flag) if self.context.enabled else flag

    def _finish_epoch(self) -> None:
        """Validation, best model, history, checkpoint, then plot and the epoch event."""
        s = self.state
        number = s.epoch
        metrics = None
        if self.validation is not None:
            if self.main:
                metrics = self.exporter.validate(self.networks["g_x"], number, s.best, self.log)
            self.context.barrier()
        losses_mean = s.epoch_means()
        entry = {"epoch": number, "losses": losses_mean, "metrics": metrics}
        entry["seconds"] = s.epoch_seconds
        if s.epoch_shards is not None:
            entry["shards"] = s.epoch_shards
        s.history.append(entry)
        s.next_epoch_sums()
        self._save_checkpoint("validated" if self.validation is not None else "epoch")
        # The plot is optional (no matplotlib in Slicer) and comes after the checkpoint, so it can
        # never cost the epoch.
        plot = plot_history(s.history, self.out / PLOT_NAME) if self.main else None
        self.log.emit(
            "epoch",
            epoch=number,
            losses=losses_mean,
            metrics=metrics,
            best_epoch=s.best["epoch"],
            best_metric=self.metric,
            best_value=s.best["value"],
            seconds=entry["seconds"],
            plot=plot,
            shards=s.epoch_shards,
        )

    def _finish_run(self) -> TrainingResult:
        s = self.state
        final = best = None
        if self.main:
            metrics = (s.history[-1] or {}).get("metrics") if s.history else None
            final = self.exporter.save_final(self.networks["g_x"], s.epoch, metrics)
            best = self.out / BEST_MODEL if s.best["epoch"] is not None else None
            self.log.emit(
                "done",
                final_model=final,
                best_model=best,
                best_epoch=s.best["epoch"],
                epochs=s.epoch,
                seconds=s.train_seconds,
            )
        self.context.barrier()
        return TrainingResult(self.out, final, best, s.best["epoch"], s.history)

    # -- checkpoints ----------------------------------------------------------------------------

    def _save_checkpoint(self, reason: str) -> None:
        self.last_checkpoint = time.monotonic()
        if not self.main:
            return
        s = self.state
        record = {
            **self.record.to_dict(),
            "world_size": self.context.world_size,
            "networks": self.step_fn.state_dict(),
            "rng": rng_state(),
            **s.to_checkpoint(self.pairs_per_step),
        }
        if self.saved_at is None:
            kept = "the run has no checkpoint yet (--resume starts it over)"
        else:
            kept = (
                "the previous file is kept, so the checkpoint at epoch {} step {} is intact"
            ).format(*self.saved_at)
        path = save_checkpoint(self.out / CHECKPOINT_NAME, record, kept)
        self.saved_at = (s.epoch, s.step)
        self.log.emit("checkpoint", path=path, epoch=s.epoch, step=s.step, reason=reason)


def _minutes_since(since: float) -> float:
    """Minutes elapsed since the monotonic time ``since``."""
    return (time.monotonic() - since) / 60.0


__all__ = [
    "TrainingResult",
    "train",
    "build_networks",
    "TrainStep",
    "expand_inputs",
    "LOSS_NAMES",
    "FINAL_MODEL",
    "BEST_MODEL",
]
