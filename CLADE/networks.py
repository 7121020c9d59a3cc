"""CLADE's networks: the weight-demodulated ResNet generator and the PatchGAN discriminator.

Shapes follow CycleGAN's reference implementation (``ResnetGenerator``, ``NLayerDiscriminator``)
with the CLADE change: every generator convolution is a :class:`ModConv` and there is no
instance normalisation in the generator. Width and depth are parameters so tests can use tiny
networks; the defaults are the paper's (64 base filters, 6 residual blocks, ~7.8 M parameters).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

DEMODULATION_EPS = 1e-8

#: Fixed gain of the residual branch (see :class:`ResnetGenerator`).
RESIDUAL_GAIN = 0.3


class ModConv(nn.Module):
    """A 2D convolution whose weights are demodulated before every use (StyleGAN2, style s = 1).

    For weights ``w[o, i, kh, kw]`` (output channel ``o``)::

        w''[o, i, kh, kw] = w[o, i, kh, kw] / sqrt( sum_{i, kh, kw} w[o, i, kh, kw]^2 + 1e-8 )

    so each output channel's filter has unit L2 norm. With ``transposed=True`` the layer is a
    transposed convolution (weights ``[i, o, kh, kw]``) demodulated the same way, per output
    channel. Padding is done by the caller (reflection padding in the generator).

    Example:
        >>> conv = ModConv(1, 4, 3)
        >>> conv(torch.zeros(2, 1, 8, 8)).shape
        torch.Size([2, 4, 6, 6])
        >>> # float32 rsqrt is accurate to about 1e-6 relative, not to allclose's default 1e-8
        >>> norms = conv.demodulated_weight().flatten(1).norm(dim=1)
        >>> torch.allclose(norms, torch.ones(4), atol=1e-4)
        True
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        bias: bool = True,
        transposed: bool = False,
        padding: int = 0,
        output_padding: int = 0,
    ) -> None:
        super().__init__()
        self.stride = stride
        self.transposed = transposed
        self.padding = padding
        self.output_padding = output_padding
        shape = (
            (in_channels, out_channels, kernel_size, kernel_size)
            if transposed
            else (out_channels, in_channels, kernel_size, kernel_size)
        )
        self.weight = nn.Parameter(torch.empty(shape))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        nn.init.normal_(self.weight, 0.0, 0.02)

    def demodulated_weight(self) -> torch.Tensor:
        """The weights after demodulation (unit norm per output channel)."""
        reduce = (0, 2, 3) if self.transposed else (1, 2, 3)
        norm = torch.rsqrt(self.weight.pow(2).sum(dim=reduce, keepdim=True) + DEMODULATION_EPS)
        return self.weight * norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.demodulated_weight()
        if self.transposed:
            return F.conv_transpose2d(
                x, weight, self.bias, self.stride, self.padding, self.output_padding
            )
        return F.conv2d(x, weight, self.bias, self.stride, self.padding)

    def to_plain_conv(self) -> nn.Module:
        """A plain ``nn.Conv2d``/``nn.ConvTranspose2d`` holding the demodulated weights.

        Demodulation depends only on the weights, so at inference it is done once instead of on
        every batch (see :func:`fuse_for_inference`).
        """
        weight = self.demodulated_weight().detach()
        if self.transposed:
            conv = nn.ConvTranspose2d(
                weight.shape[0],
                weight.shape[1],
                weight.shape[2],
                self.stride,
                self.padding,
                self.output_padding,
                bias=self.bias is not None,
            )
        else:
            conv = nn.Conv2d(
                weight.shape[1],
                weight.shape[0],
                weight.shape[2],
                self.stride,
                self.padding,
                bias=self.bias is not None,
            )
        conv.weight.data.copy_(weight)
        if self.bias is not None:
            conv.bias.data.copy_(self.bias.detach())
        return conv.to(weight.device)


