"""The noise floor of the error map (issue 23): the thick slices' noise is measured without the
anatomy's edges, and it is the share of the thin slices' noise the slice profile predicts, on
white noise and on the real CT."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import CT_ISO

from CLADE.noise_floor import averaged_away_noise, noise_sigma, profile_energy
from CLADE.simulate import simulate_thick_slices


def blocks() -> np.ndarray:
    """Sharp-edged anatomy without noise: squares of 0, 300 and 600 on a 100 background."""
    volume = np.full((4, 64, 64), 100.0)
    volume[:, 8:30, 8:40] = 300.0
    volume[:, 36:60, 20:56] = 600.0
    return volume


def test_edges_are_not_noise_and_noise_is_measured_beside_them():
    assert noise_sigma(blocks(), 50.0) < 0.5  # 300-600 steps everywhere, no noise
    noisy = blocks() + np.random.default_rng(0).normal(0, 8.0, (4, 64, 64))
    assert noise_sigma(noisy, 50.0) == pytest.approx(8.0, rel=0.1)


def test_too_little_foreground_gives_no_noise():
    assert noise_sigma(np.zeros((2, 8, 8)), 0.5) == 0.0


@pytest.mark.parametrize("ratio", [3.0, 5.0])
def test_thick_slices_keep_the_profile_share_of_white_noise(ratio):
    rng = np.random.default_rng(1)
    iso = sitk.GetImageFromArray((100 + rng.normal(0, 10.0, (100, 64, 64))).astype(np.float32))
    thick = sitk.GetArrayFromImage(simulate_thick_slices(iso, ratio, None, 2, "gaussian"))
    share = noise_sigma(thick, 0.0) / 10.0
    assert share == pytest.approx(np.sqrt(profile_energy(ratio)), rel=0.05)


@pytest.mark.parametrize("thickness", [9.0, 12.0])
def test_the_real_cts_thick_slices_keep_the_profile_share_of_its_noise(test_data, thickness):
    iso = sitk.ReadImage(str(test_data / CT_ISO), sitk.sitkFloat32)  # 3 mm isotropic, HU
    thick = simulate_thick_slices(iso, thickness, None, 2, "gaussian")
    share = noise_sigma(sitk.GetArrayFromImage(thick), -870.0) / noise_sigma(
        sitk.GetArrayFromImage(iso), -870.0
    )
    assert share == pytest.approx(np.sqrt(profile_energy(thickness / 3.0)), rel=0.06)


def test_the_floor_is_the_noise_the_thin_slices_hold_beyond_the_thick_ones():
    # Thin slices of noise 10 averaged at a ratio of 3 keep 10 * sqrt(sum w^2); the floor gives
    # back the rest as a mean absolute value.
    thick_sigma = 10.0 * np.sqrt(profile_energy(3.0))
    expected = np.sqrt(2 / np.pi) * np.sqrt(10.0**2 - thick_sigma**2)
    assert averaged_away_noise(thick_sigma, 3.0) == pytest.approx(expected, rel=1e-6)
