"""The compute devices offered in the GUI, with the GPU's name and memory when there is one."""

from __future__ import annotations

#: (value passed to the core, label) in the order shown; labels are completed by describeDevices.
DEVICE_VALUES = ("auto", "cpu", "cuda")


def describeDevices(torchModule=None) -> dict[str, str]:
    """Labels for ``auto``, ``cpu`` and ``cuda``; ``torchModule`` is None when torch is missing.

    Example:
        >>> describeDevices(None)["cuda"]
        'CUDA GPU (detected once PyTorch is installed)'
    """
    labels = {"auto": "Auto (GPU if available)", "cpu": "CPU"}
    if torchModule is None:
        labels["cuda"] = "CUDA GPU (detected once PyTorch is installed)"
        return labels
    try:
        available = bool(torchModule.cuda.is_available())
    except Exception:
        available = False
    if not available:
        labels["auto"] = "Auto (CPU: no CUDA GPU found)"
        labels["cuda"] = "CUDA GPU (none found)"
        return labels
    properties = torchModule.cuda.get_device_properties(0)
    gpu = f"{properties.name}, {properties.total_memory / 1024 ** 3:.1f} GB"
    labels["auto"] = f"Auto (GPU: {gpu})"
    labels["cuda"] = f"CUDA GPU: {gpu}"
    return labels
