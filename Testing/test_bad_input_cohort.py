"""Bad input, round three: cohorts (issue 25, classes 1, 13, 20, 21).

Before the fix: ``--out-dir`` equal to the input folder read the earlier ``*_clade`` outputs back
as inputs on a rerun (they failed, exit 2); Ctrl-C during the second input said "nothing was
written" although the first output was; a cohort run on ``.`` (a DICOM folder) planned
``_clade.nrrd``, an output with an empty name.
"""

from __future__ import annotations

import os
import shutil

import pytest
import SimpleITK as sitk
from conftest import make_volume, run_python
from test_bad_input_dicom import write_series

from CLADE.cohort import plan_cohort
from CLADE.errors import CladeError


def test_earlier_outputs_in_the_input_folder_are_not_inputs(tmp_path):
    sitk.WriteImage(make_volume(size=(12, 12, 4)), str(tmp_path / "a.nii.gz"))
    shutil.copy(tmp_path / "a.nii.gz", tmp_path / "a_clade.nii.gz")  # a first run's output
    items = plan_cohort([tmp_path], tmp_path)
    assert [(i.source.name, i.output.name) for i in items] == [("a.nii.gz", "a_clade.nii.gz")]


def test_dicom_folder_given_as_dot_is_named_after_the_folder(tmp_path, monkeypatch):
    folder = write_series(tmp_path / "knee", [0.0, 4.0, 8.0])
    monkeypatch.chdir(folder)
    items = plan_cohort(["."], tmp_path / "out")
    assert [i.output.name for i in items] == ["knee_clade.nrrd"]


def test_an_output_over_another_inputs_data_file_is_refused_before_any_work(tmp_path):
    data = tmp_path / "in"
    data.mkdir()
    sitk.WriteImage(make_volume(size=(12, 12, 4)), str(data / "x.mhd"), useCompression=True)
    header = (data / "x.mhd").read_text().replace("x.zraw", "b_clade.zraw")
    (data / "x.mhd").write_text(header)
    os.rename(data / "x.zraw", data / "b_clade.zraw")  # x.mhd's pixels: b_clade.zraw
    sitk.WriteImage(make_volume(size=(12, 12, 4)), str(data / "b.mhd"))
    with pytest.raises(CladeError, match=r"b_clade\.zraw, which the input .*x\.mhd reads"):
        plan_cohort([data / "b.mhd", data / "x.mhd"], data)


_INTERRUPT_SCRIPT = """
import sys
import CLADE.pipeline
real = CLADE.pipeline.super_resolve_file
calls = []
def second_interrupted(*args, **kwargs):
    calls.append(1)
    if len(calls) == 2:
        raise KeyboardInterrupt  # Ctrl-C while the second input runs
    return real(*args, **kwargs)
CLADE.pipeline.super_resolve_file = second_interrupted
from CLADE.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def test_ctrl_c_in_a_cohort_says_what_was_written(tmp_path, tiny_model_path):
    data = tmp_path / "in"
    data.mkdir()
    for name in ("a", "b", "c"):
        sitk.WriteImage(make_volume(size=(40, 36, 6)), str(data / f"{name}.nii.gz"))
    out = tmp_path / "out"
    result = run_python(
        "-c", _INTERRUPT_SCRIPT, "super-resolve", data, "--out-dir", out, "--model", tiny_model_path
    )
    assert result.returncode == 130, result.stdout + result.stderr
    assert [p.name for p in out.iterdir()] == ["a_clade.nii.gz"]
    assert "a.nii.gz  done" in result.stdout and "1 done, 0 skipped, 0 failed" in result.stdout
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("clade: interrupted: 1 of 3 outputs were written"), last
    assert "nothing was written" not in result.stderr
