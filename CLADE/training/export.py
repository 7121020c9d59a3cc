"""What a run hands to users: ``G_X`` as CLADE model files, the best epoch chosen by validation.

After each epoch (rank 0 only) :meth:`Exporter.validate` scores ``G_X`` on the validation
volumes (:mod:`CLADE.training.validation`) and, when it beats the best epoch so far by the run's
metric, writes ``model_best.pt``; at the end :meth:`Exporter.save_final` writes
``model_final.pt``. Both carry the run's settings and the epoch in their metadata
(``training``), so a model file says how it was made.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path

from torch import nn

from ..model_file import make_metadata, save_model
from ..normalisation import NormalisationRecipe
from .events import EventWriter
from .presets import TrainingConfig
from .sampling import PatchBank
from .validation import ValidationSet, is_better, validate
from .write_errors import is_write_error, write_failure

FINAL_MODEL = "model_final.pt"
BEST_MODEL = "model_best.pt"


class Exporter:
    """Validation, best-model and final-model files of one run."""

    def __init__(
        self,
        out: Path,
        config: TrainingConfig,
        bank: PatchBank,
        validation: ValidationSet | None,
        metric: str | None,
        world_size: int,
        device: str,
    ) -> None:
        self.out, self.config, self.bank = out, config, bank
        self.validation, self.metric = validation, metric
        self.world_size, self.device = world_size, device

    def metadata(self, epoch: int, metrics: dict | None) -> dict:
        """Model-file metadata of ``G_X`` after ``epoch`` epochs."""
        c, a = self.config, self.config.architecture
        return make_metadata(
            self.out.name,
            c.export.modality,
            base_filters=a.base_filters,
            n_blocks=a.n_blocks,
            upsample=a.upsample,
            residual=a.residual,
            normalisation=NormalisationRecipe.from_dict(c.sampling.normalisation),
            default_stride=c.export.default_stride,
            trained=True,
            training={
                "config": c.to_dict(),
                "epoch": epoch,
                "validation": metrics,
                "best_metric": self.metric,
                "inputs": [Path(p).name for p in self.bank.volumes],
                "patches": {"x": len(self.bank.x), "y": len(self.bank.y)},
                "world_size": self.world_size,
            },
        )

    def validate(self, g_x: nn.Module, epoch: int, best: dict, log: EventWriter) -> dict:
        """Score ``G_X`` after ``epoch`` (1-based); update ``best`` and ``model_best.pt``."""
        began = time.monotonic()
        metrics = validate(
            copy.deepcopy(g_x).eval(), self.metadata(epoch, None), self.validation, self.device
        )
        log.emit("validation", epoch=epoch, metrics=metrics, seconds=time.monotonic() - began)
        value = metrics[self.metric]
        if is_better(self.metric, value, best["value"]):
            best.update(epoch=epoch, value=value)
            self._save(self.out / BEST_MODEL, g_x, self.metadata(epoch, metrics))
        return metrics

    def save_final(self, g_x: nn.Module, epoch: int, metrics: dict | None) -> Path:
        return self._save(self.out / FINAL_MODEL, g_x, self.metadata(epoch, metrics))

    def _save(self, path: Path, g_x: nn.Module, metadata: dict) -> Path:
        try:
            return save_model(path, g_x, metadata)
        except (OSError, RuntimeError) as error:
            if not is_write_error(error):
                raise
            needed = sum(p.numel() * p.element_size() for p in g_x.state_dict().values())
            raise write_failure(
                path, error, needed, "the previous file and the last checkpoint are kept"
            ) from None
