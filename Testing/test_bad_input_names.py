"""Bad input, round three: file names and the files behind them (issue 25, classes 1, 2, 14, 15).

Before the fix: an edited ``scan_fixed.nhdr`` whose ``data file:`` is ``scan.raw.gz``,
super-resolved to ``scan.nhdr``, overwrote ``scan.raw.gz`` (the input's pixels), exit 0; a file
name that is not UTF-8 aborted the process from C++ (exit 134, no message); SIGTERM during the
write left a hidden temporary; a legal 247-byte output name failed after the whole run.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
from pathlib import Path

import pytest
import SimpleITK as sitk
from conftest import make_volume, run_clade, run_python
from test_bad_input_dicom import write_series

from CLADE.errors import CladeError
from CLADE.volume_io import check_output_path, read_volume, write_volume

LATIN1 = os.fsdecode(b"caf\xe9")  # what Python makes of a Latin-1 name on a UTF-8 system


def _digests(folder: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def _edited_copy(tmp_path: Path, ending: str) -> Path:
    """``scan.<ending>`` + its data file, and ``scan_fixed.<ending>``: the same header text
    (so it still reads the data of ``scan``), with ``scan``'s own header removed."""
    original = tmp_path / f"scan{ending}"
    sitk.WriteImage(make_volume(size=(40, 36, 6)), str(original), useCompression=True)
    fixed = tmp_path / f"scan_fixed{ending}"
    shutil.copy(original, fixed)
    original.unlink()
    return fixed


def test_detached_header_data_file_is_never_overwritten(tmp_path, tiny_model_path):
    fixed = _edited_copy(tmp_path, ".nhdr")
    before = _digests(tmp_path)
    result = run_clade("super-resolve", fixed, tmp_path / "scan.nhdr", "--model", tiny_model_path)
    assert result.returncode == 2, result.stdout + result.stderr
    message = result.stderr.strip()
    assert message.startswith("clade: error:") and len(message.splitlines()) == 1, message
    assert "scan.raw.gz" in message and "Traceback" not in message
    assert _digests(tmp_path) == before  # input intact, nothing written


def test_metaimage_element_data_file_is_compared_too(tmp_path):
    fixed = _edited_copy(tmp_path, ".mhd")
    with pytest.raises(CladeError, match=r"would overwrite .*scan\.zraw, which the input"):
        check_output_path(tmp_path / "scan.mhd", inputs=(fixed,))
    check_output_path(tmp_path / "other.mhd", inputs=(fixed,))  # other names are fine


_NAME_SCRIPT = """
import os, sys
from pathlib import Path
from CLADE.errors import CladeError
from CLADE.volume_io import check_output_path, read_volume
folder = Path(sys.argv[1])
bad = os.fsdecode(b"caf\\xe9")
for what, call in [
    ("input", lambda: read_volume(folder / (bad + ".nii.gz"))),
    ("output", lambda: check_output_path(folder / (bad + ".nrrd"), inputs=(folder / "ok.nii.gz",))),
    ("dicom", lambda: read_volume(folder / "series")),
]:
    try:
        call()
        print(what, "accepted")
    except CladeError as error:
        print(what, error)
"""


def test_non_utf8_names_are_refused_in_one_sentence(tmp_path):
    good = tmp_path / "ok.nii.gz"
    sitk.WriteImage(make_volume(size=(40, 36, 6)), str(good))
    shutil.copy(good, tmp_path / (LATIN1 + ".nii.gz"))
    series = write_series(tmp_path / "series", [0.0, 4.0, 8.0])
    os.rename(series / "slice001.dcm", series / (LATIN1 + ".dcm"))
    result = run_python("-c", _NAME_SCRIPT, tmp_path, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr  # no abort (was 134)
    lines = dict(line.split(" ", 1) for line in result.stdout.strip().splitlines())
    for what in ("input", "output", "dicom"):
        assert "is not valid UTF-8" in lines[what] and "caf\\xe9" in lines[what], lines


def test_cohort_goes_on_past_a_non_utf8_name(tmp_path, tiny_model_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    sitk.WriteImage(make_volume(size=(40, 36, 6)), str(inputs / "a.nii.gz"))
    shutil.copy(inputs / "a.nii.gz", inputs / (LATIN1 + ".nii.gz"))
    shutil.copy(inputs / "a.nii.gz", inputs / "z.nii.gz")
    out = tmp_path / "out"
    result = run_clade("super-resolve", inputs, "--out-dir", out, "--model", tiny_model_path)
    assert result.returncode == 2, result.stdout + result.stderr  # one failed, not aborted
    assert "not valid UTF-8" in result.stderr and "Traceback" not in result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["a_clade.nii.gz", "z_clade.nii.gz"]
    assert "2 done, 0 skipped, 1 failed" in result.stdout


def test_long_legal_output_name_is_written(tmp_path):
    name = "a" * 240 + ".nii.gz"  # 247 bytes: legal, but not with ~35 more for a temporary
    written = write_volume(make_volume(size=(12, 12, 4)), tmp_path / name)
    assert written.name == name
    assert [p.name for p in tmp_path.iterdir()] == [name]


def test_output_whose_data_file_name_is_too_long_is_refused_up_front(tmp_path):
    name = "b" * 250 + ".nhdr"  # 255 bytes: legal, but its data file b...b.raw.gz is not
    with pytest.raises(CladeError, match=r"is 257 bytes long, more than the 255"):
        check_output_path(tmp_path / name)


_SIGTERM_SCRIPT = """
import sys, time
from pathlib import Path
import SimpleITK
real = SimpleITK.WriteImage
def slow_write(image, name, *args, **kwargs):
    real(image, name, *args, **kwargs)  # the temporary is complete on disk...
    Path(sys.argv[1]).write_text("writing")
    time.sleep(60)  # ...and the process is still in its write stage when SIGTERM comes
SimpleITK.WriteImage = slow_write
from CLADE.cli.main import main
sys.exit(main(sys.argv[2:]))
"""


def test_sigterm_during_the_write_leaves_no_temporary(tmp_path, tiny_model_path):
    import subprocess
    import sys
    import time

    source = tmp_path / "thick.nii.gz"
    sitk.WriteImage(make_volume(size=(40, 36, 6)), str(source))
    out = tmp_path / "out"
    out.mkdir()
    marker = tmp_path / "marker"
    args = [source, out / "sr.nii.gz", "--model", tiny_model_path, "--progress", "none"]
    process = subprocess.Popen(
        [sys.executable, "-c", _SIGTERM_SCRIPT, marker, "super-resolve", *args],
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not marker.exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    assert marker.exists(), process.communicate()[1]
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 143, stderr
    assert "clade: interrupted: terminated (SIGTERM)" in stderr and "Traceback" not in stderr
    assert list(out.iterdir()) == []  # no output, no hidden temporary
    assert read_volume(source).GetSize() == (40, 36, 6)
