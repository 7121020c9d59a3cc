"""The size of a super-resolution run, known before it starts, and the bounds it must respect.

A thick-slice volume can ask for far more than it looks: a 512x512 CT of 83 slices at 50 mm
becomes 512x512x5929 voxels at 0.7 mm (1.6 G voxels, 6.2 GB of float32) and hours of network
time on a CPU. The pipeline estimates the output and its memory first, says so, and refuses a run
whose memory would not fit in what the machine has free (rather than swapping for hours or being
killed half-way), warning past a size where the run will be long.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from .errors import CladeError
from .geometry import IsotropicGrid, isotropic_grid

#: Float32 output-sized arrays held at the peak: the resampled/output array and the final image
#: (one more when two planes are averaged), plus a slab's working set.
PEAK_COPIES = {1: 2.2, 2: 3.2}
#: Output voxels past which a warning says the run will be long (~1 GB of float32).
WARN_VOXELS = 256 * 1024 * 1024


def available_memory_bytes() -> int | None:
    """Memory the system could give this process now (Linux ``MemAvailable``), or None.

    Example:
        >>> value = available_memory_bytes()
        >>> value is None or value > 0
        True
    """
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


@dataclass(frozen=True)
class WorkEstimate:
    """What a run will produce and hold in memory."""

    grid: IsotropicGrid
    planes: int
    adapt_steps: int

    @property
    def output_size(self) -> tuple[int, int, int]:
        return self.grid.size

    @property
    def output_spacing(self) -> tuple[float, float, float]:
        return self.grid.spacing

    @property
    def output_voxels(self) -> int:
        return int(np.prod(self.grid.size, dtype=np.int64))

    @property
    def peak_bytes(self) -> int:
        return int(self.output_voxels * 4 * PEAK_COPIES[min(self.planes, 2)])

    def describe(self) -> str:
        """One line, e.g. ``output 185x330x126 voxels (7.7 M, 31 MB float32), peak ~68 MB``."""
        size = "x".join(map(str, self.grid.size))
        return (
            f"output {size} voxels ({self.output_voxels / 1e6:.1f} M, "
            f"{_bytes(self.output_voxels * 4)} float32), peak memory ~{_bytes(self.peak_bytes)}"
        )

    def check(self, log: logging.Logger, available: int | None = None) -> None:
        """Refuse a run whose peak memory exceeds what is free; warn before a very large one."""
        available = available_memory_bytes() if available is None else available
        if available is not None and self.peak_bytes > available:
            raise CladeError(
                f"This run needs about {_bytes(self.peak_bytes)} of memory "
                f"({self.describe()}) but only {_bytes(available)} is free: crop the volume, "
                "super-resolve a region, or use a machine with more memory."
            )
        if self.output_voxels > WARN_VOXELS:
            log.warning(
                "This is a large run: %s; expect it to take a long time (the progress shows an "
                "ETA once the first batch is done).",
                self.describe(),
            )
        else:
            log.info("Work: %s.", self.describe())


def estimate_work(
    image: sitk.Image, thick_axis: int, planes: int = 1, adapt_steps: int = 0
) -> WorkEstimate:
    """The :class:`WorkEstimate` of super-resolving ``image`` along ``thick_axis``.

    Example:
        >>> img = sitk.Image([512, 512, 83], sitk.sitkInt16)
        >>> img.SetSpacing((0.7, 0.7, 50.0))
        >>> work = estimate_work(img, 2)
        >>> work.output_size, round(work.output_voxels / 1e9, 2)
        ((512, 512, 5929), 1.55)
    """
    return WorkEstimate(isotropic_grid(image, thick_axis), planes, adapt_steps)


def _bytes(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if count < 1000 or unit == "TB":
            return f"{count:.0f} {unit}" if unit in ("B", "KB") else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} TB"
