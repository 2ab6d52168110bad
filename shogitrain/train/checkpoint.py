"""Checkpoints: one dict of tensors and plain values, written atomically, loadable with weights_only=True.

Each checkpoint carries the sha256 of its own content (every tensor's dtype, shape and bytes, and
every plain value) under ``"sha256"``; loading recomputes it, so a flipped byte inside a tensor
is refused instead of trained on.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import torch

from shogitrain.files import atomic_write

CHECKPOINT_FORMAT = "shogitrain-checkpoint"
CHECKPOINT_VERSION = 1


class CheckpointError(ValueError):
    """A file that is not a shogitrain checkpoint, or one this version cannot use."""


def content_digest(state) -> str:
    """sha256 of a checkpoint's content: tensors by dtype, shape and bytes, other values by repr;
    dict keys in sorted order. The ``"sha256"`` entry itself is left out."""
    h = hashlib.sha256()

    def feed(value) -> None:
        if isinstance(value, torch.Tensor):
            t = value.detach().cpu().contiguous()
            h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        elif isinstance(value, dict):
            h.update(b"{")
            for key in sorted(value, key=repr):
                if key != "sha256":
                    h.update(repr(key).encode())
                    feed(value[key])
            h.update(b"}")
        elif isinstance(value, (list, tuple)):
            h.update(b"[")
            for item in value:
                feed(item)
            h.update(b"]")
        else:
            h.update(repr(value).encode())

    feed(state)
    return h.hexdigest()


def save_checkpoint(path, state: dict) -> None:
    """Write ``state`` (with its content digest) to ``path`` whole or not at all: serialised in
    memory first, then written beside ``path`` and renamed over it. A full disk is a WriteError
    naming the file, and the previous checkpoint stays."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **state}
    state["sha256"] = content_digest(state)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    with atomic_write(path, "wb") as f:
        f.write(buffer.getbuffer())


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
    if "sha256" in state and content_digest(state) != state["sha256"]:
        raise CheckpointError(f"{path}: corrupt (its content does not match the checksum it was saved with)")
    return state


WEIGHTS = ("raw", "averaged")


def check_feature_set(state: dict, input2_planes: int) -> None:
    """Refuse a checkpoint whose network reads another features2 set than ``input2_planes``."""
    from shogitrain.names import FEATURES2_PLANES

    config = state.get("model_config") if isinstance(state.get("model_config"), dict) else {}
    have = config.get("input2_planes", FEATURES2_PLANES)
    if have != input2_planes:
        raise CheckpointError(
            f"the checkpoint's network reads {have} input2 planes, the config asks for {input2_planes} "
            f"(model.input2_planes; 119 = dlshogi's entering-king features): set model.input2_planes={have}")


def model_from_checkpoint(state: dict, feature_version: int, weights: str = "raw"):
    """Rebuild the model a checkpoint holds; refuse one made for other input features.

    ``weights``: 'raw' — the trained weights; 'averaged' — the SWA/EMA average
    (``swa.mode``), usable once the run has finished its averaging (BatchNorm statistics of the
    average are recomputed at the end of the run; a net without BatchNorm can use it at any step).
    """
    from torch import nn

    from shogitrain.models import build_model

    if weights not in WEIGHTS:
        raise CheckpointError(f"unknown weights {weights!r}; choose one of {', '.join(WEIGHTS)}")
    if state.get("feature_version") != feature_version:
        raise CheckpointError(
            f"checkpoint was trained on feature version {state.get('feature_version')}, "
            f"this shogitrain builds version {feature_version}"
        )
    if not isinstance(state.get("model_config"), dict) or not isinstance(state.get("model"), dict):
        raise CheckpointError("checkpoint has no model_config / model state")
    try:
        model = build_model(**state["model_config"])
        model.load_state_dict(state["model"])
    except (TypeError, ValueError, RuntimeError, KeyError) as e:
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"cannot rebuild the model ({first_line})") from None
    if weights == "averaged":
        averaged = state.get("averaged")
        if not isinstance(averaged, dict):
            raise CheckpointError("checkpoint has no averaged weights (train with swa.mode=swa or ema)")
        has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
        if has_bn and not state.get("averaged_final"):
            step = state.get("train_state", {}).get("step")
            raise CheckpointError(
                f"the averaged weights at step {step} are not final: their BatchNorm statistics are "
                "recomputed when the run finishes (use --weights raw, or finish the run)")
        # AveragedModel's state: the wrapped module's entries under 'module.', plus 'n_averaged'
        model.load_state_dict({k[len("module."):]: v for k, v in averaged.items() if k.startswith("module.")})
    return model


def load_model_checkpoint(path, feature_version: int, weights: str = "raw"):
    """-> (checkpoint state, its model rebuilt with ``weights``); errors name the file."""
    state = load_checkpoint(path)
    try:
        return state, model_from_checkpoint(state, feature_version, weights)
    except CheckpointError as e:
        raise CheckpointError(f"{path}: {e}") from None
