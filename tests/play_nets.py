"""Tiny nets for the play tests: checkpoints written the way `train` writes them."""

from __future__ import annotations

import torch
from torch import nn

from shogitrain.features import FEATURE_VERSION
from shogitrain.models import build_model
from shogitrain.train.checkpoint import save_checkpoint


def tiny_model(seed: int = 0) -> nn.Module:
    """A 1-block, 8-channel BN net with random weights and random BatchNorm statistics (so that
    fusing the BN matters), in eval mode."""
    torch.manual_seed(seed)
    model = build_model("bn", blocks=1, channels=8, fc_units=8)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.copy_(torch.randn(module.running_mean.shape, generator=g) * 0.2)
                module.running_var.copy_(0.5 + torch.rand(module.running_var.shape, generator=g))
        model.policy_head.conv.weight.mul_(20.0)     # sharper priors than an untrained net's
    return model.eval()


def save_tiny_checkpoint(path, seed: int = 0) -> nn.Module:
    model = tiny_model(seed)
    save_checkpoint(path, {"feature_version": FEATURE_VERSION, "model_config": model.config,
                           "model": model.state_dict(), "step": 0})
    return model
