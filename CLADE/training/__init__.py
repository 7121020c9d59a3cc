"""Training CLADE networks (``clade train``): patches, losses, the trainer, checkpoints, events.

Modules, one job each:

* :mod:`~CLADE.training.presets`: :class:`TrainingConfig` (frozen groups) and the presets;
* :mod:`~CLADE.training.loss_terms`: the loss names (step vector, events, plot);
* :mod:`~CLADE.training.sampling`: the unpaired patch bank and the epoch order;
* :mod:`~CLADE.training.losses`: adversarial, cycle, identity and gradient-mapping losses;
* :mod:`~CLADE.training.step`: :class:`TrainStep`, one optimisation step of the four networks;
* :mod:`~CLADE.training.trainer`: :func:`train`, the run and its epoch loop (one process or DDP);
* :mod:`~CLADE.training.step_log`: step events, speed, ETA and the divergence check;
* :mod:`~CLADE.training.export`: validation each epoch, the best and final model files;
* :mod:`~CLADE.training.run_record`: the run record (``run.json``, also in every checkpoint);
* :mod:`~CLADE.training.resume`: settling a new or resumed run, once;
* :mod:`~CLADE.training.state`: epoch, step, history and loss sums of a run;
* :mod:`~CLADE.training.checkpoint`: atomic checkpoints and the output folder;
* :mod:`~CLADE.training.write_errors`: a failed write (full disk) as one sentence;
* :mod:`~CLADE.training.validation`: per-epoch PIQE / PSNR / SSIM on held-out volumes;
* :mod:`~CLADE.training.events`: the JSON-lines progress log (schema there) and its reader;
* :mod:`~CLADE.training.distributed`: torchrun / DistributedDataParallel set-up;
* :mod:`~CLADE.training.plot`: the loss and metric plot (optional: needs matplotlib).

Names are loaded lazily so that reading events or presets (e.g. from the Slicer GUI) does not
import torch: ``presets``, ``loss_terms``, ``events``, ``run_record`` and ``write_errors`` never
do.

Example:
    >>> from CLADE.training import TrainingConfig
    >>> TrainingConfig.from_preset("paper").optimiser.batch_size
    1
"""

from __future__ import annotations

_EXPORTS = {
    "TrainingConfig": "presets",
    "PRESETS": "presets",
    "LOSS_NAMES": "loss_terms",
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
