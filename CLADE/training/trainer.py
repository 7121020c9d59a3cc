"""The CLADE training loop: G_X, G_Y, D_X, D_Y on unpaired patches, from one CPU to many GPUs.

One step (batch of ``B`` LR-plane patches ``x`` and HR-plane patches ``y``), as CycleGAN:

1. generators: ``fake_y = G_X(x)``, ``rec_x = G_Y(fake_y)``, ``fake_x = G_Y(y)``,
   ``rec_y = G_X(fake_x)`` and, when ``lambda_ident > 0``, ``idt_y = G_X(y)``, ``idt_x = G_Y(x)``;
   loss ``adv(D_Y(fake_y), real) + adv(D_X(fake_x), real) + l_cyc * L_cyc + l_ident * L_ident
   + l_gmap * L_gmap`` (method section 5), one Adam step on both generators;
2. discriminators: ``0.5 * (adv(D(real), real) + adv(D(fake.detach()), fake))`` for each, one
   Adam step on both.

Choices where the paper is silent: no image history buffer (the paper does not mention one);
discriminator and generator weights start from N(0, 0.02) (CycleGAN and the TensorFlow
implementation); the losses logged are those of rank 0's shard.

Device: ``auto`` takes CUDA when present. On CUDA the forward passes run under float16 autocast
with one ``GradScaler`` shared by the two optimisers (stepped once per iteration after both),
and cuDNN autotuning is on. Under torchrun every process trains on its shard with
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

import copy
import itertools
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..degradation import blur_rows
from ..errors import Cancelled, CladeError
from ..model_file import make_metadata, save_model
from ..networks import ModConv, PatchDiscriminator, ResnetGenerator
from ..normalisation import NormalisationRecipe
from ..volume_files import expand_inputs
from . import distributed, losses
from .checkpoint import (
    CHECKPOINT_NAME,
    check_output_folder,
    load_checkpoint,
    read_run_record,
    save_checkpoint,
    write_run_record,
)
from .events import EventWriter
from .plot import plot_history
from .presets import TrainingConfig
from .sampling import EpochSampler, PatchBank, build_patch_bank
from .validation import ValidationSet, choose_metric, is_better, validate

LOSS_NAMES = ("g_total", "adv", "cyc", "ident", "gmap", "d_x", "d_y", "paired", "dc")
FINAL_MODEL = "model_final.pt"
BEST_MODEL = "model_best.pt"
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


class CycleGenerators(nn.Module):
    """Both generators and the whole generator-side forward pass in one module.

    DDP requires one forward per backward for each wrapped module, while each generator is used
    two or three times per step; wrapping the pair with the complete pass satisfies that.
    Generator inputs are concatenated where independent (no layer mixes samples of a batch),
    so each generator runs two calls per step instead of three.

    Example:
        >>> g = CycleGenerators(ResnetGenerator(base_filters=4, n_blocks=1),
        ...                    ResnetGenerator(base_filters=4, n_blocks=1))
        >>> out = g(torch.zeros(2, 1, 32, 32), torch.zeros(2, 1, 32, 32), identity=True)
        >>> sorted(out), out["rec_x"].shape
        (['fake_x', 'fake_y', 'idt_x', 'idt_y', 'rec_x', 'rec_y'], torch.Size([2, 1, 32, 32]))
    """

    def __init__(self, g_x: nn.Module, g_y: nn.Module) -> None:
        super().__init__()
        self.g_x, self.g_y = g_x, g_y

    def forward(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        identity: bool = True,
        y_degraded: torch.Tensor | None = None,
    ) -> dict:
        # Everything G_X sees that does not depend on another generator's output goes through
        # one call: x, then y (identity), then the degraded y (paired term).
        first_x = [x] + ([y] if identity else []) + ([y_degraded] if y_degraded is not None else [])
        outputs_x = self.g_x(torch.cat(first_x)).split([t.shape[0] for t in first_x])
        fake_y = outputs_x[0]
        if identity:
            fake_x, idt_x = self.g_y(torch.cat([y, x])).split([y.shape[0], x.shape[0]])
        else:
            fake_x, idt_x = self.g_y(y), None
        out = {
            "fake_y": fake_y,
            "fake_x": fake_x,
            "rec_x": self.g_y(fake_y),
            "rec_y": self.g_x(fake_x),
        }
        if identity:
            out.update(idt_y=outputs_x[1], idt_x=idt_x)
        if y_degraded is not None:
            out["paired_y"] = outputs_x[-1]
        return out


class Discriminators(nn.Module):
    """D_X and D_Y scoring concatenated (real, fake) batches in one forward (see above)."""

    def __init__(self, d_x: nn.Module, d_y: nn.Module) -> None:
        super().__init__()
        self.d_x, self.d_y = d_x, d_y

    def forward(self, x_batch: torch.Tensor, y_batch: torch.Tensor):
        return self.d_x(x_batch), self.d_y(y_batch)


def build_networks(config: TrainingConfig) -> dict[str, nn.Module]:
    """G_X, G_Y, D_X, D_Y for ``config``, initialised from the current torch seed.

    Example:
        >>> nets = build_networks(TrainingConfig(base_filters=4, n_blocks=1, disc_filters=4))
        >>> sorted(nets)
        ['d_x', 'd_y', 'g_x', 'g_y']
    """

    def generator() -> nn.Module:
        return ResnetGenerator(
            base_filters=config.base_filters,
            n_blocks=config.n_blocks,
            upsample=config.upsample,
            residual=config.residual,
        )

    def discriminator() -> nn.Module:
        return PatchDiscriminator(base_filters=config.disc_filters, n_layers=config.disc_layers)

    networks = {
        "g_x": generator(),
        "g_y": generator(),
        "d_x": discriminator(),
        "d_y": discriminator(),
    }
    for network in networks.values():
        for module in network.modules():
            if isinstance(module, (nn.Conv2d, ModConv)):
                nn.init.normal_(module.weight, 0.0, 0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
    return networks


def _adam(parameters, config: TrainingConfig) -> torch.optim.Adam:
    """Adam with the run's settings, fused into one kernel where this torch supports it.

    The default per-tensor Adam took 0.2-0.9 s per step on CPU for the paper's 21 M parameters,
    the fused one 0.06 s (benchmarks/training.py): without it the optimiser alone would cost
    several percent of a CPU step.
    """
    parameters = list(parameters)
    betas = (config.beta1, config.beta2)
    try:
        return torch.optim.Adam(parameters, lr=config.lr, betas=betas, fused=True)
    except (RuntimeError, TypeError, ValueError):  # older torch, or a device without it
        return torch.optim.Adam(parameters, lr=config.lr, betas=betas)


def _set_requires_grad(module: nn.Module, flag: bool) -> None:
    for parameter in module.parameters():
        parameter.requires_grad_(flag)


class TrainStep:
    """One optimisation step of all four networks (also used by ``benchmarks/training.py``)."""

    def __init__(
        self,
        networks: dict[str, nn.Module],
        config: TrainingConfig,
        device: torch.device,
        context: distributed.DistributedContext | None = None,
    ):
        self.config, self.device = config, device
        self.networks = networks
        self.use_amp = device.type == "cuda"
        generators = CycleGenerators(networks["g_x"], networks["g_y"]).to(device)
        discriminators = Discriminators(networks["d_x"], networks["d_y"]).to(device)
        self.raw_discriminators = discriminators
        if context is not None and context.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [device.index] if device.type == "cuda" else None
            generators = DDP(generators, device_ids=ids)
            discriminators = DDP(discriminators, device_ids=ids)
        self.generators, self.discriminators = generators, discriminators
        self.opt_g = _adam(
            itertools.chain(networks["g_x"].parameters(), networks["g_y"].parameters()), config
        )
        self.opt_d = _adam(
            itertools.chain(networks["d_x"].parameters(), networks["d_y"].parameters()), config
        )
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)

    def _autocast(self):
        return torch.autocast("cuda", dtype=torch.float16, enabled=self.use_amp)

    def __call__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        y_degraded: torch.Tensor | None = None,
        x_ratios: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Train on one batch; returns the detached losses in :data:`LOSS_NAMES` order.

        ``y_degraded`` (the HR patches ``y`` degraded like thick slices) enables the paired
        term when ``lambda_paired > 0``; ``x_ratios`` (each x patch's thickness ratio) the
        data-consistency term when ``lambda_dc > 0``.
        """
        c, kind = self.config, self.config.adversarial
        d_x, d_y = self.raw_discriminators.d_x, self.raw_discriminators.d_y
        identity = c.lambda_ident > 0
        if c.lambda_paired <= 0:
            y_degraded = None

        # Generators. The discriminators score the fakes without accumulating weight gradients
        # (and outside their DDP wrapper, whose reducer would otherwise expect a backward).
        _set_requires_grad(self.raw_discriminators, False)
        with self._autocast():
            out = self.generators(x, y, identity, y_degraded)
            adv = losses.adversarial_loss(d_y(out["fake_y"]), True, kind) + losses.adversarial_loss(
                d_x(out["fake_x"]), True, kind
            )
        cyc = losses.cycle_loss(out["rec_x"], x) + losses.cycle_loss(out["rec_y"], y)
        gmap = (
            (
                losses.gradient_mapping_loss(out["rec_x"], x)
                + losses.gradient_mapping_loss(out["rec_y"], y)
            )
            if c.lambda_gmap > 0
            else cyc.new_zeros(())
        )
        ident = (
            (losses.identity_loss(out["idt_y"], y) + losses.identity_loss(out["idt_x"], x))
            if identity
            else cyc.new_zeros(())
        )
        paired = (
            losses.identity_loss(out["paired_y"], y)
            if y_degraded is not None
            else cyc.new_zeros(())
        )
        dc = (
            losses.identity_loss(
                blur_rows(out["fake_y"].float(), x_ratios), blur_rows(x.float(), x_ratios)
            )
            if c.lambda_dc > 0 and x_ratios is not None
            else cyc.new_zeros(())
        )
        g_total = (
            adv
            + c.lambda_cyc * cyc
            + c.lambda_ident * ident
            + c.lambda_gmap * gmap
            + c.lambda_paired * paired
            + c.lambda_dc * dc
        )
        self.opt_g.zero_grad(set_to_none=True)
        self.scaler.scale(g_total).backward()
        self.scaler.step(self.opt_g)
        _set_requires_grad(self.raw_discriminators, True)

        # Discriminators: real and fake in one batch per network (instance norm is per sample).
        n_x, n_y = x.shape[0], y.shape[0]
        with self._autocast():
            logits_x, logits_y = self.discriminators(
                torch.cat([x, out["fake_x"].detach()]), torch.cat([y, out["fake_y"].detach()])
            )
            loss_dx = losses.discriminator_loss(
                *logits_x.split([n_x, out["fake_x"].shape[0]]), kind=kind
            )
            loss_dy = losses.discriminator_loss(
                *logits_y.split([n_y, out["fake_y"].shape[0]]), kind=kind
            )
        self.opt_d.zero_grad(set_to_none=True)
        self.scaler.scale(loss_dx + loss_dy).backward()
        self.scaler.step(self.opt_d)
        self.scaler.update()
        values = [g_total, adv, cyc, ident, gmap, loss_dx, loss_dy, paired, dc]
        return torch.stack([v.float() for v in values]).detach()

    def reset_generator_optimizer(self) -> None:
        """Fresh Adam moments for the generators (the warm-up -> CycleGAN switch).

        Adam's second moments from the warm-up reflect the small paired-term gradients; the
        adversarial gradients that follow are far larger, and with beta1 = 0.5 the first moment
        catches up within steps while the second lags for ~1,000, so the first CycleGAN steps
        would be many times the learning rate. Measured: that wiped out a warmed-up CT G_X in
        one epoch (dead ReLUs: output equal to spline to 0.01 dB).
        """
        self.opt_g = _adam(
            itertools.chain(
                self.networks["g_x"].parameters(), self.networks["g_y"].parameters()
            ),
            self.config,
        )

    def warmup(self, y: torch.Tensor, y_degraded: torch.Tensor) -> torch.Tensor:
        """Train G_X on the paired term alone (a warm-up epoch); returns the losses like a step.

        Only G_X runs, once, so under DDP its gradients are averaged by hand instead of by the
        wrapper (which expects the whole cycle pass and would wait for G_Y's gradients).
        """
        g_x = self.networks["g_x"]
        with self._autocast():
            paired = losses.identity_loss(g_x(y_degraded), y)
        g_total = self.config.lambda_paired * paired
        self.opt_g.zero_grad(set_to_none=True)
        self.scaler.scale(g_total).backward()
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            world = torch.distributed.get_world_size()
            for parameter in g_x.parameters():
                if parameter.grad is not None:
                    torch.distributed.all_reduce(parameter.grad)
                    parameter.grad /= world
        self.scaler.step(self.opt_g)
        self.scaler.update()
        zero = paired.new_zeros(())
        values = [g_total, zero, zero, zero, zero, zero, zero, paired, zero]
        return torch.stack([v.float() for v in values]).detach()

    def state_dict(self) -> dict:
        state = {name: net.state_dict() for name, net in self.networks.items()}
        state.update(
            opt_g=self.opt_g.state_dict(),
            opt_d=self.opt_d.state_dict(),
            scaler=self.scaler.state_dict(),
        )
        return state

    def load_state_dict(self, state: dict) -> None:
        for name, net in self.networks.items():
            net.load_state_dict(state[name])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        if self.use_amp and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])


