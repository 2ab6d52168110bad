"""The policy/value ResNet for dlshogi inputs, in three variants built by one ``build_model``.

One layout for all (module names are part of the checkpoint format): ``stem`` (features1_3x3 and
features1_1x1 on x1, features2_1x1 on x2 — 57 planes, or 119 with the entering-king features —,
summed), ``blocks[i]`` (an nn.Sequential of residual blocks), ``final_act``, ``policy_head`` (1×1
conv to 27 planes flattened channel-major to the 2187 move labels, plus a bias) and ``value_head``
(1×1 conv → [norm] → act → fc1 → act → fc2, a logit). Each ``arch`` is a :class:`Recipe` chosen
once: ``'bn'`` is dlshogi's resnet10_swish (7,346,562 parameters at 10×192); ``'nf'`` a
Normalizer-Free ResNet as the papers describe it (WS convs, γ on the activations, α/β signal
bookkeeping, SkipInit, a fixed stem standardisation); ``'nf-blog'`` the published 2021 code line for
line, whose residual branch is the linear map conv2(x) (7,347,340 parameters). ``model.fused()``
folds BN, WS, γ, α and the skip gains away for inference (the same outputs within 1e-5 in float32).
The formulas, the stem-scale measurement and the fusion are in docs/algorithms.md, "NF-ResNet".
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from shogitrain.names import (ARCH_OPTIONS, ARCHS, FEATURES1_PLANES, FEATURES2_PLANES, INPUT2_PLANES,
                              MOVE_DIRECTIONS, PARAMETER_GROUPS, POLICY_SIZE)

from .layers import (GammaAct, ScaledStdConv2d, activation_gamma, check_activation,
                     fold_batchnorm, is_finite_float)

SKIP_INITS = ("zero", "one", "last_gain")

# Default 1/rms of the 'nf' stem output (see the module docstring, "Stem standardisation").
NF_STEM_SCALE = 2.8


class ChannelAffine(nn.Module):
    """``x·scale + shift`` per channel with fixed buffers (no gradient, no batch statistics)."""

    def __init__(self, channels: int, scale: float = 1.0):
        super().__init__()
        self.register_buffer("scale", torch.full((channels,), float(scale)))
        self.register_buffer("shift", torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale.view(1, -1, 1, 1).to(x.dtype) + self.shift.view(1, -1, 1, 1).to(x.dtype)


class Stem(nn.Module):
    """``features1_3x3(x1) + features1_1x1(x1) + features2_1x1(x2)`` → norm → standardize → act."""

    def __init__(self, recipe: "Recipe", channels: int, activation: str, eps: float,
                 input2_planes: int = FEATURES2_PLANES):
        super().__init__()
        self.features1_3x3 = recipe.conv(FEATURES1_PLANES, channels, 3, activation, eps)
        self.features1_1x1 = recipe.conv(FEATURES1_PLANES, channels, 1, activation, eps)
        self.features2_1x1 = recipe.conv(input2_planes, channels, 1, activation, eps)
        self.norm = nn.BatchNorm2d(channels) if recipe.batch_norm else nn.Identity()
        self.standardize = ChannelAffine(channels, NF_STEM_SCALE) if recipe.stem_standardize else nn.Identity()
        self.act = GammaAct(activation) if recipe.batch_norm else nn.Identity()

    def conv_sum(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        y = self.features1_3x3(x1)
        if self.features1_1x1 is not None:  # merged into features1_3x3 by fused()
            y = y + self.features1_1x1(x1)
        return y + self.features2_1x1(x2)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        return self.act(self.standardize(self.norm(self.conv_sum(x1, x2))))


class BNBlock(nn.Module):
    """dlshogi block: ``act(x + BN(conv2(act(BN(conv1(x))))))``."""

    def __init__(self, channels: int, activation: str):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.norm1 = nn.BatchNorm2d(channels)
        self.act1 = GammaAct(activation)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.norm2 = nn.BatchNorm2d(channels)
        self.act2 = GammaAct(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return self.act2(out + x)


class NFBlock(nn.Module):
    """Pre-activation NF block: ``x + alpha·skip_gain·conv2(γ·act(conv1(γ·act(x·beta))))``."""

    def __init__(self, channels: int, activation: str, beta: float, alpha: float, skip_init: str,
                 eps: float):
        super().__init__()
        gamma = activation_gamma(activation)
        self.beta = float(beta)  # 1/β_i in the paper: 1/expected_std of the block input
        self.alpha = float(alpha)
        self.act1 = GammaAct(activation, gamma)
        self.conv1 = ScaledStdConv2d(channels, channels, 3, padding=1, eps=eps)
        self.act2 = GammaAct(activation, gamma)
        self.conv2 = ScaledStdConv2d(channels, channels, 3, padding=1, eps=eps,
                                     gain_init=0.0 if skip_init == "last_gain" else 1.0)
        if skip_init == "last_gain":
            self.register_parameter("skip_gain", None)
        else:
            self.skip_gain = nn.Parameter(torch.tensor(0.0 if skip_init == "zero" else 1.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(x * self.beta) if self.beta != 1.0 else self.act1(x)
        out = self.conv2(self.act2(self.conv1(out)))
        if self.skip_gain is not None:
            out = out * self.skip_gain
        return out * self.alpha + x if self.alpha != 1.0 else out + x

    def extra_repr(self) -> str:
        return f"beta={self.beta:.6g}, alpha={self.alpha:g}"


class NFBlogBlock(nn.Module):
    """The published 2021 block, whose residual branch is ``skip_gain·conv2(x)`` (see module doc)."""

    def __init__(self, channels: int, activation: str, beta: float, alpha: float, eps: float,
                 skip_gain: bool):
        super().__init__()
        gamma = activation_gamma(activation)
        self.beta = float(beta)
        self.alpha = float(alpha)
        self.act = GammaAct(activation)
        self.conv1 = ScaledStdConv2d(channels, channels, 3, padding=1, eps=eps, gamma=gamma,
                                     std_form="blog")
        self.conv2 = ScaledStdConv2d(channels, channels, 3, padding=1, eps=eps, gamma=gamma,
                                     std_form="blog")
        if skip_gain:
            self.skip_gain = nn.Parameter(torch.tensor(0.0))
        else:
            self.register_parameter("skip_gain", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.conv1 is not None:  # the published code's dead computation; dropped by fused()
            out = self.act(x) * self.beta
            out = self.conv1(x)
            out = self.act(out)
        shortcut = x
        out = self.conv2(x)
        if self.skip_gain is not None:
            out = out * self.skip_gain
        return out * self.alpha + shortcut if self.alpha != 1.0 else out + shortcut

    def extra_repr(self) -> str:
        return f"beta={self.beta:.6g}, alpha={self.alpha:g}"


class PolicyHead(nn.Module):
    """``conv`` (k→27, 1×1, no bias) flattened channel-major to 2187, plus a learned ``bias``."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, MOVE_DIRECTIONS, 1, bias=False)
        self.bias = nn.Parameter(torch.zeros(POLICY_SIZE))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        # reshape (not view): a channels_last tensor is copied into the channel-major order
        return self.conv(h).reshape(h.shape[0], POLICY_SIZE) + self.bias


