"""Unpaired patch sampling: counts, sizes, positions, orientation, background, skips, order."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import SimpleITK as sitk

from CLADE.errors import CladeError
from CLADE.geometry import hr_slice_stack, lr_slice_stack
from CLADE.training.sampling import (
    EpochSampler,
    PreparedVolume,
    VolumeSkipped,
    build_patch_bank,
    sample_slices,
    sample_volume,
)


def coded_volume(shape=(40, 36, 50)) -> np.ndarray:
    """numpy (z, y, x) volume whose value is z (the thick axis, numpy 0) plus tiny y, x codes."""
    z, y, x = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    return (z + y / 1e3 + x / 1e6).astype(np.float64)


def test_four_patches_per_slice_inside_each_slice():
    slices = np.random.default_rng(0).normal(size=(5, 40, 45)).astype(np.float32)
    patches, where = sample_slices(slices, np.random.default_rng(3))
    assert patches.shape == (20, 32, 32)
    assert np.bincount(where[:, 0]).tolist() == [4] * 5
    for patch, (s, r, c) in zip(patches, where):
        assert 0 <= r <= 40 - 32 and 0 <= c <= 45 - 32
        np.testing.assert_array_equal(patch, slices[s, r : r + 32, c : c + 32].astype(np.float16))
    # Without replacement within a slice.
    assert len({tuple(w) for w in where}) == 20


def test_lr_patches_span_the_thick_axis_along_rows():
    volume = PreparedVolume(coded_volume(), thick_axis=2, lr_axes=[0, 1])
    x, y = sample_volume(volume, np.random.default_rng(0))
    # Both LR planes (sagittal: 50 slices, coronal: 36) and the HR plane (40 slices), 4 each.
    assert x.shape == (4 * (50 + 36), 32, 32) and y.shape == (4 * 40, 32, 32)
    z_of_x = np.floor(x.astype(np.float64) + 1e-3)
    # Each LR patch row is one thick-axis position, rows run over 32 consecutive positions.
    assert np.all(np.diff(z_of_x, axis=1) == 1)
    assert np.all(z_of_x.max(axis=2) == z_of_x.min(axis=2))
    # HR patches lie in one thick-axis plane.
    z_of_y = np.floor(y.astype(np.float64) + 1e-3)
    assert np.all(np.ptp(z_of_y.reshape(len(y), -1), axis=1) == 0)


def test_lr_orientation_for_a_thick_x_axis():
    # Thick axis = SimpleITK 0 = numpy 2: code the value by x instead.
    z, yy, x = np.meshgrid(np.arange(36), np.arange(40), np.arange(48), indexing="ij")
    volume = PreparedVolume(x.astype(np.float32), thick_axis=0, lr_axes=[2])
    xs, ys = sample_volume(volume, np.random.default_rng(0))
    assert np.all(np.diff(xs.astype(np.float32), axis=1) == 1)  # thick axis along rows
    assert np.all(np.diff(xs.astype(np.float32), axis=2) == 0)
    assert np.all(np.ptp(ys.reshape(len(ys), -1), axis=1) == 0)


def test_sampling_is_reproducible_with_a_seed():
    volume = PreparedVolume(np.random.default_rng(1).random((40, 40, 40), np.float32), 2, [0])
    a = sample_volume(volume, np.random.default_rng(5))
    b = sample_volume(volume, np.random.default_rng(5))
    c = sample_volume(volume, np.random.default_rng(6))
    assert all(np.array_equal(p, q) for p, q in zip(a, b))
    assert not np.array_equal(a[0], c[0])


def test_background_patches_are_left_out():
    slices = np.full((3, 64, 64), -1.0, np.float32)
    slices[0, :, 32:] = 0.5  # right half tissue
    slices[1, 40:, 40:] = 0.5  # a small bright corner
    patches, where = sample_slices(slices, np.random.default_rng(0), min_foreground=0.5)
    assert 2 not in where[:, 0]  # all air: no patch
    assert np.bincount(where[:, 0]).tolist()[0] == 4
    fraction = (patches.astype(np.float32) > -0.9).mean(axis=(1, 2))
    assert fraction.min() >= 0.5
    # The paper's rule (keep everything) takes 4 patches from the air slice too.
    _, where_all = sample_slices(slices, np.random.default_rng(0), min_foreground=0.0)
    assert np.bincount(where_all[:, 0]).tolist() == [4, 4, 4]


def write(path, array, spacing):
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    sitk.WriteImage(image, str(path))
    return path


def test_bank_mixes_thick_axes_and_skips_unusable_volumes(tmp_path):
    rng = np.random.default_rng(0)
    write(tmp_path / "a_axial.nrrd", rng.random((8, 40, 40), np.float32), (1.0, 1.0, 5.0))
    write(tmp_path / "b_sagittal.nii.gz", rng.random((40, 40, 10), np.float32), (4.0, 1.0, 1.0))
    write(tmp_path / "c_iso.nrrd", rng.random((40, 40, 40), np.float32), (1.0, 1.0, 1.0))
    (tmp_path / "notes.txt").write_text("not a volume")
    with pytest.warns(VolumeSkipped) as caught:
        bank = build_patch_bank([tmp_path], seed=0)
    messages = " ".join(str(w.message) for w in caught)
    assert "c_iso.nrrd" in messages and "isotropic" in messages and "notes.txt" in messages
    assert [p.split("/")[-1] for p in bank.volumes] == ["a_axial.nrrd", "b_sagittal.nii.gz"]
    assert set(bank.x_volume.tolist()) == {0, 1} and set(bank.y_volume.tolist()) == {0, 1}
    assert bank.x.dtype == np.float16 and bank.x.shape[1:] == (32, 32)
    # Same seed, same bank (a resumed run rebuilds it identically); max_patches caps it.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", VolumeSkipped)
        assert build_patch_bank([tmp_path], seed=0).fingerprint() == bank.fingerprint()
        capped = build_patch_bank([tmp_path], seed=0, max_patches=10)
    assert len(capped.x) == len(capped.y) == 10


def test_a_folder_without_usable_volume_lists_what_was_skipped(tmp_path):
    write(tmp_path / "iso.nrrd", np.zeros((40, 40, 40), np.float32), (1.0, 1.0, 1.0))
    write(tmp_path / "flat.nrrd", np.zeros((1, 40, 40), np.float32), (1.0, 1.0, 5.0))
    (tmp_path / "readme.md").write_text("hello")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", VolumeSkipped)
        with pytest.raises(CladeError) as error:
            build_patch_bank([tmp_path])
    message = str(error.value)
    assert "flat.nrrd (it is a 2D image)" in message
    assert "iso.nrrd (the volume is already nearly isotropic" in message
    assert "readme.md (it is not an image" in message
    assert "\n" not in message


def test_an_empty_folder_is_refused(tmp_path):
    with pytest.raises(CladeError, match="is empty"):
        build_patch_bank([tmp_path])


def test_epoch_sampler_shards_do_not_overlap_and_cover_the_epoch():
    samplers = [EpochSampler(50, 30, batch_size=4, world_size=3, rank=r, seed=1) for r in range(3)]
    assert samplers[0].steps_per_epoch == 50 // 12
    xs = [np.concatenate([s.batch(2, k)[0] for k in range(s.steps_per_epoch)]) for s in samplers]
    flat = np.concatenate(xs)
    assert len(flat) == len(set(flat.tolist())) == 48  # no X patch used twice in the epoch
    again = EpochSampler(50, 30, 4, 3, 0, seed=1).batch(2, 1)
    assert np.array_equal(again[0], samplers[0].batch(2, 1)[0])
    assert not np.array_equal(samplers[0].orders(2)[0], samplers[0].orders(3)[0])
    # The smaller domain is repeated with fresh shuffles to match the larger.
    order_y = samplers[0].orders(2)[1]
    assert len(order_y) == 50 and sorted(order_y[:30].tolist()) == list(range(30))


def test_lr_stack_used_for_training_matches_inference_convention():
    # Training and inference share geometry.lr_slice_stack: thick axis along the rows.
    volume = coded_volume((40, 36, 50))
    assert lr_slice_stack(volume, 0, 2).shape == (50, 40, 36)
    assert hr_slice_stack(volume, 2).shape == (40, 36, 50)
