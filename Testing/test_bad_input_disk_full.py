"""Outputs on a full disk, and after a SIGKILL mid-write: nothing half-written, ever.

The full disk is real: a 256 KiB tmpfs mounted in a private user and mount namespace
(``unshare -rm``, no root needed), where ``clade simulate`` writes a volume that does not fit.
Where the kernel forbids unprivileged namespaces these tests are skipped, and the file-size limit
test (``RLIMIT_FSIZE``, a real short write through the same code path) still runs.

Before the fix: NIfTI printed ITK's ``NWAD: wrote only 0 of ... bytes``, then the success line,
exit 0, and left a truncated file in place of the good earlier output; NRRD and MetaImage errors
carried ITK's C++ file names; ``.mhd``/``.nhdr`` left a 0-byte header and partial data under the
final names; temporaries of a killed run stayed forever.
"""

from __future__ import annotations

import hashlib
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import run_clade, run_python

FORMATS = ["nii", "nii.gz", "nrrd", "mha", "mhd", "nhdr"]
#: The data file ITK writes beside each detached header (compressed, as CLADE writes).
COMPANION = {"mhd": "zraw", "nhdr": "raw.gz"}


def _volume(path: Path, size: int, seed: int) -> Path:
    # Random voxels do not compress: the output's size is known to exceed the tmpfs.
    rng = np.random.default_rng(seed)
    image = sitk.GetImageFromArray(rng.random((size, size, size)).astype(np.float32))
    sitk.WriteImage(image, str(path))
    return path


def _digest(folder: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def _simulate(source: Path, out: Path, *options, **kwargs) -> subprocess.CompletedProcess:
    """``clade simulate SOURCE OUT --thickness 2 OPTIONS...`` as a real subprocess."""
    return run_clade("simulate", source, out, "--thickness", "2", *options, timeout=120, **kwargs)


def _replace_on_a_full_disk(
    full: Path, earlier: Path, command: str, *args
) -> subprocess.CompletedProcess:
    """Inside a private user+mount namespace: mount a 256 KiB tmpfs on ``full``, put the good
    earlier output(s) of ``earlier`` on it, run the shell ``command`` that tries to replace them
    (``$1`` the tiny disk, ``$3`` this Python, ``$4``... ``args``), then report what the folder
    holds: ``rc=N`` and ``sha256sum`` lines on stdout."""
    script = (
        'mount -t tmpfs -o size=256k tmpfs "$1" && cp -p "$2"/* "$1"/ && '
        f'{command}; echo "rc=$?"; cd "$1" && sha256sum $(ls -A)'
    )
    return subprocess.run(
        ["unshare", "-rm", "sh", "-c", script, "sh", str(full), str(earlier), sys.executable]
        + [str(arg) for arg in args],
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=300,
    )


def _listed(stdout: str) -> dict:
    """File name -> digest, from the ``sha256sum`` lines of ``_replace_on_a_full_disk``."""
    return dict(reversed(line.split()) for line in stdout.splitlines() if "  " in line)


def _namespaces_work() -> bool:
    try:
        probe = subprocess.run(
            ["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt && df /mnt"],
            capture_output=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


needs_namespaces = pytest.mark.skipif(
    not _namespaces_work(), reason="unprivileged user+mount namespaces are not allowed here"
)


@needs_namespaces
@pytest.mark.parametrize("ext", FORMATS)
def test_full_disk_is_one_sentence_and_keeps_the_earlier_output(tmp_path, ext):
    small = _volume(tmp_path / "small.nrrd", 12, 0)
    big = _volume(tmp_path / "big.nrrd", 64, 1)
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    name = f"out.{ext}"
    done = _simulate(small, earlier / name, "--quiet")
    assert done.returncode == 0, done.stderr
    before = _digest(earlier)
    full = tmp_path / "full"
    full.mkdir()
    # Try to replace the good earlier output with one that does not fit on the tiny disk.
    result = _replace_on_a_full_disk(
        full, earlier, '"$3" -m CLADE simulate "$4" "$1/$5" --thickness 2', big, name
    )
    assert "rc=2" in result.stdout, (result.stdout, result.stderr)
    assert result.stderr.strip() == (
        f"clade: error: There is no space left on the device holding {full}: free some space "
        f"or choose another folder ({name} was not written; any earlier file of that name is "
        "unchanged)."
    )
    assert _listed(result.stdout) == before  # the earlier file (pair) untouched, no temporaries


def test_short_nifti_write_is_refused_not_published(tmp_path):
    # RLIMIT_FSIZE makes the kernel cut the write short (EFBIG, SIGXFSZ ignored), the way a full
    # disk does, on any machine: niftilib only prints NWAD and returns as if it succeeded.
    big = _volume(tmp_path / "big.nrrd", 48, 2)
    out = tmp_path / "out.nii"
    out.write_bytes(b"earlier result")

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (50_000, 50_000))

    result = _simulate(big, out, preexec_fn=limit)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith(f"clade: error: {out} could not be written completely (")
    assert "NWAD" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert out.read_bytes() == b"earlier result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.nrrd", "out.nii"]


