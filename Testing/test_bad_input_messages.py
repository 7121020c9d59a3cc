"""Bad input, round three: options and messages that misled (issue 25, classes 9, 17-19, 21).

Before the fix: ``train --val-reference`` on another grid (same size, other origin) was accepted
and model selection compared misaligned voxels, and ``--val-reference`` without ``--val`` was
ignored; ``--model`` given a folder, ``""`` or ``/dev/null`` "does not exist"; ``train --window
100 100`` blamed the volumes after creating the run folder; ``--thick-axis 0`` on a 1x1x5 mm
volume said "already nearly isotropic"; an SNR box error printed ``np.float64(30.0)``.
"""

from __future__ import annotations

import pytest
import SimpleITK as sitk
from conftest import make_volume

from CLADE.cli.main import main
from CLADE.errors import CladeError
from CLADE.geometry import detect_thick_axis, isotropic_grid


def _validation_pair(tmp_path, origin_shift):
    from CLADE.training.validation import ValidationSet

    thick = make_volume(size=(40, 36, 6), spacing=(1.0, 1.0, 4.0))
    grid = isotropic_grid(thick, 2)
    origin = tuple(o + s for o, s in zip(grid.origin, origin_shift))
    reference = make_volume(size=grid.size, spacing=grid.spacing, origin=origin)
    sitk.WriteImage(thick, str(tmp_path / "val.nrrd"))
    sitk.WriteImage(reference, str(tmp_path / "ref.nrrd"))
    return lambda: ValidationSet.load([tmp_path / "val.nrrd"], [tmp_path / "ref.nrrd"])


def test_validation_reference_on_another_grid_is_refused(tmp_path):
    load = _validation_pair(tmp_path, (7.0, 0.0, 0.0))
    with pytest.raises(CladeError, match=r"is not on the grid the super-resolved .* will have"):
        load()


def test_validation_reference_on_the_same_grid_is_accepted(tmp_path):
    assert _validation_pair(tmp_path, (0.0, 0.0, 0.0))().has_references


def test_val_reference_without_val_is_refused_before_anything_is_made(tmp_path, capsys):
    sitk.WriteImage(make_volume(), str(tmp_path / "t.nrrd"))
    run = tmp_path / "run"
    code = main(["train", str(tmp_path / "t.nrrd"), "--out", str(run), "--val-reference", "r"])
    assert code == 2 and not run.exists()
    assert "--val-reference gives the isotropic truth of a --val volume" in capsys.readouterr().err


def test_empty_window_is_refused_at_the_parser(tmp_path, capsys):
    run = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_:
        main(["train", str(tmp_path), "--out", str(run), "--window", "100", "100"])
    assert exit_.value.code == 2 and not run.exists()
    assert "LOW must be below HIGH, got 100 100" in capsys.readouterr().err


@pytest.mark.parametrize(
    "model, words",
    [("", "The model name is empty"), ("FOLDER", "is a folder"), ("/dev/null", "not a regular")],
)
def test_model_that_is_not_a_model_file_says_what_it_is(tmp_path, model, words):
    from CLADE.registry import resolve_model

    with pytest.raises(CladeError, match=words):
        resolve_model(str(tmp_path) if model == "FOLDER" else model)


def test_thick_axis_that_is_not_the_thick_one_names_the_right_one():
    with pytest.raises(CladeError, match=r"give --thick-axis 2 or leave it out"):
        detect_thick_axis((1.0, 1.0, 5.0), 0)


def test_box_errors_print_plain_numbers():
    from CLADE.metrics.snr import box_values

    with pytest.raises(CladeError) as error:
        box_values(make_volume(size=(12, 12, 4)), ((30, 0, 0), (40, 2, 2)))
    assert "from (30, 0, 0) to (40, 2, 2)" in str(error.value)
    assert "np.float64" not in str(error.value)
