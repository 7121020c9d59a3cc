"""One optimisation step of CLADE's four networks, G_X, G_Y, D_X, D_Y, on unpaired patches.

One step (batch of ``B`` LR-plane patches ``x`` and HR-plane patches ``y``), as CycleGAN:

1. generators: ``fake_y = G_X(x)``, ``rec_x = G_Y(fake_y)``, ``fake_x = G_Y(y)``,
   ``rec_y = G_X(fake_x)`` and, with the identity term, ``idt_y = G_X(y)``, ``idt_x = G_Y(x)``;
   loss ``adv(D_Y(fake_y), real) + adv(D_X(fake_x), real) + l_cyc * L_cyc + l_ident * L_ident
   + l_gmap * L_gmap`` (method section 5) plus the safeguards' terms, one Adam step on both
   generators;
2. discriminators: ``0.5 * (adv(D(real), real) + adv(D(fake.detach()), fake))`` for each, one
   Adam step on both.

Choices where the paper is silent: no image history buffer (the paper does not mention one);
weights start from N(0, 0.02) (:func:`CLADE.networks.init_weights`); the losses logged are those
of rank 0's shard. On CUDA the forward passes run under float16 autocast with one
``GradScaler`` shared by the two optimisers (stepped once per iteration after both). Under
torchrun both network pairs are wrapped in DistributedDataParallel.
"""

from __future__ import annotations

import itertools

import torch
from torch import nn

from ..degradation import blur_rows
from ..networks import PatchDiscriminator, ResnetGenerator, init_weights
from . import distributed, losses
from .loss_terms import LOSS_NAMES
from .presets import TrainingConfig


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

    a = config.architecture

    def generator() -> nn.Module:
        return ResnetGenerator(
            base_filters=a.base_filters,
            n_blocks=a.n_blocks,
            upsample=a.upsample,
            residual=a.residual,
        )

    def discriminator() -> nn.Module:
        return PatchDiscriminator(base_filters=a.disc_filters, n_layers=a.disc_layers)

    networks = {
        "g_x": generator(),
        "g_y": generator(),
        "d_x": discriminator(),
        "d_y": discriminator(),
    }
    # All four are built before any is initialised: the order of the draws is part of a seed's
    # meaning (runs and checkpoints of earlier versions start from the same weights).
    for network in networks.values():
        init_weights(network)
    return networks


def _adam(parameters, optimiser) -> torch.optim.Adam:
    """Adam with the run's settings, fused into one kernel where this torch supports it.

    Fused because the per-tensor Adam was several times slower on CPU, a visible share of a step
    (measurements: models/cards/training-notes.md).
    """
    parameters = list(parameters)
    betas = (optimiser.beta1, optimiser.beta2)
    try:
        return torch.optim.Adam(parameters, lr=optimiser.lr, betas=betas, fused=True)
    except (RuntimeError, TypeError, ValueError):  # older torch, or a device without it
        return torch.optim.Adam(parameters, lr=optimiser.lr, betas=betas)


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
            itertools.chain(networks["g_x"].parameters(), networks["g_y"].parameters()),
            config.optimiser,
        )
        self.opt_d = _adam(
            itertools.chain(networks["d_x"].parameters(), networks["d_y"].parameters()),
            config.optimiser,
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
        c, kind = self.config.loss, self.config.architecture.adversarial
        d_x, d_y = self.raw_discriminators.d_x, self.raw_discriminators.d_y
        identity = c.identity_term
        if not c.paired_term:
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
            if c.gmap_term
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
            if c.dc_term and x_ratios is not None
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
        terms = {"g_total": g_total, "adv": adv, "cyc": cyc, "ident": ident, "gmap": gmap}
        terms.update(d_x=loss_dx, d_y=loss_dy, paired=paired, dc=dc)
        return _loss_vector(**terms)

    def reset_generator_optimizer(self) -> None:
        """Fresh Adam moments for the generators (the warm-up -> CycleGAN switch).

        The warm-up's second moments are too small for the adversarial gradients that follow, so
        the first CycleGAN steps would be many times the learning rate (it wiped out a warmed-up
        G_X in one epoch: models/cards/training-notes.md).
        """
        self.opt_g = _adam(
            itertools.chain(self.networks["g_x"].parameters(), self.networks["g_y"].parameters()),
            self.config.optimiser,
        )

    def set_learning_rate(self, lr: float) -> None:
        """Use ``lr`` in both optimisers from the next step on (the run's schedule)."""
        for optimiser in (self.opt_g, self.opt_d):
            for group in optimiser.param_groups:
                group["lr"] = lr

    def warmup(self, y: torch.Tensor, y_degraded: torch.Tensor) -> torch.Tensor:
        """Train G_X on the paired term alone (a warm-up epoch); returns the losses like a step.

        Only G_X runs, once, so under DDP its gradients are averaged by hand instead of by the
        wrapper (which expects the whole cycle pass and would wait for G_Y's gradients).
        """
        g_x = self.networks["g_x"]
        with self._autocast():
            paired = losses.identity_loss(g_x(y_degraded), y)
        g_total = self.config.loss.lambda_paired * paired
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
        return _loss_vector(g_total=g_total, paired=paired)

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


def _loss_vector(**terms: torch.Tensor) -> torch.Tensor:
    """The detached losses in :data:`LOSS_NAMES` order; terms not given are 0."""
    zero = next(iter(terms.values())).new_zeros(())
    return torch.stack([terms.get(name, zero).float() for name in LOSS_NAMES]).detach()
