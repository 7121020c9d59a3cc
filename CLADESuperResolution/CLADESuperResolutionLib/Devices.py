"""The compute devices offered in the GUI and the PyTorch status, found without importing torch.

Importing torch in Slicer's own process freezes the GUI for 1-3 s and locks torch's files (a
reinstall then needs a restart), so a short worker process (:data:`PROBE_CODE`) imports it
instead and prints one JSON line; :func:`describeDevices` and :func:`describePackages` turn that
line into the texts shown next to the device list and in the *Packages* section.
"""

from __future__ import annotations

#: (value passed to the core, label) in the order shown; labels are completed by describeDevices.
DEVICE_VALUES = ("auto", "cpu", "cuda")

#: Run as ``python -c PROBE_CODE``: prints ``{"event": "devices", ...}`` on one line.
PROBE_CODE = """
import json
info = {"event": "devices", "torch": None, "cuda": None, "cuda_available": False}
try:
    import torch
except Exception as error:
    info["error"] = f"{type(error).__name__}: {error}"
else:
    info["torch"] = torch.__version__
    info["cuda"] = torch.version.cuda
    try:
        info["cuda_available"] = bool(torch.cuda.is_available())
        if info["cuda_available"]:
            properties = torch.cuda.get_device_properties(0)
            info["gpu"] = properties.name
            info["gpu_memory_gb"] = round(properties.total_memory / 1024 ** 3, 1)
    except Exception as error:
        info["error"] = f"{type(error).__name__}: {error}"
print(json.dumps(info), flush=True)
"""


def probeCommand(python: str) -> list[str]:
    """The command line of the probe worker."""
    return [python, "-c", PROBE_CODE]


def probeResult(events) -> dict | None:
    """The probe's ``devices`` event among a worker's events, or None."""
    for event in events:
        if event.get("event") == "devices":
            return event
    return None


def describeDevices(info: dict | None = None) -> dict[str, str]:
    """Labels for ``auto``, ``cpu`` and ``cuda`` from the probe's result (None: not probed).

    Example:
        >>> describeDevices(None)["cuda"]
        'CUDA GPU (detected once PyTorch is installed)'
        >>> describeDevices({"torch": "2.4.0", "cuda_available": True, "gpu": "RTX",
        ...                  "gpu_memory_gb": 8.0})["auto"]
        'Auto (GPU: RTX, 8.0 GB)'
    """
    labels = {"auto": "Auto (GPU if available)", "cpu": "CPU"}
    if not info or not info.get("torch"):
        labels["cuda"] = "CUDA GPU (detected once PyTorch is installed)"
        return labels
    if not info.get("cuda_available"):
        labels["auto"] = "Auto (CPU: no CUDA GPU found)"
        labels["cuda"] = "CUDA GPU (none found)"
        return labels
    gpu = f"{info.get('gpu', 'GPU')}, {float(info.get('gpu_memory_gb', 0.0)):.1f} GB"
    labels["auto"] = f"Auto (GPU: {gpu})"
    labels["cuda"] = f"CUDA GPU: {gpu}"
    return labels


def describePackages(info: dict | None, torchInstalled: bool) -> str:
    """One line on PyTorch and CUDA for the *Packages* section.

    Example:
        >>> describePackages({"torch": "2.13.0+cpu", "cuda": None}, True)
        'PyTorch 2.13.0+cpu, CPU-only build (no CUDA).'
        >>> describePackages(None, False)
        'PyTorch is not installed: it is installed on the first run.'
    """
    if not torchInstalled:
        return "PyTorch is not installed: it is installed on the first run."
    if info is None:
        return "PyTorch is installed (checking its version...)."
    if not info.get("torch"):
        return (
            f"PyTorch is installed but cannot be imported ({info.get('error', 'unknown error')})."
        )
    if not info.get("cuda"):
        return f"PyTorch {info['torch']}, CPU-only build (no CUDA)."
    gpu = (
        f"GPU {info.get('gpu')} ({float(info.get('gpu_memory_gb', 0.0)):.1f} GB)"
        if info.get("cuda_available")
        else "no usable GPU found"
    )
    return f"PyTorch {info['torch']} with CUDA {info['cuda']}: {gpu}."
