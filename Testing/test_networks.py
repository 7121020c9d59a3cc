"""ModConv demodulation and the shapes of the paper's networks."""

from __future__ import annotations

import torch
from torch import nn

from CLADE.networks import (
    ModConv,
    PatchDiscriminator,
    ResnetGenerator,
    count_parameters,
    fuse_for_inference,
)


def test_demodulated_weights_have_unit_norm_per_output_channel():
    torch.manual_seed(0)
    conv = ModConv(3, 5, 3)
    conv.weight.data *= torch.arange(1, 6).view(5, 1, 1, 1)  # very different channel norms
    norms = conv.demodulated_weight().flatten(1).norm(dim=1)
    torch.testing.assert_close(norms, torch.ones(5))
    transposed = ModConv(4, 6, 3, stride=2, transposed=True)
    w = transposed.demodulated_weight()  # (in, out, k, k): norm over in and kernel per out
    torch.testing.assert_close(w.transpose(0, 1).flatten(1).norm(dim=1), torch.ones(6))


def test_modconv_output_does_not_depend_on_weight_scale():
    torch.manual_seed(0)
    conv = ModConv(2, 3, 3)
    x = torch.randn(1, 2, 8, 8)
    before = conv(x)
    conv.weight.data *= 37.0
    torch.testing.assert_close(conv(x), before)


def test_generator_has_no_instance_norm_and_every_conv_is_modconv():
    generator = ResnetGenerator()
    kinds = {type(m) for m in generator.modules()}
    assert not any(issubclass(k, nn.modules.instancenorm._InstanceNorm) for k in kinds)
    assert nn.Conv2d not in kinds and nn.ConvTranspose2d not in kinds
    assert sum(isinstance(m, ModConv) for m in generator.modules()) == 1 + 2 + 12 + 2 + 1
    assert 7.5e6 < count_parameters(generator) < 8.2e6  # the paper's ~7.8 M


def test_generator_shapes_and_tanh_range():
    torch.manual_seed(0)
    for upsample in ("transpose", "resize"):
        generator = ResnetGenerator(base_filters=8, n_blocks=2, upsample=upsample)
        y = generator(torch.randn(4, 1, 32, 32) * 10)
        assert y.shape == (4, 1, 32, 32)
        assert y.abs().max() <= 1.0 and y.std() > 0


def test_discriminator_is_patchgan_with_instance_norm_inside():
    d = PatchDiscriminator()
    norms = [m for m in d.modules() if isinstance(m, nn.InstanceNorm2d)]
    assert len(norms) == 3  # all but the first and last layers
    assert d(torch.randn(2, 1, 32, 32)).shape == (2, 1, 2, 2)


def test_fused_generator_computes_the_same_function():
    torch.manual_seed(0)
    generator = ResnetGenerator(base_filters=8, n_blocks=2).eval()
    fused = fuse_for_inference(generator)
    assert not any(isinstance(m, ModConv) for m in fused.modules())
    x = torch.randn(3, 1, 32, 32)
    torch.testing.assert_close(fused(x), generator(x), atol=1e-5, rtol=1e-4)
