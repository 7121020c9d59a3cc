"""The training losses on inputs whose values can be worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from CLADE.training import losses


def ramp(size: int = 8, slope: float = 1.0, vertical: bool = False) -> torch.Tensor:
    """(1, 1, size, size) image whose value grows by ``slope`` per column (or per row)."""
    line = torch.arange(size, dtype=torch.float32) * slope
    image = line[:, None].expand(size, size) if vertical else line[None, :].expand(size, size)
    return image.contiguous()[None, None]


def test_sobel_of_a_horizontal_ramp():
    # Sobel-x of f(r, c) = 3c is (1 + 2 + 1) * (f(c+1) - f(c-1)) = 4 * 6 = 24 inside; the reflect
    # padding mirrors the border column, so the derivative there is 0. Sobel-y is 0 everywhere.
    g = losses.sobel(ramp(6, slope=3.0))
    assert g.shape == (1, 2, 6, 6)
    expected_row = torch.tensor([0.0, 24.0, 24.0, 24.0, 24.0, 0.0])
    assert torch.equal(g[0, 0], expected_row.expand(6, 6))
    assert torch.equal(g[0, 1], torch.zeros(6, 6))


def test_sobel_of_a_vertical_ramp_is_the_transpose():
    g = losses.sobel(ramp(6, vertical=True))
    assert torch.equal(g[0, 0], torch.zeros(6, 6))
    assert torch.equal(g[0, 1], torch.tensor([0.0, 8, 8, 8, 8, 0])[:, None].expand(6, 6))


def test_sobel_of_a_constant_is_zero():
    assert torch.equal(losses.sobel(torch.full((2, 1, 5, 7), 0.3)), torch.zeros(2, 2, 5, 7))


def test_gradient_mapping_is_zero_for_identical_images():
    a = torch.randn(3, 1, 32, 32)
    assert losses.gradient_mapping_loss(a, a.clone()).item() == 0.0


def test_gradient_mapping_counts_both_directions():
    # 8x8 ramp against a flat image: 6 of 8 columns have |Sobel-x| = 8, so the mean is 6;
    # Sobel-y is 0 for both. A vertical ramp gives the same through the other operator, and
    # the sum of both ramps gives both terms.
    flat = torch.zeros(1, 1, 8, 8)
    assert losses.gradient_mapping_loss(ramp(), flat).item() == pytest.approx(6.0)
    assert losses.gradient_mapping_loss(ramp(vertical=True), flat).item() == pytest.approx(6.0)
    both = ramp() + ramp(vertical=True)
    assert losses.gradient_mapping_loss(both, flat).item() == pytest.approx(12.0)
    # An intensity offset has no edges: gradient mapping ignores it, L1 does not.
    assert losses.gradient_mapping_loss(ramp() + 5.0, ramp()).item() == 0.0
    assert losses.cycle_loss(ramp() + 5.0, ramp()).item() == 5.0


def test_bce_adversarial_values():
    zeros = torch.zeros(2, 1, 3, 3)
    assert losses.adversarial_loss(zeros, True).item() == pytest.approx(math.log(2))
    assert losses.adversarial_loss(zeros, False).item() == pytest.approx(math.log(2))
    two = torch.full((1, 1, 2, 2), 2.0)
    # -log(sigmoid(2)) = log(1 + e^-2); -log(1 - sigmoid(2)) = log(1 + e^2)
    assert losses.adversarial_loss(two, True).item() == pytest.approx(math.log1p(math.exp(-2)))
    assert losses.adversarial_loss(two, False).item() == pytest.approx(math.log1p(math.exp(2)))
    # Stable far from 0 (a naive log(sigmoid) would give inf).
    assert math.isfinite(losses.adversarial_loss(torch.full((1, 1, 1, 1), -200.0), True).item())


def test_lsgan_adversarial_values():
    logits = torch.tensor([0.0, 1.0, 3.0]).view(1, 1, 1, 3)
    assert losses.adversarial_loss(logits, True, "lsgan").item() == pytest.approx((1 + 0 + 4) / 3)
    assert losses.adversarial_loss(logits, False, "lsgan").item() == pytest.approx((0 + 1 + 9) / 3)
    with pytest.raises(ValueError):
        losses.adversarial_loss(logits, True, "wgan")


def test_discriminator_loss_is_half_the_sum():
    real, fake = torch.full((1, 1, 2, 2), 2.0), torch.full((1, 1, 2, 2), -1.0)
    expected = 0.5 * (math.log1p(math.exp(-2)) + math.log1p(math.exp(-1)))
    assert losses.discriminator_loss(real, fake).item() == pytest.approx(expected)


def test_l1_losses():
    a = torch.tensor([0.0, 1.0, -1.0, 0.5]).view(1, 1, 2, 2)
    b = torch.zeros(1, 1, 2, 2)
    assert losses.cycle_loss(a, b).item() == pytest.approx(2.5 / 4)
    assert losses.identity_loss(a, b).item() == pytest.approx(2.5 / 4)
    assert losses.identity_loss(a, a).item() == 0.0


def test_generator_gradient_pushes_fakes_towards_real():
    logits = torch.zeros(1, 1, 2, 2, requires_grad=True)
    losses.adversarial_loss(logits, True).backward()
    assert (logits.grad < 0).all()  # descending raises the "real" score
