"""Shared pytest fixtures (the real volumes in Testing/data, tiny model files, small volumes) and
the markers every test gets from its file name, so a quick run is one ``-m`` away::

    python -m pytest -m "not slow and not training"     # core and CLI, without the real models
    python -m pytest -m training                         # the training runs
    python -m pytest -m "not slicer"                     # without the Slicer module's tests

``slicer``: files ``test_slicer_*``; ``training``: files ``test_training_*``; ``slow``: marked in
the test file (the shipped models end to end); ``gpu``: tests marked ``gpu`` or in files
``test_gpu_*``, skipped where torch sees no CUDA device.

Tests read nothing outside the repository: real volumes from ``Testing/data`` (``test_data``),
the shipped sample (``SAMPLE_VOLUME``), synthetic ones (``make_volume``). They run on one thread
(``pytest_configure``), the real-model tests on every core (``all_cores``).
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

REPO_ROOT = Path(__file__).resolve().parents[1]
#: Real CT/MR volumes, cropped to what the tests need (licenses and sources in its README.md).
TEST_DATA = REPO_ROOT / "Testing" / "data"
#: The shipped sample (a real thick-slice pelvic T2 MRI, 160x160x14).
SAMPLE_VOLUME = REPO_ROOT / "CLADE" / "sample_data" / "pelvis_t2_thick.nii.gz"
BRAIN1 = "mr_brain1_t1gd_pyradiomics_crop.nrrd"
BRAIN2 = "mr_brain2_t1gd_pyradiomics_crop.nrrd"
CT_NATIVE = "abdomen_ct_native_totalseg_crop.nii.gz"
CT_ISO = "abdomen_ct_3mm_iso_totalseg_crop.nii.gz"
MR_ISO = "abdomen_mr_3mm_iso_totalseg.nii.gz"
PELVIS = "pelvis_mr_t2_monai_crop.nii.gz"


@pytest.fixture(scope="session")
def test_data() -> Path:
    """The folder of real CT/MR volumes in the repository (read-only); tests never write there."""
    return TEST_DATA


@pytest.fixture(scope="session")
def brain_crop(tmp_path_factory) -> Path:
    """A 64x64x8 crop of a real T1 brain (6.5 mm slices): a training set tiny networks learn from
    in seconds."""
    path = tmp_path_factory.mktemp("brain-crop") / "train.nrrd"
    sitk.WriteImage(sitk.ReadImage(str(TEST_DATA / BRAIN1))[16:80, 16:80, 8:16], str(path))
    return path


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


def run_python(*args, timeout: float = 600, **options) -> subprocess.CompletedProcess:
    """``python ARGS...`` (this interpreter) as a real subprocess, output captured as UTF-8 text;
    ``options`` go to ``subprocess.run`` (``env``, ``cwd``, ``preexec_fn``...)."""
    return subprocess.run(
        [sys.executable, *map(str, args)],
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=timeout,
        **options,
    )


def run_clade(*args, timeout: float = 600, **options) -> subprocess.CompletedProcess:
    """``python -m CLADE ARGS...`` as a real subprocess (see ``run_python``)."""
    return run_python("-m", "CLADE", *args, timeout=timeout, **options)


def clade_in_process(*args) -> subprocess.CompletedProcess:
    """``clade ARGS...`` run by ``CLADE.cli.main.main`` in this process, answered as
    ``run_clade`` answers: the exit code, stdout and stderr (Python's and, first, what C
    libraries such as ITK wrote to file descriptor 2). It saves the ~2.5 s a new interpreter
    spends importing torch, for the many tests of what a command answers to bad input; the
    process boundary itself (exit status, ``python -m CLADE``, the console script, signals) has
    its own subprocess tests."""
    from CLADE.cli.main import main

    argv = [str(a) for a in args]
    out, err = io.StringIO(), io.StringIO()
    with tempfile.TemporaryFile() as native:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(native.fileno(), 2)
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                try:
                    code = main(argv)
                except SystemExit as done:  # argparse's errors and --help
                    code = done.code if isinstance(done.code, int) else int(done.code is not None)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        native.seek(0)
        stderr = native.read().decode("utf-8", "replace") + err.getvalue()
    return subprocess.CompletedProcess(["clade", *argv], code, out.getvalue(), stderr)


@pytest.fixture
def scene():
    """A fresh slicer-core MRML scene as ``slicer.mrmlScene``, cleared after the test."""
    slicer = pytest.importorskip("slicer")
    slicer.mrmlScene = slicer.vtkMRMLScene()
    yield slicer.mrmlScene
    slicer.mrmlScene.Clear(1)


@pytest.fixture
def python_exe() -> str:
    """The interpreter running the tests (subprocess tests use it to run ``-m CLADE``)."""
    return sys.executable


#: The cores this process may use (the real-model tests take them all, see ``all_cores``).
CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
#: pytest-xdist workers running tests side by side (the README's command: one per core).
WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))


def pytest_configure(config) -> None:
    # One thread for everything by default, subprocesses included (they inherit the variable):
    # the tiny networks of the plumbing tests gain nothing from a second thread, and on a busy
    # machine its synchronisation costs more than the work (a one-epoch tiny training: 2 s on
    # one thread, 26 s on two, measured with four other jobs on 2 cores). Results do not depend
    # on the thread count; the real-model tests use every core (``all_cores``).
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)


@pytest.fixture
def all_cores(monkeypatch) -> int:
    """Every core for this test, in this process and in the subprocesses it starts (the tests
    that run the real shipped models); one thread again afterwards. Beside other pytest-xdist
    workers it gets its share of the cores: two workers each running two OpenMP threads on two
    cores made the CT adaptation test 3.4x slower (88 s against 26 s), not faster."""
    import torch

    cores = max(1, CORES // WORKERS)
    before = torch.get_num_threads()
    torch.set_num_threads(cores)
    monkeypatch.setenv("OMP_NUM_THREADS", str(cores))
    monkeypatch.setenv("MKL_NUM_THREADS", str(cores))
    yield cores
    torch.set_num_threads(before)


#: Markers given by the test file's name (prefix -> marker).
_FILE_MARKERS = {"test_slicer_": "slicer", "test_training_": "training", "test_gpu_": "gpu"}


def pytest_collection_modifyitems(config, items) -> None:
    gpu_skip = None
    for item in items:
        name = item.path.name
        for prefix, marker in _FILE_MARKERS.items():
            if name.startswith(prefix):
                item.add_marker(getattr(pytest.mark, marker))
        if item.get_closest_marker("gpu") is not None:
            if gpu_skip is None:
                gpu_skip = _gpu_skip()
            if gpu_skip is not None:
                item.add_marker(gpu_skip)


def _gpu_skip():
    """A skip mark when torch sees no CUDA device (None when one is there)."""
    try:
        import torch
    except ImportError:
        return pytest.mark.skip(reason="needs torch with a CUDA GPU")
    if torch.cuda.is_available():
        return None
    return pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