def _resolve_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise CladeError("CUDA was requested but no CUDA GPU is available: use --device cpu.")
    return torch.device(name)


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        states = state["cuda"][: torch.cuda.device_count()]
        torch.cuda.set_rng_state_all(states)


def train(
    data: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    config: TrainingConfig | None = None,
    *,
    val: Sequence[str | os.PathLike] = (),
    val_reference: Sequence[str | os.PathLike] = (),
    resume: bool = False,
    events: str | os.PathLike | None = None,
    progress: Callable[[dict], None] | None = None,
    cancel: Callable[[], bool] | None = None,
    progress_bar: bool = True,
) -> TrainingResult:
    """Train CLADE on ``data`` (volume files or folders) into the folder ``out``.

    ``config`` defaults to the ``mri`` preset; with ``resume=True`` it defaults to the run's own
    settings and, when given, may differ only in epochs, checkpoint interval, logging and device
    (see :data:`CLADE.training.presets.RESUMABLE_CHANGES`); ``data`` may then be empty (the run's
    inputs are used). ``events`` is the JSON-lines file (default ``out/events.jsonl``),
    ``progress`` receives every event dict, ``cancel`` is polled each step: when it returns True
    a checkpoint is written and :class:`CLADE.errors.Cancelled` is raised. User errors raise
    :class:`CLADE.errors.CladeError` with one sentence. Under torchrun this runs on every rank.
    """
    context, device_name = distributed.setup(config.device if config else "auto")
    try:
        session = _Session(
            data,
            out,
            config,
            val,
            val_reference,
            resume,
            events,
            progress,
            cancel,
            progress_bar,
            context,
            device_name,
        )
        return session.run()
    finally:
        distributed.teardown(context)


