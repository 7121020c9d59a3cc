"""Small test doubles shared by the test files: networks with a known output."""

from __future__ import annotations

import torch
from torch import nn

from CLADE.model_file import LoadedModel, make_metadata
from CLADE.normalisation import NormalisationRecipe

#: A fixed window wide enough that test volumes are never clipped, so exact checks are possible.
WIDE_WINDOW = NormalisationRecipe("fixed", -5000.0, 5000.0)


class AddConstant(nn.Module):
    """A stand-in generator that adds ``value`` (in normalised units) to every pixel."""

    def __init__(self, value: float = 0.0) -> None:
        super().__init__()
        self.value = value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.value


def known_model(value: float = 0.0, stride: int = 12) -> LoadedModel:
    """Identity (value 0) or add-a-constant model with a window that never clips."""
    meta = make_metadata("known", "MR", normalisation=WIDE_WINDOW, default_stride=stride)
    return LoadedModel(AddConstant(value), meta)
