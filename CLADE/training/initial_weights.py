"""Starting ``G_X`` from a trained model (``--init-model``) instead of random weights.

Fine-tuning a shipped model on one's own cohort needs far fewer steps than training from
scratch. Only ``G_X`` is in a model file; ``G_Y`` and the discriminators keep their seeded random
start, which is enough for warm-up (paired-term) epochs and gives a CycleGAN stage a trained
generator to begin from. The run's architecture must be the model's: its weights fit no other.
"""

from __future__ import annotations

from ..errors import CladeError
from ..model_file import architecture_of
from .presets import TrainingConfig


def initial_generator_weights(config: TrainingConfig) -> dict | None:
    """The ``G_X`` weights of ``config``'s ``init_model`` (``None`` when it is unset).

    Raises :class:`CladeError` when the model cannot be loaded or its architecture is not the
    run's (the trainer asks before it samples patches, so a wrong model fails at once).

    Example:
        >>> from CLADE.training.step import build_networks
        >>> config = TrainingConfig(base_filters=32, n_blocks=6, upsample="transpose",
        ...                         residual=True, init_model="mri")
        >>> g_x = build_networks(config)["g_x"]
        >>> _ = g_x.load_state_dict(initial_generator_weights(config))
        >>> initial_generator_weights(TrainingConfig()) is None
        True
    """
    name = config.optimiser.init_model
    if name is None:
        return None
    from ..registry import resolve_model

    model = resolve_model(name)
    given = architecture_of(model.metadata)
    wanted = {key: getattr(config.architecture, key) for key in given}
    if given != wanted:
        options = " ".join(_option(key, value) for key, value in given.items())
        raise CladeError(
            f"The model {name} has another architecture than this run ({_describe(given)} "
            f"against {_describe(wanted)}): train with {options} to fine-tune it."
        )
    return model.generator.state_dict()


def _describe(architecture: dict) -> str:
    residual = "residual" if architecture["residual"] else "not residual"
    return (
        f"{architecture['base_filters']} filters, {architecture['n_blocks']} blocks, "
        f"{architecture['upsample']} upsampling, {residual}"
    )


def _option(key: str, value) -> str:
    if key == "residual":  # a switch: the sentence must also say when to leave it out
        return "--residual" if value else "without --residual"
    return f"--{key.replace('_', '-')} {value}"
