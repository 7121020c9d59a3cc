"""Training CLADE networks (``clade train``): patches, losses, the trainer, checkpoints, events.

Modules, one job each:

* :mod:`~CLADE.training.presets`: :class:`TrainingConfig` and the ``mri``/``ct``/``paper`` presets;
* :mod:`~CLADE.training.sampling`: the unpaired patch bank and the epoch order;
* :mod:`~CLADE.training.losses`: adversarial, cycle, identity and gradient-mapping losses;
* :mod:`~CLADE.training.trainer`: :func:`train`, the loop (single process or DDP);
* :mod:`~CLADE.training.checkpoint`: atomic checkpoints and the output folder's run record;
* :mod:`~CLADE.training.validation`: per-epoch PIQE / PSNR / SSIM on held-out volumes;
* :mod:`~CLADE.training.events`: the JSON-lines progress log (schema there) and its reader;
* :mod:`~CLADE.training.distributed`: torchrun / DistributedDataParallel set-up;
* :mod:`~CLADE.training.plot`: the loss and metric plot.

Names are loaded lazily so that reading events (e.g. from the Slicer GUI) does not import torch.

Example:
    >>> from CLADE.training import TrainingConfig
    >>> TrainingConfig.from_preset("paper").batch_size
    1
"""

from __future__ import annotations

_EXPORTS = {
    "TrainingConfig": "presets",
    "PRESETS": "presets",
    "train": "trainer",
    "TrainingResult": "trainer",
    "read_events": "events",
    "EventReader": "events",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
