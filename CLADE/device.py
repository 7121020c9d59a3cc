"""Choosing the compute device and the settings that make it fast.

CUDA when there is one, the CPU otherwise. Precision (``auto``, ``float32``, ``bfloat16``):
``auto`` runs the generator under bfloat16 autocast where the hardware has fast bfloat16 (CUDA
GPUs that support it, float16 on older ones; CPUs whose PyTorch reports AVX512-BF16 or AMX
tiles, where oneDNN then uses those instructions), float32 otherwise. Both use the channels_last
memory layout. The CPU features are asked of PyTorch at run time: the machines CLADE runs on
differ (an Intel Xeon with AMX beside an AMD EPYC with AVX512-BF16 beside a laptop with neither).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from .errors import CladeError


@dataclass(frozen=True)
class DeviceSettings:
    """Where and how to run the generator."""

    device: torch.device
    autocast_dtype: torch.dtype | None
    channels_last: bool
    default_batch_size: int

    @property
    def precision(self) -> str:
        """``float32``, ``bfloat16`` or ``float16``: what the generator's convolutions run in."""
        if self.autocast_dtype is None:
            return "float32"
        return str(self.autocast_dtype).replace("torch.", "")

    @property
    def description(self) -> str:
        """Human-readable device name, e.g. ``cpu`` or ``cuda:0 (NVIDIA A100, 40.0 GB)``."""
        if self.device.type != "cuda":
            return "cpu"
        props = torch.cuda.get_device_properties(self.device)
        return f"{self.device} ({props.name}, {props.total_memory / 1e9:.1f} GB)"

    def autocast(self):
        """Context manager enabling mixed precision where it applies."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)


#: Accepted values of ``precision``.
PRECISIONS = ("auto", "float32", "bfloat16")


def cpu_has_fast_bfloat16() -> bool:
    """True when this CPU has bfloat16 instructions PyTorch's oneDNN kernels use (AVX512-BF16
    or AMX tiles), as PyTorch itself reports them.

    Example:
        >>> isinstance(cpu_has_fast_bfloat16(), bool)
        True
    """
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    # Private helpers of torch.cpu (present since torch 2.3); without them assume no bfloat16.
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def resolve_device(name: str = "auto", precision: str = "float32") -> DeviceSettings:
    """Turn ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` and a precision into :class:`DeviceSettings`.

    ``precision`` is ``auto`` (bfloat16 where the hardware is fast at it, see the module
    docstring), ``float32`` or ``bfloat16`` (a :class:`CladeError` where unsupported). The
    default, float32, is what training and adaptation use.

    Example:
        >>> resolve_device("cpu").device, resolve_device("cpu").precision
        (device(type='cpu'), 'float32')
    """
    precision = (precision or "auto").lower()
    if precision not in PRECISIONS:
        raise CladeError(f"Unknown precision {precision!r}: use {', '.join(PRECISIONS)}.")
    name = (name or "auto").lower()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise CladeError(
                "CUDA was requested but no CUDA GPU is available to PyTorch: use --device cpu "
                "or auto."
            )
        device = torch.device(name)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise CladeError(
                f"There is no GPU {device.index}: this machine has {torch.cuda.device_count()}."
            )
        bf16 = torch.cuda.is_bf16_supported()
        if precision == "bfloat16" and not bf16:
            raise CladeError(
                f"GPU {device} does not support bfloat16: use --precision auto or float32."
            )
        dtype = {
            "auto": torch.bfloat16 if bf16 else torch.float16,
            "bfloat16": torch.bfloat16,
            "float32": None,
        }[precision]
        return DeviceSettings(device, dtype, channels_last=True, default_batch_size=1024)
    if name != "cpu":
        raise CladeError(f"Unknown device {name!r}: use auto, cpu or cuda.")
    fast_bf16 = cpu_has_fast_bfloat16()
    if precision == "bfloat16" and not fast_bf16:
        raise CladeError(
            "This CPU has no bfloat16 instructions (AVX512-BF16 or AMX) that PyTorch can use, so "
            "bfloat16 would be slower, not faster: use --precision auto or float32."
        )
    use_bf16 = precision == "bfloat16" or (precision == "auto" and fast_bf16)
    # On CPU, channels_last runs the convolutions ~1.3-1.5x faster (oneDNN's preferred layout;
    # measured side by side on 2 cores) and throughput is flat beyond a few dozen patches per
    # batch, so small batches keep memory low and cancel responsive.
    dtype = torch.bfloat16 if use_bf16 else None
    return DeviceSettings(torch.device("cpu"), dtype, channels_last=True, default_batch_size=64)


def is_out_of_memory(error: BaseException) -> bool:
    """True for a CUDA out-of-memory error (its class changed across torch versions)."""
    oom = getattr(torch.cuda, "OutOfMemoryError", None)
    if oom is not None and isinstance(error, oom):
        return True
    return isinstance(error, RuntimeError) and "out of memory" in str(error)
