"""Training settings in one place: :class:`TrainingConfig` and the ``mri``, ``ct``, ``paper`` presets.

This module imports no torch (the Slicer module and the command line read the presets and the
setting names before any network exists).

``paper`` is the paper's recipe as far as the paper states it (section 4.5-4.6 of the paper,
method.md sections 4-6): the full architecture, BCE adversarial loss, Adam 2e-4 / (0.5, 0.999),
4 patches per slice from every slice with no background filtering, 10 epochs, loss weights
(1, 1, 5) of its MRI model (pass ``lambda_gmap=10`` for its CT model). The paper does not give
the batch size; ``paper`` uses 1, the default of the CycleGAN reference implementations
(PyTorch and TensorFlow).

``mri`` and ``ct`` are our defaults: the paper's loss weights for each modality, plus two
choices of ours where the paper is silent: batch size 4 (better GPU use, still small-batch GAN
dynamics) and leaving out nearly-all-background patches (``min_foreground``, see
:mod:`CLADE.training.sampling`).

A :class:`TrainingConfig` is a set of frozen groups (:class:`LossWeights`, :class:`Schedule`,
:class:`Sampling`, :class:`Architecture`, :class:`Optimiser`, :class:`Export`,
:class:`Bookkeeping`) passed whole to the code that needs them. Setting names are unique across
groups, so every setting also has a flat name: the keyword of :meth:`TrainingConfig.from_preset`
and of the constructor, the ``clade train`` option (``lambda_gmap`` is ``--lambda-gmap``) and
the key in ``run.json``, checkpoints and model files (which store the flat form, so records of
any CLADE version read back). Every field can be overridden:
``TrainingConfig.from_preset("ct", lambda_gmap=5, epochs=3)``.

Example:
    >>> c = TrainingConfig.from_preset("ct", epochs=2)
    >>> c.loss.lambda_gmap, c.schedule.epochs, c.optimiser.lr
    (10.0, 2, 0.0002)
    >>> c.loss.paired_term, TrainingConfig(lambda_paired=20).loss.paired_term
    (False, True)
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import ClassVar

from ..errors import CladeError
from .loss_terms import ADVERSARIAL_KINDS

PRESETS: dict[str, dict] = {
    "mri": {
        "modality": "MR",
        "lambda_cyc": 1.0,
        "lambda_ident": 1.0,
        "lambda_gmap": 5.0,
        "batch_size": 4,
        "min_foreground": 0.25,
        "default_stride": 12,
    },
    "ct": {
        "modality": "CT",
        "lambda_cyc": 1.0,
        "lambda_ident": 1.0,
        "lambda_gmap": 10.0,
        "batch_size": 4,
        "min_foreground": 0.25,
        "default_stride": 6,
    },
    "paper": {
        "modality": "MR",
        "lambda_cyc": 1.0,
        "lambda_ident": 1.0,
        "lambda_gmap": 5.0,
        "batch_size": 1,
        "min_foreground": 0.0,
        "default_stride": 12,
    },
}

BEST_METRICS = ("auto", "piqe", "psnr", "ssim")
UPSAMPLING = ("transpose", "resize")
LR_SCHEDULES = ("constant", "cosine")


def _switch(weight: str, what: str) -> property:
    """A read-only switch that is on when the loss weight named ``weight`` is above zero."""
    return property(lambda self: getattr(self, weight) > 0, doc=f"Whether {what}.")


@dataclass(frozen=True)
class LossWeights:
    """Weights of the generator loss terms (method section 5, and the safeguards of issue 6).

    A weight of 0 switches its term off; the code asks the named switches below, not the weight.
    ``lambda_paired`` weighs ``|G_X(degraded y) - y|_1`` on HR patches degraded along their rows
    like a thick-slice acquisition (:mod:`CLADE.degradation`); ``lambda_dc`` weighs data
    consistency on real LR patches ``x``: ``|blur(G_X(x)) - blur(x)|_1`` with the slice profile
    of ``x``'s own volume along the thick axis (G_X may add detail finer than a slice, but not
    change what the slices measured). Resumable: the weights change neither the patch bank nor
    the networks' shapes, so a run may continue with other weights.
    """

    RESUMABLE: ClassVar[bool] = True
    lambda_cyc: float = 1.0
    lambda_ident: float = 1.0
    lambda_gmap: float = 5.0
    lambda_paired: float = 0.0
    lambda_dc: float = 0.0

    identity_term = _switch("lambda_ident", "the step runs the identity passes G_X(y), G_Y(x)")
    gmap_term = _switch("lambda_gmap", "the step computes the gradient-mapping term")
    paired_term = _switch("lambda_paired", "the bank holds degraded HR patches, the step uses them")
    dc_term = _switch("lambda_dc", "the step computes data consistency on real LR patches")


@dataclass(frozen=True)
class Schedule:
    """How many epochs, and how many of the first train ``G_X`` alone on the paired term.

    The warm-up is a SMORE-like supervised start ~7x cheaper per pair than a CycleGAN step, so
    the generator already deblurs when the adversarial game begins (needs the paired term).
    Resumable: a run may be extended or switch from warm-up to CycleGAN epochs.
    """

    RESUMABLE: ClassVar[bool] = True
    epochs: int = 10
    warmup_epochs: int = 0

    def is_warmup(self, epoch: int) -> bool:
        """Whether the 0-based ``epoch`` is a warm-up epoch."""
        return epoch < self.warmup_epochs

    def starts_cyclegan(self, epoch: int) -> bool:
        """Whether the 0-based ``epoch`` is the first CycleGAN epoch after a warm-up."""
        return 0 < self.warmup_epochs == epoch


@dataclass(frozen=True)
class Sampling:
    """The patch bank (method section 6 and :mod:`CLADE.training.sampling`).

    ``patch_size`` is the training patch side; the generator is fully convolutional, so a model
    trained on larger patches still runs on whole slices or the paper's 32-pixel patches (the
    model file records its inference patch size, not this). A multiple of 4: the generator
    downsamples twice.
    ``paired_ratios`` ``(low, high)`` draws each HR slice's simulated thickness ratio for the
    paired term from this range instead of using the volume's own (None).
    """

    RESUMABLE: ClassVar[bool] = False
    patches_per_slice: int = 4
    patch_size: int = 32
    max_patches: int | None = None
    plane: str = "auto"
    min_foreground: float = 0.25
    foreground_level: float = 0.05
    normalisation: dict = field(
        default_factory=lambda: {"kind": "percentile", "low": 0.5, "high": 99.5}
    )
    paired_ratios: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        # JSON gives lists; a tuple keeps the frozen group equal to itself after a round trip.
        if self.paired_ratios is not None:
            object.__setattr__(self, "paired_ratios", tuple(float(v) for v in self.paired_ratios))


@dataclass(frozen=True)
class Architecture:
    """The networks (method section 4), and the adversarial loss that gives D's outputs meaning.

    ``adversarial`` is here, not with the weights, because a run cannot switch it midway: it
    fixes what the discriminators' outputs mean (BCE logits or least-squares scores), as the
    layer sizes fix the weights' shapes.
    """

    RESUMABLE: ClassVar[bool] = False
    base_filters: int = 64
    n_blocks: int = 6
    upsample: str = "transpose"
    residual: bool = False
    disc_filters: int = 64
    disc_layers: int = 3
    adversarial: str = "bce"


@dataclass(frozen=True)
class Optimiser:
    """Adam, the batch, the seed of every random choice (method section 6), the learning-rate
    schedule and where ``G_X``'s weights start.

    ``lr_schedule``: ``constant`` is the paper's; ``cosine`` lowers the rate along half a cosine
    from ``lr`` to 0 at the run's last step (an annealed end usually settles a little closer to
    the optimum than a constant rate, which keeps jumping around it; measured in
    models/cards/mri.md). ``init_model``: a CLADE model file or shipped model name whose weights
    start ``G_X`` (fine-tuning a trained model on one's own cohort), instead of random weights.
    """

    RESUMABLE: ClassVar[bool] = False
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    batch_size: int = 4
    seed: int = 0
    lr_schedule: str = "constant"
    init_model: str | None = None

    def lr_at(self, progress: float) -> float:
        """The learning rate at ``progress`` through the run (0: its first step, 1: past its last).

        A resumed run that is extended (``--resume --epochs``) follows the longer run's curve from
        where it stands.

        Example:
            >>> Optimiser(lr=1e-4).lr_at(0.9)
            0.0001
            >>> cosine = Optimiser(lr=1e-4, lr_schedule="cosine")
            >>> cosine.lr_at(0.0), round(cosine.lr_at(0.5), 12), cosine.lr_at(1.0)
            (0.0001, 5e-05, 0.0)
        """
        if self.lr_schedule == "cosine":
            return self.lr * 0.5 * (1.0 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))
        return self.lr


@dataclass(frozen=True)
class Export:
    """What the model files record and how validation picks the best epoch."""

    RESUMABLE: ClassVar[bool] = False
    modality: str = "MR"
    default_stride: int = 12
    val_stride: int | None = None
    best_metric: str = "auto"


@dataclass(frozen=True)
class Bookkeeping:
    """How often to checkpoint and log, and where to run. Resumable (no effect on the result)."""

    RESUMABLE: ClassVar[bool] = True
    checkpoint_minutes: float = 15.0
    log_every: int = 10
    device: str = "auto"


#: The groups of a :class:`TrainingConfig`, by attribute name.
GROUPS = {
    "loss": LossWeights,
    "schedule": Schedule,
    "sampling": Sampling,
    "architecture": Architecture,
    "optimiser": Optimiser,
    "export": Export,
    "bookkeeping": Bookkeeping,
}

#: The group of each flat setting name (derived from the groups' fields).
GROUP_OF = {f.name: group for group, kind in GROUPS.items() for f in dataclasses.fields(kind)}

#: Every flat setting name: the keywords, ``clade train`` options and record keys.
SETTING_NAMES = ("preset", *GROUP_OF)

#: Settings a resumed run may change: those of the resumable groups.
RESUMABLE_CHANGES = tuple(name for name, group in GROUP_OF.items() if GROUPS[group].RESUMABLE)


@dataclass(frozen=True, init=False)
class TrainingConfig:
    """Everything that defines a training run, as frozen groups (stored flat with every run).

    Give whole groups or flat settings (or both: the flat ones apply last).

    Example:
        >>> c = TrainingConfig(base_filters=4, n_blocks=1, epochs=3)
        >>> c.architecture.base_filters, c.schedule.epochs, c.loss.lambda_gmap
        (4, 3, 5.0)
        >>> TrainingConfig.from_dict(c.to_dict()) == c
        True
    """

    preset: str
    loss: LossWeights
    schedule: Schedule
    sampling: Sampling
    architecture: Architecture
    optimiser: Optimiser
    export: Export
    bookkeeping: Bookkeeping

    def __init__(self, preset: str = "mri", **settings) -> None:
        groups = {name: settings.pop(name, None) or kind() for name, kind in GROUPS.items()}
        unknown = sorted(set(settings) - set(GROUP_OF))
        if unknown:
            raise TypeError(f"unknown training settings: {', '.join(unknown)}")
        object.__setattr__(self, "preset", preset)
        for name, group in groups.items():
            mine = {k: v for k, v in settings.items() if GROUP_OF[k] == name}
            object.__setattr__(self, name, dataclasses.replace(group, **mine) if mine else group)

    @classmethod
    def from_preset(cls, preset: str = "mri", **overrides) -> TrainingConfig:
        """The preset's settings with flat ``overrides`` (``None`` values are ignored)."""
        if preset not in PRESETS:
            raise CladeError(f"Unknown preset {preset!r}: use {', '.join(PRESETS)}.")
        values = {"preset": preset, **PRESETS[preset]}
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls.from_dict(values)

    @classmethod
    def from_dict(cls, record: dict) -> TrainingConfig:
        """A checked config from its flat record (missing settings take their defaults)."""
        unknown = sorted(set(record) - set(SETTING_NAMES))
        if unknown:
            raise CladeError(f"Unknown training settings {', '.join(unknown)}: check the names.")
        config = cls(**record)
        config.validate()
        return config

    def to_dict(self) -> dict:
        """The flat record (JSON-compatible) of ``run.json``, checkpoints and model files."""
        record = {"preset": self.preset}
        for name in GROUPS:
            record.update(dataclasses.asdict(getattr(self, name)))
        if record["paired_ratios"] is not None:
            record["paired_ratios"] = list(record["paired_ratios"])
        return record

    def with_settings(self, **settings) -> TrainingConfig:
        """A checked copy with the flat ``settings`` changed.

        Example:
            >>> TrainingConfig().with_settings(epochs=3, lr=1e-4).optimiser.lr
            0.0001
        """
        return self.from_dict({**self.to_dict(), **settings})

    def differences(self, other: TrainingConfig) -> list[str]:
        """Names of the settings that differ from ``other``, apart from resumable ones.

        Example:
            >>> TrainingConfig(epochs=3).differences(TrainingConfig(epochs=5, seed=1))
            ['seed']
        """
        mine, theirs = self.to_dict(), other.to_dict()
        return [k for k in mine if k not in RESUMABLE_CHANGES and mine[k] != theirs[k]]

    def validate(self) -> None:
        """Raise :class:`CladeError` for a setting that cannot work."""
        w, s, p = self.loss, self.sampling, self.optimiser
        a, b = self.architecture, self.bookkeeping
        ratios = s.paired_ratios
        checks = [
            (
                a.adversarial in ADVERSARIAL_KINDS,
                f"The adversarial loss must be one of {', '.join(ADVERSARIAL_KINDS)}.",
            ),
            (a.upsample in UPSAMPLING, "--upsample must be transpose or resize."),
            (
                self.export.best_metric in BEST_METRICS,
                f"The best-epoch metric must be one of {', '.join(BEST_METRICS)}.",
            ),
            (
                min(w.lambda_cyc, w.lambda_ident, w.lambda_gmap, w.lambda_paired, w.lambda_dc) >= 0,
                "Loss weights must be zero or positive.",
            ),
            (
                self.schedule.epochs >= 1 and p.batch_size >= 1,
                "The number of epochs and the batch size must be at least 1.",
            ),
            (
                a.base_filters >= 1 and a.n_blocks >= 0 and a.disc_filters >= 1,
                "The network sizes must be positive.",
            ),
            (
                self.schedule.warmup_epochs == 0
                or (w.paired_term and self.schedule.warmup_epochs >= 0),
                "--warmup-epochs trains on the paired term alone: give --lambda-paired above 0.",
            ),
            (
                ratios is None or (len(ratios) == 2 and 1 <= ratios[0] <= ratios[1]),
                "--paired-ratios needs LOW HIGH with 1 <= LOW <= HIGH.",
            ),
            (s.patches_per_slice >= 1, "--patches-per-slice must be at least 1."),
            (
                32 <= s.patch_size <= 128 and s.patch_size % 4 == 0,
                "--patch-size must be a multiple of 4 from 32 to 128.",
            ),
            (s.max_patches is None or s.max_patches >= 1, "--max-patches must be at least 1."),
            (0.0 <= s.min_foreground <= 1.0, "--min-foreground must be between 0 and 1."),
            (
                p.lr > 0 and 0 <= p.beta1 < 1 and 0 <= p.beta2 < 1,
                "The Adam settings must have lr > 0 and betas in [0, 1).",
            ),
            (p.seed >= 0, "--seed must be zero or positive."),
            (
                p.lr_schedule in LR_SCHEDULES,
                f"--lr-schedule must be one of {', '.join(LR_SCHEDULES)}.",
            ),
            (b.checkpoint_minutes > 0, "--checkpoint-minutes must be positive."),
            (b.log_every >= 1, "log_every must be at least 1."),
            (
                b.device in ("auto", "cpu", "cuda") or b.device.startswith("cuda:"),
                "--device must be auto, cpu or cuda.",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise CladeError(message)
