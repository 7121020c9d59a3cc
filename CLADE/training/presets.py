"""Training settings in one place: :class:`TrainingConfig` and the ``mri``, ``ct``, ``paper`` presets.

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

Every field can be overridden: ``TrainingConfig.from_preset("ct", lambda_gmap=5, epochs=3)``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field

from ..errors import CladeError
from .losses import ADVERSARIAL_KINDS

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

#: Settings that may change between a run and its ``--resume`` (they do not alter the result
#: of the steps already taken).
#: Settings a resumed run may change. Loss weights and the warm-up length change neither the
#: patch bank nor the networks' shapes, so a run may continue on a new schedule (e.g. switch on
#: data consistency when the CycleGAN epochs begin after a warm-up).
RESUMABLE_CHANGES = (
    "epochs",
    "checkpoint_minutes",
    "log_every",
    "device",
    "lambda_cyc",
    "lambda_ident",
    "lambda_gmap",
    "lambda_paired",
    "lambda_dc",
    "warmup_epochs",
)

BEST_METRICS = ("auto", "piqe", "psnr", "ssim")


@dataclass
class TrainingConfig:
    """Everything that defines a training run (JSON-compatible, stored with every checkpoint).

    Example:
        >>> c = TrainingConfig.from_preset("ct", epochs=2)
        >>> (c.lambda_cyc, c.lambda_ident, c.lambda_gmap, c.epochs, c.lr)
        (1.0, 1.0, 10.0, 2, 0.0002)
        >>> TrainingConfig.from_dict(c.to_dict()) == c
        True
    """

    preset: str = "mri"
    modality: str = "MR"
    # Loss (method section 5).
    lambda_cyc: float = 1.0
    lambda_ident: float = 1.0
    lambda_gmap: float = 5.0
    adversarial: str = "bce"
    # Fidelity safeguards beyond the paper (issue 6; 0 / False = the paper's method):
    # lambda_paired weighs |G_X(degraded y) - y|_1 on HR patches degraded along their rows like
    # a thick-slice acquisition (CLADE.degradation); residual makes G_X start as the
    # identity (CLADE.networks.ResnetGenerator).
    lambda_paired: float = 0.0
    residual: bool = False
    # warmup_epochs: the first epochs train G_X on the paired term alone (no discriminators,
    # no G_Y): a SMORE-like supervised start that is ~7x cheaper per pair than a CycleGAN step,
    # so the generator already deblurs when the adversarial game begins. Needs lambda_paired > 0.
    warmup_epochs: int = 0
    # lambda_dc weighs data consistency on real LR patches x: |blur(G_X(x)) - blur(x)|_1 with
    # the slice profile of x's own volume (Gaussian, FWHM = its thickness ratio) along the thick
    # axis. G_X may add detail finer than a slice, but not change what the slices measured.
    lambda_dc: float = 0.0
    # paired_ratios: [low, high] draws each HR slice's simulated thickness ratio for the paired
    # term from this range instead of using the volume's own (None).
    paired_ratios: list[float] | None = None
    # Architecture (method section 4).
    base_filters: int = 64
    n_blocks: int = 6
    upsample: str = "transpose"
    disc_filters: int = 64
    disc_layers: int = 3
    # Optimisation (method section 6).
    epochs: int = 10
    batch_size: int = 4
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    seed: int = 0
    # Patches (method section 6).
    patches_per_slice: int = 4
    patch_size: int = 32
    max_patches: int | None = None
    plane: str = "auto"
    min_foreground: float = 0.25
    foreground_level: float = 0.05
    normalisation: dict = field(
        default_factory=lambda: {"kind": "percentile", "low": 0.5, "high": 99.5}
    )
    # Validation and export.
    best_metric: str = "auto"
    default_stride: int = 12
    val_stride: int | None = None
    # Bookkeeping (may change on resume).
    checkpoint_minutes: float = 15.0
    log_every: int = 10
    device: str = "auto"

    @classmethod
    def from_preset(cls, preset: str = "mri", **overrides) -> TrainingConfig:
        """The preset's settings with ``overrides`` (``None`` values are ignored)."""
        if preset not in PRESETS:
            raise CladeError(f"Unknown preset {preset!r}: use {', '.join(PRESETS)}.")
        values = {"preset": preset, **PRESETS[preset]}
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls.from_dict(values)

    @classmethod
    def from_dict(cls, record: dict) -> TrainingConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(record) - names)
        if unknown:
            raise CladeError(f"Unknown training settings {', '.join(unknown)}: check the names.")
        config = cls(**record)
        config.validate()
        return config

    def to_dict(self) -> dict:
        return asdict(self)

    def validate(self) -> None:
        """Raise :class:`CladeError` for a setting that cannot work."""
        checks = [
            (
                self.adversarial in ADVERSARIAL_KINDS,
                f"The adversarial loss must be one of {', '.join(ADVERSARIAL_KINDS)}.",
            ),
            (self.upsample in ("transpose", "resize"), "--upsample must be transpose or resize."),
            (
                self.best_metric in BEST_METRICS,
                f"The best-epoch metric must be one of {', '.join(BEST_METRICS)}.",
            ),
            (
                min(
                    self.lambda_cyc,
                    self.lambda_ident,
                    self.lambda_gmap,
                    self.lambda_paired,
                    self.lambda_dc,
                )
                >= 0,
                "Loss weights must be zero or positive.",
            ),
            (
                self.epochs >= 1 and self.batch_size >= 1,
                "The number of epochs and the batch size must be at least 1.",
            ),
            (
                self.base_filters >= 1 and self.n_blocks >= 0 and self.disc_filters >= 1,
                "The network sizes must be positive.",
            ),
            (
                self.warmup_epochs == 0 or (self.lambda_paired > 0 and self.warmup_epochs >= 0),
                "--warmup-epochs trains on the paired term alone: give --lambda-paired above 0.",
            ),
            (
                self.paired_ratios is None
                or (len(self.paired_ratios) == 2 and 1 <= self.paired_ratios[0] <= self.paired_ratios[1]),
                "--paired-ratios needs LOW HIGH with 1 <= LOW <= HIGH.",
            ),
            (self.patches_per_slice >= 1, "--patches-per-slice must be at least 1."),
            (self.patch_size == 32, "CLADE's model files use 32x32 patches: keep patch_size 32."),
            (
                self.max_patches is None or self.max_patches >= 1,
                "--max-patches must be at least 1.",
            ),
            (0.0 <= self.min_foreground <= 1.0, "--min-foreground must be between 0 and 1."),
            (
                self.lr > 0 and 0 <= self.beta1 < 1 and 0 <= self.beta2 < 1,
                "The Adam settings must have lr > 0 and betas in [0, 1).",
            ),
            (self.checkpoint_minutes > 0, "--checkpoint-minutes must be positive."),
            (self.log_every >= 1, "log_every must be at least 1."),
            (
                self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"),
                "--device must be auto, cpu or cuda.",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise CladeError(message)

    def differences(self, other: TrainingConfig) -> list[str]:
        """Names of the settings that differ from ``other``, apart from resumable ones.

        Example:
            >>> TrainingConfig(epochs=3).differences(TrainingConfig(epochs=5, seed=1))
            ['seed']
        """
        mine, theirs = self.to_dict(), other.to_dict()
        return [k for k in mine if k not in RESUMABLE_CHANGES and mine[k] != theirs[k]]
