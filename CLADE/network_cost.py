"""What a :class:`CLADE.networks.ResnetGenerator` costs per output voxel, from its architecture
alone (no torch), for ``clade models`` and the model cards (issue 27)."""

from __future__ import annotations


def generator_flops_per_voxel(architecture: dict) -> int:
    """Floating-point operations of one :class:`ResnetGenerator` pass per output pixel.

    Counted from the architecture (``base_filters``, ``n_blocks``, ``upsample``; one input and
    one output channel) as two operations per multiply-accumulate of every convolution, the way
    torch's ``FlopCounterMode`` counts them; activations, padding and biases are left out (under
    1%). A voxel of a run costs this once per LR plane the run infers. Why from the architecture
    rather than by running ``FlopCounterMode``: ``clade models`` and the Slicer module list models
    without building networks or importing torch (``Testing/test_distillation.py`` checks the
    count against ``FlopCounterMode``).

    Example:
        >>> generator_flops_per_voxel({"base_filters": 64, "n_blocks": 6, "upsample": "transpose"})
        1044736
    """
    f, blocks = int(architecture["base_filters"]), int(architecture["n_blocks"])

    def conv(kernel: int, c_in: int, c_out: int, pixels_per_output: float) -> float:
        # pixels_per_output: the layer's input pixels (transposed) or output pixels, per
        # full-resolution output pixel.
        return 2.0 * kernel * kernel * c_in * c_out * pixels_per_output

    flops = conv(7, 1, f, 1) + conv(3, f, 2 * f, 1 / 4) + conv(3, 2 * f, 4 * f, 1 / 16)
    flops += 2 * blocks * conv(3, 4 * f, 4 * f, 1 / 16)
    if architecture.get("upsample", "transpose") == "transpose":  # counted on its input pixels
        flops += conv(3, 4 * f, 2 * f, 1 / 16) + conv(3, 2 * f, f, 1 / 4)
    else:  # nearest x2, then a 3x3 convolution at the new resolution
        flops += conv(3, 4 * f, 2 * f, 1 / 4) + conv(3, 2 * f, f, 1)
    flops += conv(7, f, 1, 1)
    return int(round(flops))
