"""CLADE's training losses (method section 5), one small function each.

All functions take batches shaped ``(N, 1, H, W)`` and return a scalar tensor (the mean over
the batch and pixels), so the loss weights keep the same meaning for any batch or patch size.

* :func:`adversarial_loss`: the GAN loss on discriminator *logits* against a real/fake target;
  ``"bce"`` (binary cross-entropy, the paper's log form) or ``"lsgan"`` (least squares).
* :func:`cycle_loss`, :func:`identity_loss`: mean absolute differences (L1).
* :func:`sobel`, :func:`gradient_mapping_loss`: CLADE's gradient-mapping term, the L1 distance
  between the horizontal and vertical Sobel responses of two images.

Generators are trained with the non-saturating form (fakes scored against the *real* target),
as in CycleGAN and the TensorFlow implementation the paper used.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .loss_terms import ADVERSARIAL_KINDS  # noqa: F401  (part of this API)

# Unnormalised 3x3 Sobel kernels, as tf.image.sobel_edges (the paper used TensorFlow 2):
# horizontal derivative (changes along W) and vertical derivative (changes along H).
_SOBEL_H = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
_SOBEL_V = _SOBEL_H.t().contiguous()


def adversarial_loss(logits: torch.Tensor, real: bool, kind: str = "bce") -> torch.Tensor:
    """GAN loss of discriminator ``logits`` against the target "real" (1) or "fake" (0).

    ``bce`` is ``-mean(log sigmoid(l))`` for real and ``-mean(log(1 - sigmoid(l)))`` for fake,
    computed stably from logits; ``lsgan`` is ``mean((l - target)^2)``.

    Example:
        >>> round(adversarial_loss(torch.zeros(2, 1, 2, 2), real=True).item(), 4)  # log 2
        0.6931
        >>> adversarial_loss(torch.full((1, 1, 2, 2), 3.0), real=False, kind="lsgan").item()
        9.0
    """
    target = torch.ones_like(logits) if real else torch.zeros_like(logits)
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(logits.float(), target.float())
    if kind == "lsgan":
        return F.mse_loss(logits.float(), target.float())
    raise ValueError(f"adversarial loss must be one of {ADVERSARIAL_KINDS}, not {kind!r}")


def discriminator_loss(
    real_logits: torch.Tensor, fake_logits: torch.Tensor, kind: str = "bce"
) -> torch.Tensor:
    """Half the sum of the real and fake terms (CycleGAN's halving slows D relative to G).

    Example:
        >>> round(discriminator_loss(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2)).item(), 4)
        0.6931
    """
    return 0.5 * (
        adversarial_loss(real_logits, True, kind) + adversarial_loss(fake_logits, False, kind)
    )


def cycle_loss(reconstructed: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference between a cycled image and its original.

    Example:
        >>> cycle_loss(torch.ones(1, 1, 2, 2), torch.zeros(1, 1, 2, 2)).item()
        1.0
    """
    return F.l1_loss(reconstructed.float(), original.float())


def identity_loss(mapped: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    """Mean absolute change a generator makes to an image already in its target domain.

    Example:
        >>> identity_loss(torch.full((1, 1, 2, 2), 0.5), torch.zeros(1, 1, 2, 2)).item()
        0.5
    """
    return F.l1_loss(mapped.float(), original.float())


def sobel(images: torch.Tensor) -> torch.Tensor:
    """Horizontal and vertical Sobel responses, ``(N, 1, H, W) -> (N, 2, H, W)``.

    Borders are reflect-padded (as ``tf.image.sobel_edges``), so the output keeps the input size
    and a constant image has zero gradient everywhere. Channel 0 is the horizontal derivative
    (along W), channel 1 the vertical one (along H); kernels are unnormalised (a ramp of slope 1
    gives 8).

    Example:
        >>> ramp = torch.arange(5.0).repeat(5, 1)[None, None]  # value = column index
        >>> g = sobel(ramp)
        >>> g[0, 0, 2].tolist(), g[0, 1].abs().max().item()
        ([0.0, 8.0, 8.0, 8.0, 0.0], 0.0)
    """
    images = images.float()
    kernels = torch.stack([_SOBEL_H, _SOBEL_V])[:, None].to(images.device)
    padded = F.pad(images, (1, 1, 1, 1), mode="reflect")
    return F.conv2d(padded, kernels)


def gradient_mapping_loss(cycled: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    """CLADE's L_gmap term for one cycle: mean |S_h(a) - S_h(b)| + mean |S_v(a) - S_v(b)|.

    The trainer sums it over both cycles (x -> G_X -> G_Y and y -> G_Y -> G_X).

    Example:
        >>> a = torch.rand(2, 1, 8, 8)
        >>> gradient_mapping_loss(a, a).item()
        0.0
        >>> ramp = torch.arange(8.0).repeat(8, 1)[None, None]
        >>> gradient_mapping_loss(ramp, torch.zeros_like(ramp)).item()  # 8 inside, 0 at borders
        6.0
    """
    difference = (sobel(cycled) - sobel(original)).abs()
    # Sum of the two per-direction means, as the paper's |S_x| + |S_y| terms.
    return difference.mean(dim=(0, 2, 3)).sum()
