"""The fidelity safeguards beyond the paper: residual generator and paired degradation term."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from conftest import BRAIN1, TEST_DATA, clade_in_process

from CLADE.degradation import blur_rows, degrade_slice
from CLADE.errors import CladeError
from CLADE.networks import RESIDUAL_GAIN, ResnetGenerator, fuse_for_inference
from CLADE.slice_sampling import PreparedVolume, sample_volume_patches
from CLADE.training.presets import TrainingConfig
from CLADE.training.trainer import LOSS_NAMES, TrainStep, build_networks


def test_residual_generator_adds_a_scaled_correction_to_its_input():
    torch.manual_seed(0)
    generator = ResnetGenerator(base_filters=4, n_blocks=1, residual=True)
    x = torch.rand(3, 1, 32, 32) * 1.6 - 0.8
    correction = generator.model(x)
    # Starts near the identity but with a live branch, so the body gets gradients.
    torch.testing.assert_close(generator(x), x + RESIDUAL_GAIN * correction)
    # The gain is fixed: saved with the weights, never trained (a learnt gain collapses to 0).
    assert "residual_gain" in generator.state_dict()
    assert all(name != "residual_gain" for name, _ in generator.named_parameters())
    loss = (generator(x) - x.flip(-1)).abs().mean()
    loss.backward()
    assert generator.model[1].weight.grad.abs().sum() > 0
    with torch.no_grad():
        generator.residual_gain.zero_()
    torch.testing.assert_close(generator(x), x)
    torch.testing.assert_close(fuse_for_inference(generator)(x), x)
    # No tanh and no clamp on the residual path: both saturate and cut the gradient. A target
    # at the window floor (-1) with an input above it must still pull the output down.
    generator.zero_grad()
    floor = torch.full_like(x, -1.0)
    start = torch.full_like(x, -0.95)
    (generator(start) - floor).abs().mean().backward()
    assert generator.model[1].weight.grad.abs().sum() == 0  # gain is 0 here: no branch
    with torch.no_grad():
        generator.residual_gain.fill_(RESIDUAL_GAIN)
    generator.zero_grad()
    (generator(start) - floor).abs().mean().backward()
    assert generator.model[-1].bias.grad.item() > 0  # the last layer is pushed down
    assert not isinstance(generator.model[-1], torch.nn.Tanh)


def test_degradation_blurs_along_rows_only():
    stripes = np.where(np.arange(40) % 8 < 4, 1.0, -1.0)
    along_columns = np.tile(stripes, (48, 1))  # constant down every column: nothing to blur
    np.testing.assert_allclose(degrade_slice(along_columns, 4.0), along_columns, atol=1e-4)
    along_rows = np.tile(np.where(np.arange(48) % 4 < 2, 1.0, -1.0)[:, None], (1, 8))
    # A 4-row period is finer than a 4-row slice profile: the acquisition cannot see it.
    assert np.abs(degrade_slice(along_rows, 4.0)[8:-8]).max() < 0.5


def test_blur_rows_preserves_mass_per_column_and_takes_one_ratio_per_image():
    x = torch.zeros(2, 1, 21, 3)
    x[:, 0, 10] = 1.0
    out = blur_rows(x, torch.tensor([2.0, 6.0]))
    torch.testing.assert_close(out.sum(dim=2), torch.ones(2, 1, 3), atol=1e-5, rtol=0)
    assert out[0, 0, 10, 0] > out[1, 0, 10, 0]  # wider profile, lower peak


def test_paired_patches_are_the_same_places_degraded():
    rng = np.random.default_rng(0)
    array = rng.uniform(-1, 1, (40, 36, 34)).astype(np.float32)
    volume = PreparedVolume(array, thick_axis=2, lr_axes=[0], ratio=4.0)
    x, y, y_degraded = sample_volume_patches(volume, np.random.default_rng(3), paired=True)
    x2, y2 = sample_volume_patches(volume, np.random.default_rng(3))[:2]
    np.testing.assert_array_equal(y, y2)  # pairing does not change the unpaired patches
    assert y_degraded.shape == y.shape
    # Each degraded patch is a crop of the degraded HR slice at the clean patch's position.
    hr_slice = array[0]  # thick axis 2 -> HR slices are numpy axis 0
    degraded_slice = degrade_slice(hr_slice, 4.0)
    found = False
    for r in range(hr_slice.shape[0] - 31):
        for c in range(hr_slice.shape[1] - 31):
            if np.array_equal(hr_slice[r : r + 32, c : c + 32].astype(np.float16), y[0]):
                np.testing.assert_allclose(
                    y_degraded[0], degraded_slice[r : r + 32, c : c + 32].astype(np.float16)
                )
                found = True
    assert found
    assert np.abs(y_degraded.astype(float) - y.astype(float)).mean() > 0.1


def _brain_crop(tmp_path, stop: int) -> tuple[Path, sitk.Image]:
    """A real brain MRI (6.5 mm slices) and its in-plane crop [16:stop] written as crop.nrrd."""
    crop = tmp_path / "crop.nrrd"
    image = sitk.ReadImage(str(TEST_DATA / BRAIN1))
    sitk.WriteImage(image[16:stop, 16:stop, :], str(crop))
    return crop, image


def test_training_with_safeguards_logs_the_paired_loss_and_exports_a_residual_model(tmp_path):
    crop, _ = _brain_crop(tmp_path, 80)
    tiny = "--epochs 1 --max-patches 32 --base-filters 4 --n-blocks 1 --disc-filters 4 --quiet"
    base = ["train", crop, *tiny.split(), "--device", "cpu"]
    runs = {}
    on = ["--lambda-paired", "5", "--residual", "--epochs", "2", "--warmup-epochs", "1"]
    on += ["--lambda-dc", "2"]
    for name, extra in (("on", on), ("off", [])):
        out = tmp_path / name
        result = clade_in_process(*base, "--out", out, *extra)
        assert result.returncode == 0, result.stderr
        events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
        epochs = [e for e in events if e["event"] == "epoch"]
        runs[name] = epochs[-1]["losses"]["paired"]
        if name == "on":
            # Epoch 1 is a warm-up: G_X on the paired term alone, no adversarial game.
            first, second = epochs[0]["losses"], epochs[1]["losses"]
            assert first["paired"] > 0 and first["adv"] == 0 and first["d_x"] == 0
            assert second["adv"] > 0 and second["d_x"] > 0 and second["cyc"] > 0
            assert first["dc"] == 0 and second["dc"] > 0
            # The generators' Adam moments restart with the CycleGAN epoch: their step count is
            # that epoch's steps, not the warm-up's plus them.
            per_epoch = [e for e in events if e["event"] == "step"][-1]["steps_per_epoch"]
            state = torch.load(out / "checkpoint.pt", weights_only=True)
            counts = {int(s["step"]) for s in state["networks"]["opt_g"]["state"].values()}
            assert counts == {per_epoch}
        metadata = torch.load(out / "model_final.pt", weights_only=True)["metadata"]
        assert metadata["architecture"]["residual"] is (name == "on")
    assert runs["on"] > 0 and runs["off"] == 0


def _copy_state(network):
    return {k: v.clone() for k, v in network.state_dict().items()}


def test_warmup_step_trains_only_g_x_on_the_paired_term():
    config = TrainingConfig(
        base_filters=4,
        n_blocks=1,
        disc_filters=4,
        lambda_paired=5.0,
        residual=True,
        warmup_epochs=1,
    )
    torch.manual_seed(0)
    networks = build_networks(config)
    step = TrainStep(networks, config, torch.device("cpu"))
    before = {name: _copy_state(net) for name, net in networks.items()}
    y = torch.rand(4, 1, 32, 32) * 2 - 1
    y_degraded = torch.from_numpy(np.stack([degrade_slice(patch[0].numpy(), 4.0) for patch in y]))[
        :, None
    ]
    with torch.no_grad():
        expected_paired = float((networks["g_x"](y_degraded) - y).abs().mean())
    values = dict(zip(LOSS_NAMES, step.warmup(y, y_degraded).tolist()))
    assert values["paired"] == pytest.approx(expected_paired, rel=1e-5)
    assert values["g_total"] == pytest.approx(5.0 * expected_paired, rel=1e-5)
    assert values["adv"] == values["d_x"] == values["cyc"] == 0
    changed = {
        name: any(not torch.equal(before[name][k], v) for k, v in net.state_dict().items())
        for name, net in networks.items()
    }
    assert changed == {"g_x": True, "g_y": False, "d_x": False, "d_y": False}


@pytest.mark.parametrize("size", [28, 34, 132])
def test_training_patch_sizes_outside_the_generator_grid_are_refused(size):
    with pytest.raises(CladeError, match="multiple of 4 from 32 to 128"):
        TrainingConfig(patch_size=size).validate()


def test_larger_training_patches_reach_the_bank_and_the_model_still_runs_on_whole_slices(
    tmp_path,
):
    """64-pixel paired patches (issue 14): the bank holds them, the model file still loads."""
    from CLADE.model_file import load_model
    from CLADE.pipeline import super_resolve

    crop, image = _brain_crop(tmp_path, 86)
    out = tmp_path / "run"
    tiny = "--epochs 1 --warmup-epochs 1 --lambda-paired 5 --residual --max-patches 16"
    tiny += " --base-filters 4 --n-blocks 1 --disc-filters 4 --quiet --patch-size 64"
    result = clade_in_process("train", crop, "--out", out, *tiny.split())
    assert result.returncode == 0, result.stderr
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["config"]["patch_size"] == 64
    model = load_model(out / "model_final.pt")
    assert model.metadata["patch_size"] == 32  # the inference patch of --tiling patches
    small = image[26:66, 26:66, :]
    result = super_resolve(small, model, device="cpu")
    assert result.image.GetSize()[:2] == small.GetSize()[:2]


def test_warmup_without_the_paired_term_is_refused():
    with pytest.raises(CladeError, match="--lambda-paired"):
        TrainingConfig(warmup_epochs=2).validate()


def test_paired_ratios_choose_the_simulated_thickness():
    rng = np.random.default_rng(0)
    array = rng.uniform(-1, 1, (40, 36, 34)).astype(np.float32)
    volume = PreparedVolume(array, thick_axis=2, lr_axes=[0], ratio=2.0)
    own = sample_volume_patches(volume, np.random.default_rng(3), paired=True)
    wide = sample_volume_patches(
        volume, np.random.default_rng(3), paired=True, paired_ratios=(6.0, 6.0)
    )
    np.testing.assert_array_equal(own[1], wide[1])  # same clean patches
    # Patch 0 comes from HR slice 0 (first in the stack); find its position in that slice.
    hr_slice, y0 = array[0], wide[1][0]
    positions = [
        (r, c)
        for r in range(hr_slice.shape[0] - 31)
        for c in range(hr_slice.shape[1] - 31)
        if np.array_equal(hr_slice[r : r + 32, c : c + 32].astype(np.float16), y0)
    ]
    assert len(positions) == 1
    r, c = positions[0]
    for ratio, result in ((2.0, own), (6.0, wide)):
        np.testing.assert_allclose(
            result[2][0], degrade_slice(hr_slice, ratio)[r : r + 32, c : c + 32].astype(np.float16)
        )
    assert not np.array_equal(own[2], wide[2])


def test_data_consistency_compares_slice_profile_blurs_of_input_and_output():
    config = TrainingConfig(
        base_filters=4,
        n_blocks=1,
        disc_filters=4,
        residual=True,
        lambda_dc=3.0,
        lambda_ident=0.0,
    )
    torch.manual_seed(0)
    networks = build_networks(config)
    x = torch.rand(2, 1, 32, 32) * 2 - 1
    y = torch.rand(2, 1, 32, 32) * 2 - 1
    ratios = torch.tensor([3.0, 6.0])
    with torch.no_grad():
        expected = float(
            (blur_rows(networks["g_x"](x), ratios) - blur_rows(x, ratios)).abs().mean()
        )
    values = dict(
        zip(
            LOSS_NAMES,
            TrainStep(networks, config, torch.device("cpu"))(x, y, None, ratios).tolist(),
        )
    )
    assert values["dc"] == pytest.approx(expected, rel=1e-5) and expected > 0
    # An identity G_X is perfectly consistent with its input.
    networks["g_x"].residual_gain.zero_()
    values = dict(
        zip(
            LOSS_NAMES,
            TrainStep(networks, config, torch.device("cpu"))(x, y, None, ratios).tolist(),
        )
    )
    assert values["dc"] == 0
