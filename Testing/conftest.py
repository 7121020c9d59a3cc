"""Shared pytest fixtures: the real data in ../shared/data, tiny model files, small volumes."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("CLADE_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder of real CT/MR volumes (read-only); tests must never write there."""
    if not SHARED_DATA.is_dir():
        pytest.fail(f"The real test volumes are missing: expected them in {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory) -> Path:
    """A random-weight model file with a tiny generator (plumbing tests only)."""
    import torch

    from CLADE.model_file import build_generator, make_metadata, save_model

    torch.manual_seed(0)
    metadata = make_metadata(
        "tiny", "MR", base_filters=4, n_blocks=1, trained=False, default_stride=16
    )
    path = tmp_path_factory.mktemp("models") / "tiny.pt"
    return save_model(path, build_generator(metadata), metadata)


def make_volume(
    size=(40, 36, 8),
    spacing=(1.0, 1.0, 4.0),
    origin=(0.0, 0.0, 0.0),
    direction=None,
    seed=0,
    dtype=np.float32,
) -> sitk.Image:
    """A smooth random volume (SimpleITK size order x, y, z) with the given geometry."""
    rng = np.random.default_rng(seed)
    array = rng.normal(size=size[::-1]).astype(np.float32)
    from scipy.ndimage import gaussian_filter

    array = (gaussian_filter(array, 1.5) * 400 + 100).astype(dtype)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    if direction is not None:
        image.SetDirection(direction)
    return image


@pytest.fixture
def python_exe() -> str:
    """The interpreter running the tests (subprocess tests use it to run ``-m CLADE``)."""
    return sys.executable
