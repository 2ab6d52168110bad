"""Checkpoints: one dict of tensors and plain values, written atomically, loadable with weights_only=True."""

from __future__ import annotations

import os
from pathlib import Path

import torch

CHECKPOINT_FORMAT = "shogitrain-checkpoint"
CHECKPOINT_VERSION = 1


class CheckpointError(ValueError):
    """A file that is not a shogitrain checkpoint, or one this version cannot use."""


def save_checkpoint(path, state: dict) -> None:
    """Write ``state`` to ``path`` through a temporary file and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save({"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **state}, tmp)
    os.replace(tmp, path)


def load_checkpoint(path, map_location="cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{path}: not a loadable checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a shogitrain checkpoint")
    if state.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"{path}: checkpoint version {state.get('version')} is not {CHECKPOINT_VERSION}")
    return state


def model_from_checkpoint(state: dict, feature_version: int):
    """Rebuild the model a checkpoint holds; refuse one made for other input features."""
    from shogitrain.models import build_model

    if state.get("feature_version") != feature_version:
        raise CheckpointError(
            f"checkpoint was trained on feature version {state.get('feature_version')}, "
            f"this shogitrain builds version {feature_version}"
        )
    model = build_model(**state["model_config"])
    model.load_state_dict(state["model"])
    return model
