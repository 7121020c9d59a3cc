"""CLADE: unpaired super-resolution of anisotropic 3D MRI and CT (Pascale et al.).

The pure-Python core (torch, numpy, scipy, SimpleITK; no Slicer, no Qt). Typical use::

    import CLADE
    image = CLADE.read_volume("thick.nii.gz")
    result = CLADE.super_resolve(image, CLADE.resolve_model("mri"))
    CLADE.write_volume(result.image, "iso.nii.gz")
"""

__version__ = "0.1.0"

from .errors import Cancelled, CladeError  # noqa: E402
from .volume_io import read_volume, write_volume  # noqa: E402

__all__ = ["Cancelled", "CladeError", "__version__", "read_volume", "write_volume"]


def __getattr__(name):
    # torch-dependent parts load lazily so `clade --version` and the metrics stay quick to import.
    if name in ("super_resolve", "SuperResolutionResult", "SuperResolutionRequest", "run"):
        from . import pipeline

        return getattr(pipeline, name)
    if name in ("resolve_model", "load_model", "save_model"):
        from . import model_file, registry

        return getattr(registry if name == "resolve_model" else model_file, name)
    raise AttributeError(f"module 'CLADE' has no attribute {name!r}")
