"""The inference engine: the generator over stacks of normalised LR-plane slices.

Two tilings of a slice stack ``(n, H, W)`` (thick axis along the rows, values in [-1, 1]):

* ``slices`` (ours, the default): whole slices, several per forward pass, padded to a multiple of
  4 and cut into tiles with a receptive-field halo only when a slice exceeds the memory budget
  (:mod:`CLADE.slice_tiles`). Every output pixel is computed once.
* ``patches`` (the paper's method, section 7): 32x32 patches at a stride, average-blended with
  torch ``fold`` (:mod:`CLADE.patches`).

Either can run with a geometric self-ensemble (``flips``: the mean over the four in-plane flips of
the slice, each flipped back; ``flips2``: identity and the left-right flip).

Everything for one stack happens on the device: the stack is copied there once (from pinned
memory on CUDA), cut, batched, run and reassembled there, and copied back once. A CUDA
out-of-memory error halves the batch (and, for whole slices, the tile size) and the run goes on,
saying so. The pipeline (:mod:`CLADE.pipeline`) feeds stacks slab by slab so memory stays bounded.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import torch

from .device import DeviceSettings, is_out_of_memory
from .errors import Cancelled, CladeError
from .model_file import LoadedModel
from .networks import fuse_for_inference
from .patches import SlicePatcher
from .slice_tiles import halo_for, pad_slices, padded_side, plan_tiles

log = logging.getLogger("CLADE")

#: Accepted tilings and ensembles (``auto`` is resolved by the pipeline).
TILINGS = ("slices", "patches")
ENSEMBLES = ("none", "flips2", "flips")

#: The flips of each ensemble, as tensor dimensions to flip of a ``(B, 1, H, W)`` batch.
_FLIPS = {"none": [()], "flips2": [(), (3,)], "flips": [(), (2,), (3,), (2, 3)]}


def ensemble_passes(ensemble: str) -> int:
    """Forward passes per input of an ensemble (1, 2 or 4).

    Example:
        >>> ensemble_passes("flips2")
        2
    """
    return len(_FLIPS[ensemble])


#: Pixels per forward pass on the CPU: oneDNN's throughput is flat beyond a few tens of
#: thousands of pixels, and ~1 MPixel keeps activations near 1 GB.
CPU_MAX_PIXELS = 1 << 20
CPU_BATCH_PIXELS = 1 << 16
#: Bytes of GPU memory one pixel of a forward pass needs, with margin (64 filters at full
#: resolution, a few live activations, float32 upper bound).
GPU_BYTES_PER_PIXEL = 4096


class GeneratorRunner:
    """``G_X`` on one device and precision, inference mode, with the chosen flip ensemble.

    Example:
        >>> from CLADE.device import resolve_device
        >>> from CLADE.model_file import LoadedModel, make_metadata, build_generator
        >>> meta = make_metadata("tiny", "MR", base_filters=4, n_blocks=1, trained=False)
        >>> runner = GeneratorRunner(LoadedModel(build_generator(meta), meta), resolve_device("cpu"))
        >>> runner(torch.zeros(2, 1, 32, 32)).shape
        torch.Size([2, 1, 32, 32])
    """

    def __init__(self, model: LoadedModel, settings: DeviceSettings, ensemble: str = "none"):
        if ensemble not in _FLIPS:
            raise CladeError(f"Unknown ensemble {ensemble!r}: use {', '.join(ENSEMBLES)}.")
        self.settings = settings
        self.flips = _FLIPS[ensemble]
        network = fuse_for_inference(model.generator).to(settings.device).eval()
        if settings.channels_last:
            network = network.to(memory_format=torch.channels_last)
        self.network = network
        self.n_blocks = int(model.metadata.get("architecture", {}).get("n_blocks", 9))

    @property
    def passes(self) -> int:
        """Forward passes per input (the ensemble size)."""
        return len(self.flips)

    @torch.inference_mode()
    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        outputs = [self._forward_flipped(batch, dims) for dims in self.flips]
        # Pairwise sums so that an ensemble of identical outputs averages back exactly.
        while len(outputs) > 1:
            outputs = [a + b for a, b in zip(outputs[0::2], outputs[1::2])]
        return outputs[0] / len(self.flips) if len(self.flips) > 1 else outputs[0]

    def _forward_flipped(self, batch: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
        x = torch.flip(batch, dims) if dims else batch
        if self.settings.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with self.settings.autocast():
            y = self.network(x).float()
        y = torch.flip(y, dims) if dims else y
        return y.contiguous()


class StackInference:
    """Runs a :class:`GeneratorRunner` over slice stacks with one tiling; progress and cancel.

    ``on_progress(done, total)`` is called after every forward batch in units of :attr:`unit`
    (pixels for whole slices, patches for patches); ``cancel()`` is polled before every batch.
    Call :meth:`plan` with every stack shape first so that ``total`` is known.
    """

    def __init__(
        self,
        runner: GeneratorRunner,
        tiling: str,
        stride: int = 12,
        batch_size: int | None = None,
        on_progress: Callable[[int, int], None] | None = None,
        cancel: Callable[[], bool] | None = None,
    ) -> None:
        if tiling not in TILINGS:
            raise CladeError(f"Unknown tiling {tiling!r}: use {', '.join(TILINGS)} (or auto).")
        self.runner = runner
        self.settings = runner.settings
        self.tiling = tiling
        self.stride = stride
        self.on_progress = on_progress
        self.cancel = cancel
        self.total = 0
        self.done = 0
        self.unit = "pixel" if tiling == "slices" else "patch"
        self._patchers: dict[tuple[int, int], SlicePatcher] = {}
        cuda = self.settings.device.type == "cuda"
        if tiling == "patches":
            self.batch_size = int(batch_size or self.settings.default_batch_size)
            self.max_pixels = 0
        else:
            budget = _gpu_pixel_budget(self.settings.device) if cuda else CPU_MAX_PIXELS
            self.max_pixels = budget
            # Slices per forward: an explicit --batch-size, else as many as fit the budget.
            self.batch_size = int(batch_size) if batch_size else 0
            self._batch_pixels = budget if cuda else CPU_BATCH_PIXELS
        if cuda:
            # Fixed slice shapes within a volume: let cuDNN pick the fastest algorithms once.
            torch.backends.cudnn.benchmark = True

    # -- planning -----------------------------------------------------------------------------

    def work(self, shape: tuple[int, int, int]) -> int:
        """Units of work for a stack of this shape (slices x pixels, or patches)."""
        n, height, width = shape
        if self.tiling == "slices":
            return n * height * width
        return n * self._patcher(height, width).patches_per_slice

    def plan(self, shape: tuple[int, int, int]) -> None:
        """Add a stack of this shape to the total work."""
        self.total += self.work(shape)

    # -- running ------------------------------------------------------------------------------

    def run(self, stack: np.ndarray) -> np.ndarray:
        """Run a normalised ``(n, H, W)`` float32 stack; returns the ``(n, H, W)`` output."""
        device = self.settings.device
        source = torch.from_numpy(np.ascontiguousarray(stack, dtype=np.float32))
        if device.type == "cuda":
            source = source.pin_memory().to(device, non_blocking=True)
        if self.tiling == "slices":
            result = self._run_slices(source)
        else:
            result = self._run_patches(source)
        return result.cpu().numpy()

    def _run_slices(self, stack: torch.Tensor) -> torch.Tensor:
        n, height, width = stack.shape
        out = torch.empty_like(stack)
        padded_h, padded_w = padded_side(height), padded_side(width)
        pixels = padded_h * padded_w
        first = 0
        while first < n:
            if pixels > self.max_pixels:
                self._run_tiled_slice(stack, out, first)
                first += 1
                continue
            per_batch = self.batch_size or max(1, self._batch_pixels // pixels)
            stop = min(n, first + per_batch)
            self._check_cancel()
            batch = pad_slices(stack[first:stop, None])
            result = self._attempt(batch)
            del batch
            if result is None:
                self._shrink(per_batch)
                continue
            out[first:stop] = result[:, 0, :height, :width]
            self._advance((stop - first) * height * width)
            first = stop
        return out

    def _run_tiled_slice(self, stack: torch.Tensor, out: torch.Tensor, index: int) -> None:
        height, width = stack.shape[1:]
        padded = pad_slices(stack[index : index + 1, None])
        tiles = plan_tiles(padded.shape[2], padded.shape[3], self.max_pixels, self._halo)
        done_before = self.done
        for tile in tiles:
            self._check_cancel()
            window = padded[:, :, tile.top : tile.bottom, tile.left : tile.right]
            result = self._attempt(window)
            if result is None:
                del padded, window
                self._shrink(1)
                self.done = done_before
                return self._run_tiled_slice(stack, out, index)  # again with smaller tiles
            core = result[
                0,
                0,
                tile.core_top - tile.top : tile.core_bottom - tile.top,
                tile.core_left - tile.left : tile.core_right - tile.left,
            ]
            rows = slice(tile.core_top, min(tile.core_bottom, height))
            cols = slice(tile.core_left, min(tile.core_right, width))
            out[index, rows, cols] = core[: rows.stop - rows.start, : cols.stop - cols.start]
            self._advance(max(0, rows.stop - rows.start) * max(0, cols.stop - cols.start))

    @property
    def _halo(self) -> int:
        return halo_for(self.runner.n_blocks)

    def _patcher(self, height: int, width: int) -> SlicePatcher:
        key = (height, width)
        if key not in self._patchers:
            self._patchers[key] = SlicePatcher(
                height, width, self.stride, device=self.settings.device
            )
        return self._patchers[key]

    def _run_patches(self, stack: torch.Tensor) -> torch.Tensor:
        n, height, width = stack.shape
        patcher = self._patcher(height, width)
        out = torch.empty_like(stack)
        # Slices per chunk so that a chunk holds about 8,192 patches: bounded memory whatever
        # the stride, and patches from several slices share a batch.
        per_chunk = max(1, 8192 // patcher.patches_per_slice)
        for first in range(0, n, per_chunk):
            slices = stack[first : first + per_chunk]
            patches = patcher.extract(slices)
            outputs = torch.empty_like(patches)
            start = 0
            while start < patches.shape[0]:
                self._check_cancel()
                stop = min(start + self.batch_size, patches.shape[0])
                result = self._attempt(patches[start:stop])
                if result is None:
                    self._shrink(self.batch_size)
                    continue
                outputs[start:stop] = result
                self._advance(stop - start)
                start = stop
            out[first : first + slices.shape[0]] = patcher.blend(outputs, slices.shape[0])
        return out

    # -- bookkeeping --------------------------------------------------------------------------

    def _advance(self, units: int) -> None:
        self.done += units
        if self.on_progress is not None:
            self.on_progress(self.done, self.total)

    def _check_cancel(self) -> None:
        if self.cancel is not None and self.cancel():
            raise Cancelled()

    def _attempt(self, batch: torch.Tensor) -> torch.Tensor | None:
        """The runner's output, or None after an out-of-memory error (other errors propagate).

        The caller shrinks outside the ``except`` block: while it runs, the traceback still
        holds the failed pass's tensors, so ``empty_cache`` there could not return them.
        """
        try:
            return self.runner(batch)
        except RuntimeError as error:
            if not is_out_of_memory(error):
                raise
        return None

    def _shrink(self, current: int) -> None:
        """After an out-of-memory error: halve the batch (or the tile budget) or give up."""
        if self.settings.device.type == "cuda":
            torch.cuda.empty_cache()
        if self.tiling == "patches" or current > 1:
            if current <= 1:
                raise CladeError(
                    "The GPU ran out of memory even with one patch per batch: close other GPU "
                    "programs or use --device cpu."
                )
            self.batch_size = max(1, current // 2)
            if self.tiling == "slices":
                self._batch_pixels = max(1, self._batch_pixels // 2)
            log.warning("GPU out of memory: continuing with batch size %d.", self.batch_size)
            return
        if self.max_pixels <= 64 * 64:
            raise CladeError(
                "The GPU ran out of memory even on small tiles: close other GPU programs or use "
                "--device cpu."
            )
        self.max_pixels //= 2
        self._batch_pixels = min(self._batch_pixels, self.max_pixels)
        log.warning(
            "GPU out of memory: continuing with tiles of at most %d pixels.", self.max_pixels
        )


def _gpu_pixel_budget(device: torch.device) -> int:
    """Pixels per forward pass that fit in half of the GPU's free memory."""
    free, _ = torch.cuda.mem_get_info(device)
    return max(64 * 64, int(free * 0.5 // GPU_BYTES_PER_PIXEL))
