"""Device choice and autocast, shared by training, evaluation and export."""

from __future__ import annotations

import contextlib

import torch


class DeviceError(ValueError):
    """A device or precision the machine cannot provide."""


def pick_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """'auto' → CUDA when available, else CPU; 'cuda' selects the local rank's GPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceError(f"device {name!r} requested but no CUDA device is available")
        index = torch.device(name).index
        index = local_rank if index is None else index
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    if name != "cpu":
        raise DeviceError(f"unknown device {name!r} (use auto, cpu or cuda)")
    return torch.device("cpu")


def autocast_context(amp: str, device: torch.device):
    """autocast for amp in off|bf16|fp16; fp16 needs CUDA (and a GradScaler when training)."""
    if amp == "off":
        return contextlib.nullcontext()
    if amp == "fp16" and device.type != "cuda":
        raise DeviceError("amp=fp16 needs CUDA; use --amp bf16 on CPU")
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)