class ValueHead(nn.Module):
    """``conv`` (k→27, 1×1) → ``norm`` → ``act1`` → ``fc1`` → ``act2`` → ``fc2`` (one logit)."""

    def __init__(self, recipe: "Recipe", channels: int, fc_units: int, activation: str, eps: float):
        super().__init__()
        self.conv = recipe.conv(channels, MOVE_DIRECTIONS, 1, activation, eps)
        self.norm = nn.BatchNorm2d(MOVE_DIRECTIONS) if recipe.batch_norm else nn.Identity()
        act_gamma = activation_gamma(activation) if recipe.gamma_on_activations else 1.0
        self.act1 = GammaAct(activation, act_gamma)
        self.fc1 = nn.Linear(POLICY_SIZE, fc_units)
        self.act2 = GammaAct(activation, act_gamma)
        self.fc2 = nn.Linear(fc_units, 1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.norm(self.conv(h))).reshape(h.shape[0], POLICY_SIZE)
        return self.fc2(self.act2(self.fc1(out)))


class ShogiResNet(nn.Module):
    """``forward(x1 [N,62,9,9], x2 [N,57,9,9]) -> (policy_logits [N,2187], value_logit [N,1])``.

    Build it with :func:`build_model`; ``config`` rebuilds it (``build_model(**model.config)``).
    """

    def __init__(self, config: dict, stem: Stem, blocks: nn.Sequential, final_act: nn.Module,
                 policy_head: PolicyHead, value_head: ValueHead):
        super().__init__()
        self.config = dict(config)
        self.arch = config["arch"]
        self.is_fused = False
        self.stem = stem
        self.blocks = blocks
        self.final_act = final_act
        self.policy_head = policy_head
        self.value_head = value_head

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.final_act(self.blocks(self.stem(x1, x2)))
        return self.policy_head(h), self.value_head(h)

    def parameter_groups(self) -> dict[str, list[str]]:
        """``{group: [parameter names]}``; see :func:`parameter_groups`."""
        return parameter_groups(self)

    @torch.no_grad()
    def calibrate_stem(self, x1: torch.Tensor, x2: torch.Tensor) -> dict[str, float]:
        """'nf' only: set the stem standardisation from this net's stem output on real positions.

        Sets ``stem.standardize`` so that every stem channel has mean 0 and variance 1 over
        (N, 9, 9) of this batch. Call once at initialisation (a few thousand positions); the
        buffers are fixed afterwards. Returns the mean and rms std before calibration.
        """
        if not isinstance(self.stem.standardize, ChannelAffine):
            raise ValueError(f"calibrate_stem applies to arch 'nf' (unfused), not {self.arch!r}")
        y = self.stem.conv_sum(x1, x2).double()
        var, mean = torch.var_mean(y, dim=(0, 2, 3), unbiased=False)
        std = var.clamp_min(1e-12).sqrt()
        self.stem.standardize.scale.copy_(1.0 / std)
        self.stem.standardize.shift.copy_(-mean / std)
        return {"mean": float(mean.mean()), "std": float(var.mean().sqrt())}

    @torch.no_grad()
    def fused(self) -> "ShogiResNet":
        """An eval-mode copy for inference with the normalisation and scalings folded away."""
        model = copy.deepcopy(self).eval()
        if model.is_fused:
            return model
        _fuse_stem(model.stem)
        for block in model.blocks:
            _fuse_block(block)
        final_gamma = model.final_act.gamma if isinstance(model.final_act, GammaAct) else 1.0
        if final_gamma != 1.0:  # γ·act(h) feeds both heads' first (linear) convs
            model.final_act.gamma = 1.0
        head = model.policy_head
        head.conv.weight.mul_(final_gamma)
        head = model.value_head
        if isinstance(head.conv, ScaledStdConv2d):
            head.conv = head.conv.to_conv2d()
        head.conv.weight.mul_(final_gamma)
        if isinstance(head.norm, nn.BatchNorm2d):
            fold_batchnorm(head.conv, head.norm)
            head.norm = nn.Identity()
        for act, fc in ((head.act1, head.fc1), (head.act2, head.fc2)):
            fc.weight.mul_(act.gamma)
            act.gamma = 1.0
        model.is_fused = True
        return model


