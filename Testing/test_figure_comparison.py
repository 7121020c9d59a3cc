"""The comparison figure of ``clade demo`` (and ``clade evaluate --figure``, the model cards).

Before the redesign the demo figure was 640 x 370 pixels, mostly white, with two small spline and
CLADE views whose zoom insets covered the anatomy; no thick-slice input, no profile.
"""

from __future__ import annotations

import matplotlib.image
import numpy as np
import SimpleITK as sitk
from conftest import clade_in_process, run_python

from CLADE.evaluation import measure, prepare_comparison
from CLADE.evaluation_figure import MIN_WIDTH_PIXELS, _columns, figure_pixel_size
from CLADE.geometry import resample_to_isotropic


def test_demo_figure_is_large_and_mostly_image(tmp_path, tiny_model_path):
    out = tmp_path / "demo"
    # In this process: the figure is under test (test_shipped_models runs the demo's process).
    result = clade_in_process(
        "demo", "--out", out, "--model", tiny_model_path, "--stride", "32", "--quiet"
    )
    assert result.returncode == 0, result.stderr
    picture = matplotlib.image.imread(out / "comparison.png")
    height, width = picture.shape[:2]
    # Three columns (thick input, spline, CLADE), one sagittal slice of the 160 x 84 iso grid,
    # and the row of the error map under them.
    assert (width, height) == figure_pixel_size(3, [(84, 160)], error_rows=True)
    assert width >= MIN_WIDTH_PIXELS >= 1600
    white = (picture[..., :3] > 0.97).all(axis=-1).mean()
    assert white < 0.35, f"{white:.0%} of the figure is white"
    assert sorted(p.name for p in out.iterdir()) == [
        "comparison.png",
        "metrics.csv",
        "metrics.json",
        "pelvis_t2_clade.nii.gz",
        "pelvis_t2_clade_error.nii.gz",
        "pelvis_t2_spline.nii.gz",
    ]


def test_input_column_shows_each_thick_slice_as_one_block():
    rng = np.random.default_rng(0)
    thick = sitk.GetImageFromArray(rng.normal(100, 10, (6, 32, 32)).astype(np.float32))
    thick.SetSpacing((1.0, 1.0, 4.0))
    comparison = prepare_comparison(thick, [("sr", resample_to_isotropic(thick, 2))])
    names, arrays, rows = _columns(comparison, measure(comparison))
    assert names == ["input", "spline", "sr"] and rows[0] == {}
    shown = np.asarray(arrays[0])
    assert shown.shape == (24, 32, 32)
    # Nearest neighbour: iso slices 4j .. 4j+3 all equal thick slice j, exactly.
    expected = np.repeat(sitk.GetArrayFromImage(thick), 4, axis=0)
    assert np.array_equal(shown, expected)


def test_the_input_column_outlives_the_image_it_came_from():
    # The input column is resampled inside _columns; a view of that temporary image's buffer
    # read freed memory once it was gone (a segmentation fault in model_quality.py). Buffers of
    # this size are returned to the system when freed, so reading a dangling view crashes: the
    # check runs in its own process.
    code = """
import gc
import numpy as np
import SimpleITK as sitk
from CLADE.evaluation import measure, prepare_comparison
from CLADE.evaluation_figure import _columns
from CLADE.geometry import resample_to_isotropic

volume = np.full((16, 128, 128), 2.0, np.float32)
volume[8:] = 12.0  # an edge across the thick axis for measure(); the mean stays 7
thick = sitk.GetImageFromArray(volume)
thick.SetSpacing((1.0, 1.0, 4.0))
comparison = prepare_comparison(thick, [("sr", resample_to_isotropic(thick, 2))])
names, arrays, rows = _columns(comparison, measure(comparison, edge_count=1))
gc.collect()
others = [sitk.Image([128, 128, 64], sitk.sitkFloat32) + 1.0 for _ in range(8)]
print(float(np.asarray(arrays[0], dtype=np.float64).mean()))
"""
    result = run_python("-c", code)
    assert result.returncode == 0, result.stderr[-2000:]
    assert float(result.stdout.split()[-1]) == 7.0
