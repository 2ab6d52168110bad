"""Tiny nets for the play tests: checkpoints written the way `train` writes them."""

from __future__ import annotations

import torch
from torch import nn

from shogitrain.features import FEATURE_VERSION
from shogitrain.train.checkpoint import save_checkpoint
from test_export import trained_tiny


def tiny_model(seed: int = 0) -> nn.Module:
    """test_export's tiny BN net (two SGD steps, random BatchNorm statistics: fusing them matters)
    with its policy head sharpened (an untrained net's priors are nearly uniform), in eval mode."""
    model = trained_tiny("bn", seed)
    with torch.no_grad():
        model.policy_head.conv.weight.mul_(20.0)
    return model.eval()


def save_tiny_checkpoint(path, seed: int = 0) -> nn.Module:
    model = tiny_model(seed)
    save_checkpoint(path, {"feature_version": FEATURE_VERSION, "model_config": model.config,
                           "model": model.state_dict(), "step": 0})
    return model