_DIE_AFTER_WRITING = """
import os, runpy, signal, sys
import SimpleITK as sitk
real_write = sitk.WriteImage
def write_then_die(*args, **kwargs):
    real_write(*args, **kwargs)  # the temporary is on disk; the process dies before the rename
    os.kill(os.getpid(), signal.SIGKILL)
sitk.WriteImage = write_then_die
sys.argv = ["clade"] + sys.argv[1:]
runpy.run_module("CLADE", run_name="__main__")
"""


@pytest.mark.parametrize("ext", ["nii.gz", "mhd"])
def test_temporaries_of_a_killed_run_are_removed_by_the_next(tmp_path, ext):
    source = _volume(tmp_path / "iso.nrrd", 16, 3)
    out = tmp_path / "out" / f"sim.{ext}"
    out.parent.mkdir()
    wrapper = tmp_path / "die.py"
    wrapper.write_text(_DIE_AFTER_WRITING)
    command = ["simulate", str(source), str(out), "--thickness", "2", "--quiet"]
    killed = subprocess.run(
        [sys.executable, str(wrapper), *command], capture_output=True, timeout=120
    )
    assert killed.returncode == -signal.SIGKILL
    left = sorted(p.name for p in out.parent.iterdir())
    assert left and all(name.startswith(f".sim.{ext}.") for name in left)  # hidden, not final
    again = run_clade(*command, timeout=120)
    assert again.returncode == 0, again.stderr
    expected = [f"sim.{ext}"] + ([f"sim.{COMPANION[ext]}"] if ext in COMPANION else [])
    assert sorted(p.name for p in out.parent.iterdir()) == sorted(expected)
    assert sitk.ReadImage(str(out)).GetSize() == (16, 16, 8)


def test_a_live_writers_temporary_is_left_alone(tmp_path):
    source = _volume(tmp_path / "iso.nrrd", 16, 4)
    out = tmp_path / "sim.nii.gz"
    # A temporary of the same output held by a process that is still running (this one).
    live = tmp_path / f".sim.nii.gz.{os.getpid()}-0123abcd.partial.nii.gz"
    live.write_bytes(b"being written")
    result = _simulate(source, out, "--quiet")
    assert result.returncode == 0, result.stderr
    assert live.read_bytes() == b"being written"


def test_detached_header_pairs_name_their_final_data_file(tmp_path):
    source = _volume(tmp_path / "iso.nrrd", 16, 5)
    for ext, key in (("mhd", "ElementDataFile = "), ("nhdr", "data file: ")):
        out = tmp_path / f"pair.{ext}"
        result = _simulate(source, out, "--quiet")
        assert result.returncode == 0, result.stderr
        header = out.read_text(encoding="latin-1")
        assert f"{key}pair.{COMPANION[ext]}" in header
        assert sitk.ReadImage(str(out)).GetSize() == (16, 16, 8)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


_SAVE_MODEL = """
import sys
from CLADE.errors import CladeError
from CLADE.model_file import build_generator, make_metadata, save_model
metadata = make_metadata("big", "MR", base_filters=int(sys.argv[2]), n_blocks=2, trained=False)
try:
    save_model(sys.argv[1], build_generator(metadata), metadata)
except CladeError as error:
    print(error, file=sys.stderr)
    sys.exit(2)
"""


@needs_namespaces
def test_model_file_on_a_full_disk_keeps_the_earlier_model(tmp_path):
    script = tmp_path / "save.py"
    script.write_text(_SAVE_MODEL)
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    made = run_python(script, earlier / "model.pt", "4", timeout=120)
    assert made.returncode == 0, made.stderr
    before = _digest(earlier)
    full = tmp_path / "full"
    full.mkdir()
    result = _replace_on_a_full_disk(full, earlier, '"$3" "$4" "$1/model.pt" 64', script)
    assert "rc=2" in result.stdout, (result.stdout, result.stderr)
    assert result.stderr.strip().startswith(
        f"There is no space left on the device holding {full}:"
    ), result.stderr
    assert "inline_container" not in result.stderr
    assert _listed(result.stdout) == before


_CHECKPOINT_THEN_DIE = """
import os, signal, sys
import torch
from CLADE.training.checkpoint import save_checkpoint
if sys.argv[2] == "die":
    real_save = torch.save
    def save_then_die(*args, **kwargs):
        real_save(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGKILL)
    torch.save = save_then_die
save_checkpoint(sys.argv[1], {"w": torch.ones(3)})
"""


def test_checkpoint_temporaries_of_a_killed_run_are_removed_by_the_next_checkpoint(tmp_path):
    script = tmp_path / "checkpoint.py"
    script.write_text(_CHECKPOINT_THEN_DIE)
    run = tmp_path / "run"
    run.mkdir()
    target = run / "checkpoint.pt"
    killed = subprocess.run(
        [sys.executable, str(script), str(target), "die"], capture_output=True, timeout=120
    )
    assert killed.returncode == -signal.SIGKILL
    assert [p.name.startswith(".checkpoint.pt.") for p in run.iterdir()] == [True]
    again = run_python(script, target, "live", timeout=120)
    assert again.returncode == 0, again.stderr
    assert [p.name for p in run.iterdir()] == ["checkpoint.pt"]
