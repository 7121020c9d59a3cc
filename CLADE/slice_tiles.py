"""Whole-slice inference geometry: padding a slice for the generator, and tiles with a halo.

CLADE's generator has no normalisation statistics (weight demodulation instead of instance
norm), so running it on a whole LR-plane slice computes what one huge patch would, without the
paper's overlapping 32x32 patches (which compute every pixel ~5.8 times at stride 12).

* **Padding.** The generator halves the resolution twice, so a slice is padded at its far edges
  (bottom, right) to a multiple of :data:`MULTIPLE` pixels by reflection (edge replication where a
  side is too short to mirror), and the output cropped back.
* **Tiles.** A padded slice larger than the memory budget is cut into tiles: each tile's *core*
  is written to the output, and it is computed from the core plus a *halo* of context on every
  side, clipped at the slice's own edges (so a border tile sees the very border the whole slice
  would). The halo is at least the generator's receptive-field radius
  (:func:`receptive_field_radius`), so a core pixel sees exactly the input it would see in the
  whole slice. Tile origins, cores and halos are multiples of :data:`MULTIPLE`, so the stride-2
  convolutions sample the same pixels as in the whole slice: tiled equals whole-slice to float
  rounding (tested).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

#: The generator downsamples twice by 2: slice sides and tile positions are multiples of this.
MULTIPLE = 4


def padded_side(length: int) -> int:
    """``length`` rounded up to a multiple of :data:`MULTIPLE` (at least one multiple).

    Example:
        >>> padded_side(126), padded_side(128), padded_side(1)
        (128, 128, 4)
    """
    return max(MULTIPLE, math.ceil(length / MULTIPLE) * MULTIPLE)


def pad_slices(slices: torch.Tensor) -> torch.Tensor:
    """Pad ``(B, 1, H, W)`` at the bottom and right to multiples of :data:`MULTIPLE`.

    Example:
        >>> pad_slices(torch.zeros(2, 1, 126, 30)).shape
        torch.Size([2, 1, 128, 32])
    """
    height, width = slices.shape[-2:]
    pad_h, pad_w = padded_side(height) - height, padded_side(width) - width
    if pad_h == 0 and pad_w == 0:
        return slices
    # Reflection needs the pad to be shorter than the side it mirrors.
    mode = "reflect" if pad_h < height and pad_w < width else "replicate"
    return F.pad(slices, (0, pad_w, 0, pad_h), mode=mode)


def receptive_field_radius(n_blocks: int) -> int:
    """Pixels of context on each side that one output pixel of the generator depends on.

    From the architecture (:class:`CLADE.networks.ResnetGenerator`): 7x7 input and output
    convolutions (3 each), two stride-2 3x3 downsamplings (1 + 2), ``n_blocks`` residual blocks
    of two 3x3 convolutions at quarter resolution (8 each), two 3x3 convolutions after the
    upsamplings (2 + 1), and the upsamplings' own rounding to the coarser grid (2 + 1).

    Example:
        >>> receptive_field_radius(6)
        63
    """
    return 3 + 1 + 2 + 8 * n_blocks + 2 + 1 + 2 + 1 + 3


def halo_for(n_blocks: int) -> int:
    """The halo used for tiles: the receptive-field radius rounded up to :data:`MULTIPLE`.

    Example:
        >>> halo_for(6), halo_for(1)
        (64, 24)
    """
    return padded_side(receptive_field_radius(n_blocks))


@dataclass(frozen=True)
class Tile:
    """One tile of a padded slice: the input window ``[top:bottom, left:right]`` and, inside it,
    the core written to the output (``core_*`` in slice coordinates)."""

    top: int
    bottom: int
    left: int
    right: int
    core_top: int
    core_bottom: int
    core_left: int
    core_right: int


def plan_tiles(height: int, width: int, max_pixels: int, halo: int) -> list[Tile]:
    """Tiles covering a padded ``height x width`` slice whose input windows have at most about
    ``max_pixels`` pixels; one tile (the whole slice) when it fits.

    ``height`` and ``width`` must be multiples of :data:`MULTIPLE`. Cores tile the slice exactly,
    without overlap.

    Example:
        >>> len(plan_tiles(128, 332 // 4 * 4, 10**6, 60))
        1
        >>> tiles = plan_tiles(512, 512, 256 * 256, 64)
        >>> sum((t.core_bottom - t.core_top) * (t.core_right - t.core_left) for t in tiles)
        262144
    """
    if height % MULTIPLE or width % MULTIPLE:
        raise ValueError(f"padded sides must be multiples of {MULTIPLE}, got {height}x{width}")
    if height * width <= max_pixels:
        return [Tile(0, height, 0, width, 0, height, 0, width)]
    # Square-ish cores: the largest core side c with (c + 2 halo)^2 <= max_pixels, at least
    # one MULTIPLE, so the halo costs what it must and no more.
    side = max(MULTIPLE, (int(math.isqrt(max_pixels)) - 2 * halo) // MULTIPLE * MULTIPLE)
    rows = _cores(height, side)
    cols = _cores(width, side)
    tiles = []
    for core_top, core_bottom in rows:
        for core_left, core_right in cols:
            tiles.append(
                Tile(
                    max(0, core_top - halo),
                    min(height, core_bottom + halo),
                    max(0, core_left - halo),
                    min(width, core_right + halo),
                    core_top,
                    core_bottom,
                    core_left,
                    core_right,
                )
            )
    return tiles


def _cores(length: int, side: int) -> list[tuple[int, int]]:
    """Split ``[0, length)`` into near-equal runs of multiples of MULTIPLE, each <= ``side``."""
    count = math.ceil(length / side)
    units = length // MULTIPLE
    bounds = [round(units * i / count) * MULTIPLE for i in range(count + 1)]
    return [(a, b) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
