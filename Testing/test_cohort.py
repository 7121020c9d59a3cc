"""`clade super-resolve INPUT... --out-dir DIR`: cohorts, reruns, bad inputs, torchrun ranks;
and the machine-readable progress stream the Slicer module reads."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import SimpleITK as sitk
from conftest import clade_in_process, make_volume, run_clade


def clade(*args, cwd=None, env=None):
    return run_clade(*args, cwd=cwd, timeout=600, env=env)


def _assert_user_error(result, *phrases):
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("clade: ")
    for phrase in phrases:
        assert phrase in message, message


@pytest.fixture
def cohort(tmp_path):
    """A folder with two good volumes, a broken one and a text file."""
    folder = tmp_path / "cohort"
    folder.mkdir()
    for index, name in enumerate(("a.nrrd", "b.nii.gz")):
        image = make_volume(size=(36, 34, 5), spacing=(1.0, 1.0, 4.0), seed=index)
        sitk.WriteImage(image, str(folder / name))
    (folder / "broken.nrrd").write_bytes(b"NRRD0004\nthis is not a volume\n")
    (folder / "notes.txt").write_text("not a volume")
    return folder


def test_cohort_writes_one_output_each_reports_the_broken_file_and_skips_on_rerun(
    cohort, tmp_path, tiny_model_path
):
    out = tmp_path / "out"
    first = clade("super-resolve", cohort, "--out-dir", out, "--model", tiny_model_path)
    assert first.returncode == 2  # one input failed
    assert "Traceback" not in first.stderr
    assert sorted(p.name for p in out.iterdir()) == ["a_clade.nrrd", "b_clade.nii.gz"]
    assert "broken.nrrd: failed" in first.stderr
    table = first.stdout
    assert "2 done, 0 skipped, 1 failed" in table and "notes.txt" not in table
    stamp = (out / "a_clade.nrrd").stat().st_mtime_ns
    again = clade("super-resolve", cohort, "--out-dir", out, "--model", tiny_model_path)
    assert "0 done, 2 skipped, 1 failed" in again.stdout
    assert (out / "a_clade.nrrd").stat().st_mtime_ns == stamp
    redo = clade(
        "super-resolve",
        cohort / "a.nrrd",
        "--out-dir",
        out,
        "--model",
        tiny_model_path,
        "--overwrite",
    )
    assert redo.returncode == 0 and "1 done, 0 skipped, 0 failed" in redo.stdout
    image = sitk.ReadImage(str(out / "b_clade.nii.gz"))
    assert image.GetSize() == (36, 34, 20) and image.GetSpacing() == pytest.approx((1, 1, 1))


def test_cohort_bad_plans_are_refused_before_any_work(tmp_path, tiny_model_path):
    # The command's answers, in this process (the cohort run above is the subprocess test).
    empty = tmp_path / "empty"
    empty.mkdir()
    _assert_user_error(
        clade_in_process("super-resolve", empty, "--out-dir", tmp_path / "o"), "is empty"
    )
    texts = tmp_path / "texts"
    texts.mkdir()
    (texts / "a.txt").write_text("x")
    _assert_user_error(
        clade_in_process("super-resolve", texts, "--out-dir", tmp_path / "o"),
        "holds no NRRD, NIfTI or MetaImage volume",
    )
    volume = tmp_path / "v.nrrd"
    sitk.WriteImage(make_volume(size=(36, 34, 5)), str(volume))
    afile = tmp_path / "afile"
    afile.write_text("x")
    _assert_user_error(clade_in_process("super-resolve", volume, "--out-dir", afile), "is a file")
    _assert_user_error(
        clade_in_process("super-resolve", volume, "--out-dir", afile / "sub"), "cannot be created"
    )
    other = tmp_path / "other"
    other.mkdir()
    sitk.WriteImage(make_volume(size=(36, 34, 5)), str(other / "v.nrrd"))
    _assert_user_error(
        clade_in_process("super-resolve", volume, other / "v.nrrd", "--out-dir", tmp_path / "o2"),
        "would both be written to",
    )
    assert not (tmp_path / "o2" / "v_clade.nrrd").exists()


@pytest.mark.parametrize(
    "options, phrase",
    [
        (("--tiling", "slices", "--stride", "8"), "--stride applies to --tiling patches only"),
        (("--batch-size", "0"), "expected a whole number of at least 1"),
        (("--stride", "40"), "between 1 and 32"),
        (("--adapt", "-1"), "expected auto or a whole number of at least 0"),
    ],
)
def test_bad_inference_options_fail_with_one_sentence(tmp_path, tiny_model_path, options, phrase):
    volume = tmp_path / "v.nrrd"
    sitk.WriteImage(make_volume(size=(36, 34, 5)), str(volume))
    result = clade_in_process(
        "super-resolve", volume, tmp_path / "o.nrrd", "--model", tiny_model_path, *options
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert phrase in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.nrrd"]


def test_json_progress_stream_has_stages_in_order_and_a_done_event(tmp_path, tiny_model_path):
    volume = tmp_path / "v.nrrd"
    sitk.WriteImage(make_volume(size=(40, 36, 8)), str(volume))
    result = clade(
        "super-resolve",
        volume,
        tmp_path / "o.nrrd",
        "--model",
        tiny_model_path,
        "--progress",
        "json",
        "--adapt",
        "3",
    )
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]  # every line is JSON
    stages = [e["stage"] for e in events if e["event"] == "progress"]
    assert [s for i, s in enumerate(stages) if i == 0 or stages[i - 1] != s] == [
        "resample",
        "adapt",
        "infer",
        "write",
    ]
    assert any(e["event"] == "log" and "adapted to this volume" in e["message"] for e in events)
    done = events[-1]
    assert done["event"] == "done" and done["output"] == str((tmp_path / "o.nrrd").resolve())
    assert done["stats"]["tiling"] == "slices"
    error = clade(
        "super-resolve", tmp_path / "missing.nrrd", tmp_path / "o2.nrrd", "--progress", "json"
    )
    assert error.returncode == 2
    assert json.loads(error.stdout.splitlines()[-1])["event"] == "error"


def test_torchrun_ranks_take_disjoint_shares_and_write_each_output_once(tmp_path, tiny_model_path):
    folder = tmp_path / "cohort"
    folder.mkdir()
    for index in range(5):
        sitk.WriteImage(make_volume(size=(36, 34, 5), seed=index), str(folder / f"c{index}.nrrd"))
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_port",
            "29517",
            "-m",
            "CLADE",
            "super-resolve",
            str(folder),
            "--out-dir",
            str(out),
            "--model",
            str(tiny_model_path),
            "--device",
            "cpu",
            "--progress",
            "json",
        ],
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=600,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    events = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    written = [e["output"] for e in events if e["event"] == "input" and e["status"] == "done"]
    assert sorted(written) == sorted(str(out / f"c{i}_clade.nrrd") for i in range(5))
    ranks = sorted((e["rank"], e["inputs"]) for e in events if e["event"] == "done")
    assert ranks == [(0, 3), (1, 2)]