class _Session:
    """One process's part of a training run (state, bookkeeping, files)."""

    def __init__(
        self,
        data,
        out,
        config,
        val,
        val_reference,
        resume,
        events,
        progress,
        cancel,
        progress_bar,
        context,
        device_name,
    ):
        self.context = context
        self.main = context.is_main
        self.out = check_output_folder(out, resume)
        # Every rank checks the folder before rank 0 creates anything in it.
        context.barrier()
        self.resume, self.cancel, self.progress_bar = resume, cancel, progress_bar
        # A run killed before its first checkpoint has only its record: resuming it starts over
        # with the recorded settings and inputs.
        has_checkpoint = resume and (self.out / CHECKPOINT_NAME).is_file()
        self.checkpoint = load_checkpoint(self.out / CHECKPOINT_NAME) if has_checkpoint else None
        self.record = read_run_record(self.out) if resume else None
        self.stored = self.checkpoint or self.record
        self.config = self._settle_config(config)
        self.inputs = self._settle_inputs(data)
        if self.main:
            self.out.mkdir(parents=True, exist_ok=True)
        events_path = Path(events) if events is not None else self.out / EVENTS_NAME
        self.log = EventWriter(events_path if self.main else None, progress if self.main else None)
        self.device = _resolve_device(device_name if context.enabled else self.config.device)
        if resume and not val and self.record:
            # A resumed run keeps validating on the volumes it started with.
            val = self.record.get("validation_files", [])
            val_reference = self.record.get("validation_references", [])
        self.val_files = [str(Path(v).resolve()) for v in val]
        self.val_references = [str(Path(v).resolve()) for v in val_reference]
        self.validation = (
            ValidationSet.load(
                val,
                val_reference,
                self.config.plane,
                self.config.val_stride or self.config.default_stride,
            )
            if val
            else None
        )
        self.metric = choose_metric(self.config.best_metric, self.validation)

    # -- settings -------------------------------------------------------------------------------

    def _settle_config(self, config: TrainingConfig | None) -> TrainingConfig:
        if self.stored is None:
            return config or TrainingConfig.from_preset("mri")
        stored = TrainingConfig.from_dict(self.stored["config"])
        if config is None:
            return stored
        different = config.differences(stored)
        if different:
            raise CladeError(
                f"The checkpoint in {self.out} was made with other settings "
                f"({', '.join(different)}): resume with the run's settings, or start a new run in "
                "another folder."
            )
        return config

    def _settle_inputs(self, data) -> list[str]:
        given = [str(Path(p).resolve()) for p in data]
        if self.stored is None:
            if not given:
                raise CladeError("No training data was given: name volume files or folders.")
            return given
        stored = list(
            self.checkpoint["data"]["inputs"] if self.checkpoint else self.record["inputs"]
        )
        if given and given != stored:
            raise CladeError(
                f"The checkpoint in {self.out} was trained on other inputs: resume with the same "
                "DATA (or none, to reuse the run's), or start a new run in another folder."
            )
        return stored

    # -- the run --------------------------------------------------------------------------------

    def run(self) -> TrainingResult:
        try:
            return self._run()
        except Cancelled as error:
            self.log.emit("error", message=str(error), stopped=True)
            raise
        except CladeError as error:
            self.log.emit("error", message=str(error), stopped=False)
            raise
        finally:
            self.log.close()

    def _run(self) -> TrainingResult:
        c = self.config
        self.bank = self._build_bank()
        self.fingerprint = self.bank.fingerprint()
        self.sampler = EpochSampler(
            len(self.bank.x),
            len(self.bank.y),
            c.batch_size,
            self.context.world_size,
            self.context.rank,
            c.seed,
        )
        if self.sampler.steps_per_epoch == 0:
            ranks = f" x {self.context.world_size} processes" if self.context.enabled else ""
            raise CladeError(
                f"The training volumes gave only {len(self.bank.x)} LR-plane and "
                f"{len(self.bank.y)} HR-plane patches, fewer than one batch of "
                f"{c.batch_size}{ranks}: lower --batch-size or add volumes."
            )
        torch.manual_seed(c.seed)
        self.networks = build_networks(c)
        self.step_fn = TrainStep(self.networks, c, self.device, self.context)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        self._restore_state()
        if self.main and self.checkpoint is None:
            write_run_record(
                self.out,
                {
                    "config": c.to_dict(),
                    "inputs": self.inputs,
                    "volumes": self.bank.volumes,
                    "skipped": self.bank.skipped,
                    "fingerprint": self.fingerprint,
                    "validation": self.validation.names if self.validation else [],
                    "validation_files": self.val_files,
                    "validation_references": self.val_references,
                },
            )
        self.log.emit(
            "start",
            out=self.out,
            config=c.to_dict(),
            volumes=self.bank.volumes,
            skipped=self.bank.skipped,
            patches={"x": len(self.bank.x), "y": len(self.bank.y)},
            bank_mib=round(self.bank.nbytes / 2**20, 1),
            steps_per_epoch=self.sampler.steps_per_epoch,
            epochs=c.epochs,
            batch_size=c.batch_size,
            world_size=self.context.world_size,
            device=str(self.device),
            resumed=({"epoch": self.epoch, "step": self.step} if self.checkpoint else None),
        )
        self.started = time.monotonic()
        self.last_checkpoint = self.started
        while True:
            if len(self.history) < self.epoch:
                self._finish_epoch()
            if self.epoch >= c.epochs:
                break
            self._train_epoch()
        return self._finish_run()

    def _build_bank(self) -> PatchBank:
        c = self.config

        def on_volume(report: dict) -> None:
            self.log.emit("sampling", **report)

        bank = build_patch_bank(
            self.inputs,
            seed=c.seed,
            patches_per_slice=c.patches_per_slice,
            patch_size=c.patch_size,
            plane=c.plane,
            normalisation=c.normalisation,
            min_foreground=c.min_foreground,
            foreground_level=c.foreground_level,
            max_patches=c.max_patches,
            on_volume=on_volume,
            paired=c.lambda_paired > 0,
            paired_ratios=c.paired_ratios,
        )
        if self.stored is not None:
            expected = (self.checkpoint["data"] if self.checkpoint else self.record)["fingerprint"]
            if bank.fingerprint() != expected:
                raise CladeError(
                    f"The training volumes changed since the checkpoint in {self.out} was "
                    "written: resume with the same volumes, or start a new run in another folder."
                )
        return bank

    def _restore_state(self) -> None:
        self.epoch, self.step, self.global_step = 0, 0, 0
        self.history: list[dict] = []
        self.best = {"epoch": None, "value": None}
        self.sums = torch.zeros(len(LOSS_NAMES), device=self.device)
        self.sum_steps = 0
        self.train_seconds = 0.0
        self.epoch_seconds = 0.0
        state = self.checkpoint
        if state is None:
            return
        self.step_fn.load_state_dict(state["networks"])
        _set_rng_state(state["rng"])
        self.epoch = int(state["epoch"])
        # Positions consumed are stored rather than steps, so a resume with another number of
        # processes continues at the same place in the epoch's order.
        per_step = self.config.batch_size * self.context.world_size
        self.step = int(state["pairs_done"]) // per_step
        self.global_step = int(state["global_step"])
        self.history = list(state["history"])
        self.best = dict(state["best"])
        sums = state["epoch_sums"]
        # Checkpoints written before a loss term was added hold fewer sums: the new terms start
        # at zero, so such a run can still be resumed (e.g. with a new term switched on).
        missing = len(LOSS_NAMES) - sums.numel()
        self.sums = torch.cat([sums, sums.new_zeros(max(missing, 0))]).to(self.device)
        self.sum_steps = int(state["epoch_steps"])
        self.train_seconds = float(state["train_seconds"])
        self.epoch_seconds = float(state["epoch_seconds"])

    # -- epochs ---------------------------------------------------------------------------------

    def _train_epoch(self) -> None:
        c, sampler = self.config, self.sampler
        total_steps = c.epochs * sampler.steps_per_epoch
        bar = None
        if self.main and self.progress_bar:
            from tqdm import tqdm

            bar = tqdm(
                total=sampler.steps_per_epoch,
                initial=self.step,
                unit="step",
                desc=f"epoch {self.epoch + 1}/{c.epochs}",
                dynamic_ncols=True,
                leave=True,
            )
        window_sums = torch.zeros_like(self.sums)
        window_steps, window_start = 0, time.monotonic()
        session_steps, session_start = 0, time.monotonic()
        epoch_start = time.monotonic()
        seen = {"x": [], "y": []} if self.context.enabled else None
        pairs = c.batch_size * self.context.world_size
        if 0 < c.warmup_epochs == self.epoch and self.step == 0:
            self.step_fn.reset_generator_optimizer()
        try:
            while self.step < sampler.steps_per_epoch:
                if self._cancelled():
                    self._save_checkpoint("stopped")
                    raise Cancelled(
                        f"Training stopped at epoch {self.epoch + 1}, step {self.step}: the "
                        f"checkpoint in {self.out} keeps it, rerun with --resume to continue."
                    )
                x_idx, y_idx = sampler.batch(self.epoch, self.step)
                if seen is not None:
                    seen["x"].append(x_idx)
                    seen["y"].append(y_idx)
                degraded = (
                    None
                    if self.bank.y_degraded is None
                    else self._batch(self.bank.y_degraded, y_idx)
                )
                if self.epoch < c.warmup_epochs:
                    values = self.step_fn.warmup(self._batch(self.bank.y, y_idx), degraded)
                else:
                    ratios = (
                        torch.from_numpy(self.bank.x_ratios(x_idx)).to(self.device)
                        if c.lambda_dc > 0
                        else None
                    )
                    values = self.step_fn(
                        self._batch(self.bank.x, x_idx),
                        self._batch(self.bank.y, y_idx),
                        degraded,
                        ratios,
                    )
                self.sums += values
                self.sum_steps += 1
                window_sums += values
                window_steps += 1
                session_steps += 1
                self.step += 1
                self.global_step += 1
                if bar is not None:
                    bar.update(1)
                last = self.step == sampler.steps_per_epoch
                if window_steps >= c.log_every or last:
                    mean = (window_sums / window_steps).tolist()
                    if not all(np.isfinite(mean)):
                        raise CladeError(
                            f"Training diverged at epoch {self.epoch + 1}, step {self.step} (a "
                            "loss is not finite): resume from the last checkpoint with a lower "
                            "learning rate or other loss weights in a new folder."
                        )
                    now = time.monotonic()
                    rate = session_steps / max(now - session_start, 1e-9)
                    done = self.epoch * sampler.steps_per_epoch + self.step
                    named = dict(zip(LOSS_NAMES, mean))
                    self.log.emit(
                        "step",
                        epoch=self.epoch + 1,
                        step=self.step,
                        steps_per_epoch=sampler.steps_per_epoch,
                        global_step=self.global_step,
                        total_steps=total_steps,
                        progress=done / total_steps,
                        losses=named,
                        patches_per_s=window_steps * pairs / max(now - window_start, 1e-9),
                        eta_s=(total_steps - done) / rate,
                    )
                    if bar is not None:
                        bar.set_postfix(
                            {k: f"{named[k]:.3g}" for k in ("g_total", "cyc", "gmap", "d_y")}
                        )
                    window_sums.zero_()
                    window_steps, window_start = 0, now
                if not last and _minutes_since(self.last_checkpoint) >= c.checkpoint_minutes:
                    self._save_checkpoint("time")
        finally:
            if bar is not None:
                bar.close()
            self.train_seconds += time.monotonic() - epoch_start
            self.epoch_seconds += time.monotonic() - epoch_start
        self.epoch_shards = self._shard_report(seen)
        self.epoch += 1
        self.step = 0
        if self.validation is not None:
            # Validation can take long: do not redo the epoch if it is interrupted.
            self._save_checkpoint("epoch")

    def _batch(self, patches: np.ndarray, indices: np.ndarray) -> torch.Tensor:
        batch = torch.from_numpy(patches[indices])
        return batch.to(self.device, non_blocking=True).float().unsqueeze(1)

    def _cancelled(self) -> bool:
        flag = bool(self.cancel and self.cancel())
        return distributed.all_agree(self.context, flag) if self.context.enabled else flag

    def _shard_report(self, seen) -> dict | None:
        """Under DDP: how many patches each rank used this epoch and how many ranks shared."""
        if seen is None:
            return None
        report = {}
        for domain in ("x", "y"):
            mine = np.unique(np.concatenate(seen[domain])) if seen[domain] else np.zeros(0, int)
            gathered = distributed.all_gather_objects(self.context, mine.tolist())
            counts = np.bincount(np.concatenate([np.asarray(g, int) for g in gathered]))
            report[domain] = {
                "per_rank": [len(g) for g in gathered],
                "shared": int((counts > 1).sum()),
            }
        return report

    def _finish_epoch(self) -> None:
        """Validation, best model, history, plot and the epoch event for ``self.epoch``."""
        number = self.epoch
        metrics = None
        if self.validation is not None:
            if self.main:
                began = time.monotonic()
                metrics = validate(
                    copy.deepcopy(self.networks["g_x"]).eval(),
                    self._metadata(number, None),
                    self.validation,
                    str(self.device),
                )
                self.log.emit(
                    "validation", epoch=number, metrics=metrics, seconds=time.monotonic() - began
                )
                value = metrics[self.metric]
                if is_better(self.metric, value, self.best["value"]):
                    self.best = {"epoch": number, "value": value}
                    save_model(
                        self.out / BEST_MODEL, self.networks["g_x"], self._metadata(number, metrics)
                    )
            self.context.barrier()
        losses_mean = dict(zip(LOSS_NAMES, (self.sums / max(self.sum_steps, 1)).tolist()))
        entry = {
            "epoch": number,
            "losses": losses_mean,
            "metrics": metrics,
            "seconds": self.epoch_seconds,
        }
        shards = getattr(self, "epoch_shards", None)
        if shards is not None:
            entry["shards"] = shards
        self.history.append(entry)
        self.sums.zero_()
        self.sum_steps = 0
        self.epoch_seconds = 0.0
        plot = None
        if self.main:
            plot = plot_history(self.history, self.out / PLOT_NAME)
        self._save_checkpoint("validated" if self.validation is not None else "epoch")
        self.log.emit(
            "epoch",
            epoch=number,
            losses=losses_mean,
            metrics=metrics,
            best_epoch=self.best["epoch"],
            best_metric=self.metric,
            best_value=self.best["value"],
            seconds=entry["seconds"],
            plot=plot,
            shards=shards,
        )

    def _finish_run(self) -> TrainingResult:
        final = best = None
        if self.main:
            final = save_model(
                self.out / FINAL_MODEL,
                self.networks["g_x"],
                self._metadata(
                    self.epoch, (self.history[-1] or {}).get("metrics") if self.history else None
                ),
            )
            best = self.out / BEST_MODEL if self.best["epoch"] is not None else None
            self.log.emit(
                "done",
                final_model=final,
                best_model=best,
                best_epoch=self.best["epoch"],
                epochs=self.epoch,
                seconds=self.train_seconds,
            )
        self.context.barrier()
        return TrainingResult(self.out, final, best, self.best["epoch"], self.history)

    # -- files ----------------------------------------------------------------------------------

    def _metadata(self, epoch: int, metrics: dict | None) -> dict:
        c = self.config
        return make_metadata(
            self.out.name,
            c.modality,
            base_filters=c.base_filters,
            n_blocks=c.n_blocks,
            upsample=c.upsample,
            residual=c.residual,
            normalisation=NormalisationRecipe.from_dict(c.normalisation),
            default_stride=c.default_stride,
            trained=True,
            training={
                "config": c.to_dict(),
                "epoch": epoch,
                "validation": metrics,
                "best_metric": self.metric,
                "inputs": [Path(p).name for p in self.bank.volumes],
                "patches": {"x": len(self.bank.x), "y": len(self.bank.y)},
                "world_size": self.context.world_size,
            },
        )

    def _save_checkpoint(self, reason: str) -> None:
        self.last_checkpoint = time.monotonic()
        if not self.main:
            return
        state = {
            "config": self.config.to_dict(),
            "data": {
                "inputs": self.inputs,
                "fingerprint": self.fingerprint,
                "n_x": len(self.bank.x),
                "n_y": len(self.bank.y),
            },
            "epoch": self.epoch,
            "pairs_done": self.step * self.config.batch_size * self.context.world_size,
            "global_step": self.global_step,
            "world_size": self.context.world_size,
            "networks": self.step_fn.state_dict(),
            "rng": _rng_state(),
            "history": self.history,
            "best": self.best,
            "epoch_sums": self.sums.detach().cpu(),
            "epoch_steps": self.sum_steps,
            "train_seconds": self.train_seconds,
            "epoch_seconds": self.epoch_seconds,
        }
        path = save_checkpoint(self.out / CHECKPOINT_NAME, state)
        self.log.emit("checkpoint", path=path, epoch=self.epoch, step=self.step, reason=reason)


def _minutes_since(since: float) -> float:
    """Minutes elapsed since the monotonic time ``since``."""
    return (time.monotonic() - since) / 60.0


__all__ = ["TrainingResult", "train", "build_networks", "TrainStep", "expand_inputs"]
