"""Building blocks of the networks: activations with their NF gains, and the Scaled WS conv.

* ``ACTIVATION_GAMMAS`` / ``GammaAct``: an activation times γ = 1/std(act(z)), z ~ N(0, 1), so that
  γ·act(z) has unit variance; the published constants (DeepMind, timm), kept for parity.
* ``ScaledStdConv2d``: a conv whose kernel is standardised per output channel before use, in the
  paper's form (``std_form='nf'``: gain·γ·(W − μ)/sqrt(max(N·σ², eps))) or the published 2021
  code's (``'blog'``: gain·γ·N^-½·(W − μ)/(σ + eps)); a gain of shape (O,1,1,1); ``to_conv2d()``
  freezes it into a plain conv for inference.

The formulas and why: docs/algorithms.md, "Scaled weight standardisation" and "Activation gains (γ)".
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from shogitrain.names import ACTIVATIONS

# γ = 1/std(act(z)) for z ~ N(0,1); DeepMind nfnets/base.py and timm nfnet.py (same numbers).
ACTIVATION_GAMMAS: dict[str, float] = {
    "relu": 1.7139588594436646,
    "silu": 1.7881293296813965,
    "gelu": 1.7015043497085571,
    "leaky_relu": 1.70590341091156,
    "elu": 1.2716004848480225,
    "celu": 1.270926833152771,
    "selu": 1.0008515119552612,
    "tanh": 1.5939117670059204,
    "sigmoid": 4.803835391998291,
    "softplus": 1.9203323125839233,
    "relu6": 1.7131484746932983,
    "identity": 1.0,
}


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


_ACTIVATION_FUNCTIONS = {
    "relu": F.relu,
    "silu": F.silu,
    "gelu": F.gelu,  # exact (erf) form, as in the references
    "leaky_relu": F.leaky_relu,  # negative slope 0.01
    "elu": F.elu,
    "celu": F.celu,
    "selu": F.selu,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "softplus": F.softplus,
    "relu6": F.relu6,
    "identity": _identity,
}

assert tuple(ACTIVATION_GAMMAS) == tuple(_ACTIVATION_FUNCTIONS) == ACTIVATIONS, "activation tables out of step"


def check_activation(name: str) -> str:
    """Return ``name`` if it is a known activation, else raise ``ValueError`` naming it."""
    if name not in _ACTIVATION_FUNCTIONS:
        raise ValueError(f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}")
    return name


def activation_gamma(name: str) -> float:
    """γ for ``name``: the factor that gives γ·act(z) unit variance for z ~ N(0,1)."""
    return ACTIVATION_GAMMAS[check_activation(name)]


class GammaAct(nn.Module):
    """``gamma · act(x)``; ``gamma=1`` gives the plain activation (BN net, published NF code)."""

    def __init__(self, activation: str, gamma: float = 1.0):
        super().__init__()
        self.activation = check_activation(activation)
        self.gamma = float(gamma)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = _ACTIVATION_FUNCTIONS[self.activation](x)
        return y * self.gamma if self.gamma != 1.0 else y

    def extra_repr(self) -> str:
        return f"{self.activation}, gamma={self.gamma:.6g}"


class ScaledStdConv2d(nn.Conv2d):
    """Conv2d with a Scaled Weight-Standardised kernel and a learnable per-channel gain.

    ``gamma`` is multiplied into the kernel (timm's "fold"); the NF network in this package passes
    ``gamma=1`` and applies γ to the activations instead, the published 2021 code passes the
    activation's γ to every WS conv. See the module docstring for the two ``std_form`` formulas.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        dilation: int = 1,
        groups: int = 1,
        bias: bool = True,
        gamma: float = 1.0,
        eps: float = 1e-4,
        gain_init: float = 1.0,
        std_form: str = "nf",
    ):
        if std_form not in ("nf", "blog"):
            raise ValueError(f"unknown std_form {std_form!r}; choose 'nf' or 'blog'")
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                         dilation=dilation, groups=groups, bias=bias)
        self.gain = nn.Parameter(torch.full((out_channels, 1, 1, 1), float(gain_init)))
        self.gamma = float(gamma)
        self.eps = float(eps)
        self.std_form = std_form
        self.fan_in = self.weight[0].numel()  # kh·kw·C_in/groups
        nn.init.kaiming_normal_(self.weight, mode="fan_in", nonlinearity="linear")
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def standardized_weight(self) -> torch.Tensor:
        w = self.weight
        var, mean = torch.var_mean(w, dim=(1, 2, 3), keepdim=True, unbiased=False)
        if self.std_form == "nf":
            w_hat = (w - mean) * torch.rsqrt(torch.clamp(var * self.fan_in, min=self.eps))
            return w_hat * (self.gain * self.gamma)
        # published code: (W - mean) / (std + eps), then gain · gamma · fan_in^-1/2
        w_hat = (w - mean) / (torch.sqrt(var) + self.eps)
        return w_hat * (self.gain * (self.gamma * self.fan_in ** -0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.standardized_weight(), self.bias)

    @torch.no_grad()
    def to_conv2d(self) -> nn.Conv2d:
        """A plain ``nn.Conv2d`` computing the same function (the standardised kernel, frozen)."""
        conv = nn.Conv2d(self.in_channels, self.out_channels, self.kernel_size, stride=self.stride,
                         padding=self.padding, dilation=self.dilation, groups=self.groups,
                         bias=self.bias is not None, device=self.weight.device, dtype=self.weight.dtype)
        conv.weight.copy_(self.standardized_weight())
        if self.bias is not None:
            conv.bias.copy_(self.bias)
        return conv

    def extra_repr(self) -> str:
        return (super().extra_repr()
                + f", gamma={self.gamma:.6g}, eps={self.eps:g}, std_form={self.std_form!r}")


def fold_batchnorm(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    """Fold eval-mode ``bn`` (running statistics) into ``conv`` in place, adding a bias if needed."""
    with torch.no_grad():
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        shift = bn.bias - bn.running_mean * scale
        conv.weight.mul_(scale.reshape(-1, 1, 1, 1))
        if conv.bias is None:
            conv.bias = nn.Parameter(shift.clone())
        else:
            conv.bias.copy_(conv.bias * scale + shift)


def is_finite_float(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
