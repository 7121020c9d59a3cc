"""The module's choices as enums: their values are the core's option names.

The parameter node (``CLADESuperResolution.py``) stores each as its member name and Slicer's
combo-box connector lists the members in order, labelled by ``label()``. Plain Python: a test
checks the values against the core's.
"""

import enum


class LRPlane(enum.Enum):
    """Low-resolution plane the network runs in (values are the core's names)."""

    AUTO = "auto"
    BOTH = "both"
    SAGITTAL = "sagittal"
    CORONAL = "coronal"
    AXIAL = "axial"

    def label(self):
        return {"auto": "Auto (sagittal when possible)", "both": "Both LR planes (average)"}.get(
            self.value, self.value.capitalize()
        )


class Device(enum.Enum):
    """Compute device (values are the core's names)."""

    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"

    def label(self):
        return {"auto": "Auto", "cpu": "CPU", "cuda": "CUDA GPU"}[self.value]


class Tiling(enum.Enum):
    """How the network covers each slice (values are the core's names)."""

    AUTO = "auto"
    SLICES = "slices"
    PATCHES = "patches"

    def label(self):
        return {
            "auto": "Auto (model default)",
            "slices": "Whole slices (fast)",
            "patches": "Overlapping patches (paper)",
        }[self.value]


class Ensemble(enum.Enum):
    """Test-time ensemble (values are the core's names)."""

    AUTO = "auto"
    NONE = "none"
    FLIPS2 = "flips2"
    FLIPS = "flips"

    def label(self):
        return {
            "auto": "Auto (model default)",
            "none": "None",
            "flips2": "Left-right flip (mean of 2)",
            "flips": "In-plane flips (mean of 4)",
        }[self.value]


class Precision(enum.Enum):
    """Arithmetic of the network (values are the core's names)."""

    AUTO = "auto"
    FLOAT32 = "float32"
    BFLOAT16 = "bfloat16"

    def label(self):
        return {
            "auto": "Auto (bfloat16 where supported)",
            "float32": "float32",
            "bfloat16": "bfloat16",
        }[self.value]


class Preset(enum.Enum):
    """Training preset (values are the core's names)."""

    MRI = "mri"
    CT = "ct"

    def label(self):
        return self.name


class StartFrom(enum.Enum):
    """Where a training run starts: random weights, or a shipped model to fine-tune."""

    NEW = "new"
    MRI = "mri"
    CT = "ct"

    def label(self):
        if self is StartFrom.NEW:
            return "New model (random weights)"
        return f"Fine-tune the shipped {self.value} model"

    @property
    def initModel(self):
        """The ``--init-model`` value ("" for a new model)."""
        return "" if self is StartFrom.NEW else self.value