class ResidualBlock(nn.Module):
    """reflect-pad 1, ModConv 3x3, ReLU, reflect-pad 1, ModConv 3x3, plus the skip connection."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1),
            ModConv(channels, channels, 3),
            nn.ReLU(inplace=True),
            nn.ReflectionPad2d(1),
            ModConv(channels, channels, 3),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResnetGenerator(nn.Module):
    """CLADE's generator: encoder, ``n_blocks`` residual blocks, decoder, tanh (method section 4).

    (With ``residual=True`` the tanh is left out: see below.)

    ``upsample="transpose"`` is the paper's transposed convolution; ``"resize"`` (nearest-neighbour
    x2 then a 3x3 ModConv) is an option against checkerboard artefacts. Patch sides must be
    multiples of 4.

    ``residual=True`` (a fidelity safeguard beyond the paper) returns
    ``x + g * net(x)`` with a *fixed* gain ``g`` (:data:`RESIDUAL_GAIN` = 0.3, a
    buffer saved with the weights): the network learns a correction to its (spline-interpolated)
    input instead of re-synthesising the whole patch. Why fixed: a learnt scalar gain collapses.
    At initialisation the body's output is uncorrelated with the needed correction, so the
    fastest way down any loss is ``g -> 0``, after which the body gets no gradient. Measured on
    the paired term alone (``runs``-style probe, 64 filters, Adam 2e-4, batch 16): a learnt gain
    fell from 0.1 to 0.000 in 300 steps with no gain over spline, while a fixed gain of 0.1
    improved held-out PSNR by +0.6 dB and one of 0.3 by +0.7 dB in 200 steps. Demodulation makes
    a zero-initialised last layer impossible, hence a gain at all. The residual branch has no
    tanh and the sum no clamp: both saturate. In a CT run, one early loss spike pushed the tanh
    into saturation on every patch (pre-tanh values ~50: zero gradient, paired L1 20x spline's,
    never recovered); a clamp likewise cuts the gradient where the target sits at the window
    floor (air). A linear branch always feels the loss and recovers from a spike.

    Example:
        >>> g = ResnetGenerator(base_filters=8, n_blocks=1)
        >>> y = g(torch.zeros(3, 1, 32, 32))
        >>> y.shape, bool(y.abs().max() <= 1)
        (torch.Size([3, 1, 32, 32]), True)
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        base_filters: int = 64,
        n_blocks: int = 6,
        upsample: str = "transpose",
        residual: bool = False,
    ) -> None:
        super().__init__()
        self.residual = residual
        if residual:
            # A buffer, not a Parameter: saved in the state dict but never trained (see above).
            self.register_buffer("residual_gain", torch.full((1,), RESIDUAL_GAIN))
        if upsample not in ("transpose", "resize"):
            raise ValueError(f"upsample must be 'transpose' or 'resize', not {upsample!r}")
        f = base_filters
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            ModConv(in_channels, f, 7),
            nn.ReLU(inplace=True),
            ModConv(f, 2 * f, 3, stride=2, padding=1),
            nn.ReLU(inplace=True),
            ModConv(2 * f, 4 * f, 3, stride=2, padding=1),
            nn.ReLU(inplace=True),
        ]
        layers += [ResidualBlock(4 * f) for _ in range(n_blocks)]
        for channels_in, channels_out in ((4 * f, 2 * f), (2 * f, f)):
            if upsample == "transpose":
                layers += [
                    ModConv(
                        channels_in,
                        channels_out,
                        3,
                        stride=2,
                        transposed=True,
                        padding=1,
                        output_padding=1,
                    ),
                ]
            else:
                layers += [
                    nn.Upsample(scale_factor=2, mode="nearest"),
                    nn.ReflectionPad2d(1),
                    ModConv(channels_in, channels_out, 3),
                ]
            layers.append(nn.ReLU(inplace=True))
        layers += [nn.ReflectionPad2d(3), ModConv(f, out_channels, 7)]
        if not residual:
            layers.append(nn.Tanh())
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.residual:
            return x + self.residual_gain * self.model(x)
        return self.model(x)


class PatchDiscriminator(nn.Module):
    """CycleGAN's 70x70 PatchGAN, returning a map of logits (no sigmoid: the loss applies it).

    conv 4x4 stride 2 (``base_filters``), then ``n_layers - 1`` more stride-2 convs doubling the
    width, a stride-1 conv, and a stride-1 conv to one channel; LeakyReLU 0.2 and instance norm on
    all but the first and last layers.

    Example:
        >>> d = PatchDiscriminator(base_filters=8)
        >>> d(torch.zeros(2, 1, 32, 32)).shape
        torch.Size([2, 1, 2, 2])
    """

    def __init__(self, in_channels: int = 1, base_filters: int = 64, n_layers: int = 3) -> None:
        super().__init__()
        f = base_filters
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, f, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2, inplace=True),
        ]
        width = f
        for n in range(1, n_layers):
            previous, width = width, f * min(2**n, 8)
            layers += [
                nn.Conv2d(previous, width, 4, stride=2, padding=1, bias=False),
                nn.InstanceNorm2d(width),
                nn.LeakyReLU(0.2, inplace=True),
            ]
        previous, width = width, f * min(2**n_layers, 8)
        layers += [
            nn.Conv2d(previous, width, 4, stride=1, padding=1, bias=False),
            nn.InstanceNorm2d(width),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(width, 1, 4, stride=1, padding=1),
        ]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def init_weights(network: nn.Module, std: float = 0.02) -> nn.Module:
    """Draw every convolution's weights from N(0, ``std``) and zero its biases, in place.

    The paper is silent on initialisation; N(0, 0.02) is the start of CycleGAN's reference
    implementations (PyTorch and TensorFlow). Draws come from the current torch seed, one module
    after another in ``network.modules()`` order, so a seeded run starts from the same weights.

    Example:
        >>> first = init_weights(PatchDiscriminator(base_filters=4)).model[0]
        >>> bool((first.bias == 0).all()), round(float(first.weight.detach().std()), 1) <= 0.1
        (True, True)
    """
    for module in network.modules():
        if isinstance(module, (nn.Conv2d, ModConv)):
            nn.init.normal_(module.weight, 0.0, std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    return network


def fuse_for_inference(generator: nn.Module) -> nn.Module:
    """Return a copy of ``generator`` with every ModConv replaced by a plain convolution.

    The result computes the same function (to float rounding) without re-demodulating weights on
    every batch; it is for inference only (no gradients to the original weights).

    Example:
        >>> g = ResnetGenerator(base_filters=4, n_blocks=1).eval()
        >>> x = torch.randn(1, 1, 16, 16)
        >>> torch.allclose(g(x), fuse_for_inference(g)(x), atol=1e-6)
        True
    """
    import copy

    fused = copy.deepcopy(generator)
    for _name, module in list(fused.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, ModConv):
                setattr(module, child_name, child.to_plain_conv())
    return fused.eval()


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters.

    Example:
        >>> count_parameters(ResnetGenerator()) > 7_000_000
        True
    """
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