def _fuse_stem(stem: Stem) -> None:
    for name in ("features1_3x3", "features1_1x1", "features2_1x1"):
        conv = getattr(stem, name)
        if isinstance(conv, ScaledStdConv2d):
            setattr(stem, name, conv.to_conv2d())
    conv3, conv1, conv2 = stem.features1_3x3, stem.features1_1x1, stem.features2_1x1
    # a 1×1 conv (no padding) on x1 is the centre tap of a 3×3 conv (padding 1) on x1
    conv3.weight[:, :, 1, 1] += conv1.weight[:, :, 0, 0]
    bias = torch.zeros_like(conv3.weight[:, 0, 0, 0])
    for conv in (conv3, conv1, conv2):
        if conv.bias is not None:
            bias += conv.bias
    stem.features1_1x1 = None
    scale, shift = torch.ones_like(bias), torch.zeros_like(bias)
    if isinstance(stem.norm, nn.BatchNorm2d):
        scale = stem.norm.weight / torch.sqrt(stem.norm.running_var + stem.norm.eps)
        shift = stem.norm.bias - stem.norm.running_mean * scale
        stem.norm = nn.Identity()
    if isinstance(stem.standardize, ChannelAffine):
        scale2, shift2 = stem.standardize.scale.to(bias.dtype), stem.standardize.shift.to(bias.dtype)
        scale, shift = scale * scale2, shift * scale2 + shift2
        stem.standardize = nn.Identity()
    conv3.weight.mul_(scale.view(-1, 1, 1, 1))
    conv2.weight.mul_(scale.view(-1, 1, 1, 1))
    conv3.bias = nn.Parameter(bias * scale + shift)
    conv2.bias = None


def _fuse_block(block: nn.Module) -> None:
    if isinstance(block, BNBlock):
        fold_batchnorm(block.conv1, block.norm1)
        fold_batchnorm(block.conv2, block.norm2)
        block.norm1, block.norm2 = nn.Identity(), nn.Identity()
        return
    block.conv2 = block.conv2.to_conv2d()
    if isinstance(block, NFBlock):
        block.conv1 = block.conv1.to_conv2d()
        for act, conv in ((block.act1, block.conv1), (block.act2, block.conv2)):
            conv.weight.mul_(act.gamma)  # conv(γ·a) = (γ·W) a + b
            act.gamma = 1.0
    else:  # NFBlogBlock: conv1 never reaches the output
        block.conv1 = None
    factor = block.alpha * (float(block.skip_gain) if block.skip_gain is not None else 1.0)
    block.conv2.weight.mul_(factor)
    block.conv2.bias.mul_(factor)
    block.alpha = 1.0
    block.skip_gain = None


