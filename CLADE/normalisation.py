"""Intensity normalisation to the generator's [-1, 1] range, and its exact inverse.

The paper is silent on normalisation; ours (method section 3): two reference intensities ``low``
and ``high`` are mapped to -1 and 1 linearly, values outside are clipped. ``low``/``high`` are
either robust percentiles of the volume (default 0.5 and 99.5, for MRI whose units are arbitrary)
or fixed values (e.g. a HU window for CT). The inverse maps [-1, 1] back to [low, high], so every
voxel that was inside the window comes back exactly (to float rounding) and the output keeps the
input's units.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .errors import CladeError


@dataclass(frozen=True)
class NormalisationRecipe:
    """How to choose the window: ``kind`` is ``"percentile"`` or ``"fixed"``.

    Example:
        >>> NormalisationRecipe().window(np.arange(1001.0))
        (5.0, 995.0)
    """

    kind: str = "percentile"
    low: float = 0.5
    high: float = 99.5

    def __post_init__(self) -> None:
        if self.kind not in ("percentile", "fixed"):
            raise CladeError(f"Unknown normalisation {self.kind!r}: use percentile or fixed.")
        if not self.low < self.high:
            raise CladeError(
                f"The normalisation window must have low < high, got {self.low} and {self.high}."
            )

    def window(self, volume: np.ndarray) -> tuple[float, float]:
        """The intensities mapped to -1 and 1 for ``volume``."""
        if self.kind == "fixed":
            return float(self.low), float(self.high)
        low, high = np.percentile(volume, [self.low, self.high])
        if not high > low:
            raise CladeError(
                "The volume is (nearly) constant, so there is no image to super-resolve: check "
                "the input."
            )
        return float(low), float(high)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, record: dict) -> NormalisationRecipe:
        return cls(kind=str(record["kind"]), low=float(record["low"]), high=float(record["high"]))


@dataclass(frozen=True)
class IntensityWindow:
    """A linear map of ``[low, high]`` onto ``[-1, 1]`` with clipping, and its inverse.

    Example:
        >>> w = IntensityWindow(0.0, 100.0)
        >>> w.normalise(np.array([0.0, 50.0, 200.0])).tolist()
        [-1.0, 0.0, 1.0]
        >>> w.denormalise(np.array([-1.0, 0.0, 1.0])).tolist()
        [0.0, 50.0, 100.0]
    """

    low: float
    high: float

    def normalise(self, values: np.ndarray) -> np.ndarray:
        scale = 2.0 / (self.high - self.low)
        out = (np.asarray(values, dtype=np.float32) - np.float32(self.low)) * np.float32(scale)
        out -= np.float32(1.0)
        return np.clip(out, -1.0, 1.0, out=out)

    def denormalise(self, values: np.ndarray) -> np.ndarray:
        half_range = np.float32((self.high - self.low) / 2.0)
        out = (np.asarray(values, dtype=np.float32) + np.float32(1.0)) * half_range
        out += np.float32(self.low)
        return out
