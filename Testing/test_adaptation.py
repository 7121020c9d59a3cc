"""Adapting a model to the volume it super-resolves (CLADE.adaptation), on real volumes."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from conftest import CT_NATIVE

from CLADE.adaptation import adapt_to_volume
from CLADE.errors import Cancelled, CladeError
from CLADE.model_file import LoadedModel, build_generator, make_metadata
from CLADE.normalisation import NormalisationRecipe

CT_WINDOW = NormalisationRecipe("fixed", -1024.0, 2048.0)


@pytest.fixture(scope="module")
def ct_crop(test_data):
    # 96 x 96 in-plane voxels of a real 2 mm CT: 20 slices, soft tissue, bone and contrast.
    image = sitk.ReadImage(str(test_data / CT_NATIVE))
    return image[100:196, 72:168, :]


def tiny_ct_model(seed: int = 0) -> LoadedModel:
    torch.manual_seed(seed)
    metadata = make_metadata(
        "tiny",
        "CT",
        base_filters=16,
        n_blocks=1,
        residual=True,
        upsample="resize",
        normalisation=CT_WINDOW,
        trained=False,
    )
    return LoadedModel(build_generator(metadata).eval(), metadata)


def weights(model: LoadedModel) -> dict:
    return {k: v.detach().clone() for k, v in model.generator.state_dict().items()}


def test_adaptation_trains_a_copy_and_lowers_the_held_out_error(ct_crop):
    model = tiny_ct_model()
    before = weights(model)
    voxels = sitk.GetArrayFromImage(ct_crop).copy()
    seen = []
    result = adapt_to_volume(
        ct_crop,
        model,
        steps=150,
        device="cpu",
        learning_rate=1e-3,
        max_patches=800,
        progress=seen.append,
    )
    assert result.improved and result.error_after < 0.9 * result.error_before
    assert result.model is not model and result.model.metadata["adapted"]["steps"] == 150
    assert result.ratio == pytest.approx(
        ct_crop.GetSpacing()[2] / ct_crop.GetSpacing()[0], rel=0.02
    )
    # The model and the image passed in are untouched.
    for key, value in weights(model).items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(ct_crop), voxels)
    # Progress: one report per step, in order, with a finite ETA that reaches 0.
    assert [p.done_steps for p in seen] == list(range(1, 151))
    assert all(p.total_steps == 150 for p in seen) and seen[-1].eta_seconds == 0
    assert "held-back pairs" in result.summary() and "adapted model used" in result.summary()


def test_same_seed_gives_the_same_adapted_weights(ct_crop):
    first = adapt_to_volume(ct_crop, tiny_ct_model(), steps=20, device="cpu", max_patches=400)
    second = adapt_to_volume(ct_crop, tiny_ct_model(), steps=20, device="cpu", max_patches=400)
    other = adapt_to_volume(
        ct_crop, tiny_ct_model(), steps=20, device="cpu", max_patches=400, seed=1
    )
    a, b, c = (weights(r.model) for r in (first, second, other))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_without_improvement_the_original_model_is_kept(ct_crop):
    # A learning rate of 0 cannot lower the error: the safeguard must hand back the original.
    model = tiny_ct_model()
    result = adapt_to_volume(
        ct_crop, model, steps=5, device="cpu", learning_rate=0.0, max_patches=400
    )
    assert not result.improved and result.model is model
    assert "adapted" not in result.model.metadata
    assert "the original model is used" in result.summary()


def test_cancel_stops_between_steps(ct_crop):
    calls = []

    def cancel() -> bool:
        calls.append(1)
        return len(calls) > 3

    with pytest.raises(Cancelled, match="nothing was written"):
        adapt_to_volume(
            ct_crop, tiny_ct_model(), steps=50, device="cpu", max_patches=400, cancel=cancel
        )
    assert len(calls) == 4


def test_thick_axis_along_x_is_adapted_along_x(ct_crop):
    # A sagittal acquisition: the same CT turned so that its thick slices run along x.
    array = sitk.GetArrayFromImage(ct_crop)  # z, y, x
    turned = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)))
    turned.SetSpacing(tuple(reversed(ct_crop.GetSpacing())))
    result = adapt_to_volume(turned, tiny_ct_model(), steps=3, device="cpu", max_patches=400)
    assert result.ratio == pytest.approx(turned.GetSpacing()[0] / turned.GetSpacing()[1], rel=0.02)
    with pytest.raises(CladeError, match="isotropic|thick"):
        adapt_to_volume(turned, tiny_ct_model(), steps=3, device="cpu", thick_axis=1)


def test_bad_requests_get_one_sentence(ct_crop):
    with pytest.raises(CladeError, match="at least 1"):
        adapt_to_volume(ct_crop, tiny_ct_model(), steps=0)
    empty = sitk.Image([64, 64, 12], sitk.sitkFloat32)
    empty.SetSpacing((1.0, 1.0, 4.0))
    empty += -1024.0  # air everywhere: no patch has foreground
    with pytest.raises(CladeError, match="without adaptation"):
        adapt_to_volume(empty, tiny_ct_model(), steps=5, device="cpu")
