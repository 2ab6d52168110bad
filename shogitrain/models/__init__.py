"""Policy/value networks for dlshogi inputs: ``build_model(arch, ...)`` and its parameter groups.

``layers`` holds the tested building blocks (Scaled WS conv, activations with their NF gains γ);
``resnet`` composes them into the 'bn', 'nf' and 'nf-blog' variants of one network. See
docs/internals.md for the model contract (``model.config``, ``model.parameter_groups()``).
"""

from .layers import ACTIVATION_GAMMAS, GammaAct, ScaledStdConv2d, activation_gamma
from .resnet import (NF_STEM_SCALE, RECIPES, SKIP_INITS, ShogiResNet, build_model, parameter_groups,
                     skip_gain_magnitudes)

__all__ = [
    "ACTIVATION_GAMMAS", "NF_STEM_SCALE", "RECIPES", "SKIP_INITS", "GammaAct", "ScaledStdConv2d",
    "ShogiResNet", "activation_gamma", "build_model", "parameter_groups", "skip_gain_magnitudes",
]