@dataclass(frozen=True)
class Recipe:
    """What an arch changes in the one network layout, chosen once by :func:`build_model`."""

    conv: Callable[..., nn.Module]   # (in, out, kernel, activation, eps) → the stem's and value head's convs
    block: Callable[..., nn.Module]  # (channels, activation, beta, options) → a residual block
    batch_norm: bool                 # BatchNorm after the stem sum and the value conv; else NF signal bookkeeping
    stem_standardize: bool           # the fixed per-channel affine after the stem sum ('nf')
    gamma_on_activations: bool       # γ·act (DeepMind's NF style) rather than γ folded into the WS convs


def _plain_conv(cin: int, cout: int, kernel: int, activation: str, eps: float) -> nn.Module:
    return nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False)


def _ws_conv(cin: int, cout: int, kernel: int, activation: str, eps: float) -> nn.Module:
    return ScaledStdConv2d(cin, cout, kernel, padding=kernel // 2, eps=eps)


def _blog_ws_conv(cin: int, cout: int, kernel: int, activation: str, eps: float) -> nn.Module:
    return ScaledStdConv2d(cin, cout, kernel, padding=kernel // 2, eps=eps, gamma=activation_gamma(activation),
                           std_form="blog")


RECIPES = {
    "bn": Recipe(_plain_conv, lambda c, act, beta, o: BNBlock(c, act), batch_norm=True,
                 stem_standardize=False, gamma_on_activations=False),
    "nf": Recipe(_ws_conv, lambda c, act, beta, o: NFBlock(c, act, beta, o["alpha"], o["skip_init"], o["eps"]),
                 batch_norm=False, stem_standardize=True, gamma_on_activations=True),
    "nf-blog": Recipe(_blog_ws_conv,
                      lambda c, act, beta, o: NFBlogBlock(c, act, beta, o["alpha"], o["blog_eps"], o["blog_skip_gain"]),
                      batch_norm=False, stem_standardize=False, gamma_on_activations=False),
}
assert tuple(RECIPES) == ARCHS, "an arch without a recipe"


def _positive_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _resolve_options(arch: str, options: dict) -> dict:
    if arch not in RECIPES:
        raise ValueError(f"unknown arch {arch!r}; choose one of {', '.join(ARCHS)}")
    allowed = ARCH_OPTIONS[arch]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        known = ", ".join(allowed) if allowed else "none"
        raise ValueError(f"unknown option(s) {', '.join(map(repr, unknown))} for arch {arch!r} "
                         f"(options: {known})")
    resolved = {**allowed, **options}
    if "alpha" in resolved and not is_finite_float(resolved["alpha"]):
        raise ValueError(f"alpha must be a finite number, got {resolved['alpha']!r}")
    for key in ("eps", "blog_eps"):
        if key in resolved and not (is_finite_float(resolved[key]) and resolved[key] > 0):
            raise ValueError(f"{key} must be a positive number, got {resolved[key]!r}")
    if "skip_init" in resolved and resolved["skip_init"] not in SKIP_INITS:
        raise ValueError(f"unknown skip_init {resolved['skip_init']!r}; choose one of "
                         f"{', '.join(SKIP_INITS)}")
    if "blog_skip_gain" in resolved and not isinstance(resolved["blog_skip_gain"], bool):
        raise ValueError(f"blog_skip_gain must be true or false, got {resolved['blog_skip_gain']!r}")
    return resolved


def build_model(arch: str, blocks: int = 10, channels: int = 192, fc_units: int = 256,
                activation: str = "silu", input2_planes: int = FEATURES2_PLANES, **options) -> ShogiResNet:
    """Build the ``'bn'``, ``'nf'`` or ``'nf-blog'`` network (see the module docstring).

    ``options``: ``'nf'`` takes ``alpha`` (0.2), ``skip_init`` ('zero' | 'one' | 'last_gain'),
    ``eps`` (1e-4); ``'nf-blog'`` takes ``alpha`` (0.2), ``blog_eps`` (1e-4; 1e-5 = the earlier
    commit), ``blog_skip_gain`` (True; False = the commit before 62d7f7e); ``'bn'`` takes none.
    An unknown arch, option or activation raises ``ValueError`` naming it. ``input2_planes``: 57, or
    119 for dlshogi's entering-king features (``model.input2_planes``).
    """
    opts = _resolve_options(arch, options)
    _positive_int("blocks", blocks, 0)
    _positive_int("channels", channels, 1)
    _positive_int("fc_units", fc_units, 1)
    check_activation(activation)
    if input2_planes not in INPUT2_PLANES:
        raise ValueError(f"input2_planes must be one of {', '.join(map(str, INPUT2_PLANES))}, got {input2_planes!r}")
    config = {"arch": arch, "blocks": blocks, "channels": channels, "fc_units": fc_units,
              "activation": activation, "input2_planes": input2_planes, **opts}
    eps = opts.get("eps", opts.get("blog_eps", 0.0))

    recipe = RECIPES[arch]
    stem = Stem(recipe, channels, activation, eps, input2_planes)
    residual: list[nn.Module] = []
    expected_std = 1.0  # std of the stem output (unit by the stem standardisation)
    for _ in range(blocks):
        residual.append(recipe.block(channels, activation, 1.0 / expected_std, opts))
        if not recipe.batch_norm:
            expected_std = math.sqrt(expected_std ** 2 + opts["alpha"] ** 2)
    if recipe.batch_norm:  # its blocks end with an activation
        final_act: nn.Module = nn.Identity()
    else:
        final_act = GammaAct(activation, activation_gamma(activation) if recipe.gamma_on_activations else 1.0)
    return ShogiResNet(config, stem, nn.Sequential(*residual), final_act, PolicyHead(channels),
                       ValueHead(recipe, channels, fc_units, activation, eps))


def parameter_groups(model: nn.Module) -> dict[str, list[str]]:
    """Named parameter groups of a :class:`ShogiResNet` (also inside a DDP / compiled wrapper).

    Names are those of ``model.named_parameters()``; a parameter may be in several groups:
    ``stem``, ``blocks``, ``policy_head``, ``value_head`` (by module), ``policy_final`` (the policy
    conv and the 2187 bias), ``value_final`` (``value_head.fc2`` weight and bias), ``gains`` (WS
    gains and scalar skip gains), ``biases`` (every bias), ``norm`` (BatchNorm weights and biases).
    """
    prefix = None
    for name, module in model.named_modules():
        if isinstance(module, ShogiResNet):
            net, prefix = module, (name + "." if name else "")
            break
    if prefix is None:
        raise ValueError(f"{type(model).__name__} holds no ShogiResNet")
    groups: dict[str, list[str]] = {group: [] for group in PARAMETER_GROUPS}
    gains: set[int] = set()
    norm: set[int] = set()
    for module in net.modules():
        if isinstance(module, ScaledStdConv2d):
            gains.add(id(module.gain))
        elif isinstance(module, nn.modules.batchnorm._BatchNorm):
            norm.update(id(p) for p in module.parameters(recurse=False))
        skip = getattr(module, "skip_gain", None)
        if isinstance(skip, nn.Parameter):
            gains.add(id(skip))
    policy_final = {id(p) for p in net.policy_head.conv.parameters()} | {id(net.policy_head.bias)}
    value_final = {id(p) for p in net.value_head.fc2.parameters()}
    for name, param in net.named_parameters():
        full = prefix + name
        top = name.split(".", 1)[0]
        if top in groups:
            groups[top].append(full)
        for group, members in (("policy_final", policy_final), ("value_final", value_final),
                               ("gains", gains), ("norm", norm)):
            if id(param) in members:
                groups[group].append(full)
        if name.rsplit(".", 1)[-1] == "bias":
            groups["biases"].append(full)
    return groups


def skip_gain_magnitudes(model: nn.Module) -> dict[str, float]:
    """Mean and largest |skip_gain| over the blocks' scalar skip gains; ``{}`` for a net without them.

    The train rows log these, so one can follow zero-initialised gains opening under AGC."""
    gains = [m.skip_gain for m in model.modules() if isinstance(getattr(m, "skip_gain", None), nn.Parameter)]
    if not gains:
        return {}
    magnitudes = torch.stack([g.detach().float().abs() for g in gains]).cpu()
    return {"skip_gain_abs_mean": float(magnitudes.mean()), "skip_gain_abs_max": float(magnitudes.max())}


__all__ = ["RECIPES", "SKIP_INITS", "NF_STEM_SCALE", "ShogiResNet", "build_model", "parameter_groups",
           "skip_gain_magnitudes"]
