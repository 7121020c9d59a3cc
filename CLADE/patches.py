"""Strided 32x32 patches of 2D slices, and average blending back (method section 7).

A slice of ``H x W`` pixels is padded at its far edges to ``Hp x Wp`` so that patches at stride
``s`` tile it exactly (``(Hp - 32) % s == 0``); the last patch in each direction therefore
reaches past the original border and every original pixel is covered. Slices smaller than the
patch are padded up to 32. Padding mirrors the image (reflection) so the network sees plausible
content, falling back to edge replication where the slice is too small to mirror.

Extraction and blending are torch ``unfold``/``fold``: per-pixel sums of the overlapping outputs
divided by the per-pixel number of patches covering it, all vectorised on the device.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

PATCH_SIZE = 32


def padded_length(length: int, stride: int, patch: int = PATCH_SIZE) -> int:
    """Smallest length >= ``length`` (and >= ``patch``) tiled exactly by patches at ``stride``.

    Example:
        >>> padded_length(100, 12), padded_length(20, 12), padded_length(104, 12)
        (104, 32, 104)
    """
    if length <= patch:
        return patch
    return patch + math.ceil((length - patch) / stride) * stride


class SlicePatcher:
    """Cut batches of equally sized slices into patches and blend patch outputs back.

    Example:
        >>> patcher = SlicePatcher(40, 50, stride=12)
        >>> slices = torch.rand(3, 40, 50)
        >>> patches = patcher.extract(slices)
        >>> patches.shape[0] == 3 * patcher.patches_per_slice
        True
        >>> torch.allclose(patcher.blend(patches, 3), slices)
        True
    """

    def __init__(
        self,
        height: int,
        width: int,
        stride: int,
        patch: int = PATCH_SIZE,
        device: torch.device | str = "cpu",
    ) -> None:
        if not 1 <= stride <= patch:
            raise ValueError(f"stride must be between 1 and {patch}, got {stride}")
        self.height, self.width = height, width
        self.stride, self.patch = stride, patch
        self.padded = (padded_length(height, stride, patch), padded_length(width, stride, patch))
        rows = (self.padded[0] - patch) // stride + 1
        cols = (self.padded[1] - patch) // stride + 1
        self.patches_per_slice = rows * cols
        ones = torch.ones(1, patch * patch, self.patches_per_slice, device=device)
        self._counts = self._fold(ones)

    def _fold(self, columns: torch.Tensor) -> torch.Tensor:
        return F.fold(columns, self.padded, self.patch, stride=self.stride)

    def extract(self, slices: torch.Tensor) -> torch.Tensor:
        """``(B, H, W)`` slices to ``(B * patches_per_slice, 1, 32, 32)`` patches, slice-major."""
        batch = slices.shape[0]
        x = self._pad(slices.unsqueeze(1))
        columns = F.unfold(x, self.patch, stride=self.stride)  # (B, 32*32, L)
        return columns.transpose(1, 2).reshape(
            batch * self.patches_per_slice, 1, self.patch, self.patch
        )

    def blend(self, patches: torch.Tensor, batch: int) -> torch.Tensor:
        """Average-blend patch outputs (as returned by :meth:`extract`) into ``(B, H, W)``."""
        columns = patches.reshape(batch, self.patches_per_slice, -1).transpose(1, 2)
        summed = self._fold(columns.to(self._counts.dtype))
        return (summed / self._counts)[:, 0, : self.height, : self.width]

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        pad_h = self.padded[0] - self.height
        pad_w = self.padded[1] - self.width
        if pad_h == 0 and pad_w == 0:
            return x
        # Reflection needs the pad to be shorter than the side it mirrors.
        mode = "reflect" if pad_h < self.height and pad_w < self.width else "replicate"
        return F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
