"""Device choice and autocast, shared by training, evaluation and export."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import sys

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


def resolve_amp(amp: str, device: torch.device) -> str:
    """'auto' → fp16 (with a GradScaler when training) on CUDA, off on CPU; other modes as given."""
    if amp != "auto":
        return amp
    return "fp16" if device.type == "cuda" else "off"


def autocast_context(amp: str, device: torch.device):
    """autocast for amp in off|bf16|fp16; fp16 needs CUDA (and a GradScaler when training)."""
    if amp == "off":
        return contextlib.nullcontext()
    if amp == "fp16" and device.type != "cuda":
        raise DeviceError("amp=fp16 needs CUDA; use --amp bf16 on CPU")
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_retained = None


def retain_freed_memory(mmap_threshold: int = 32 << 20, trim_threshold: int = 128 << 20) -> bool:
    """Have glibc keep freed memory for the next batch instead of handing it back to the OS.

    Per-batch CPU tensors of a few hundred KB to a few MB (the feature encoder's bitboards, a CPU
    model's activations) are freed and allocated again every batch. By default glibc serves the
    larger ones with ``mmap`` and trims the top of the heap when they are freed, so each batch
    touches fresh pages and page-faults on them: with the encoder at batch 1024 that was up to
    thousands of faults a call (it depends on the heap's history) and 35-45 % of its time in the
    benchmark (docs/benchmarks.md, "Features"). Here blocks below
    ``mmap_threshold`` (32 MB, glibc's maximum) come from the heap, which is trimmed only when
    more than ``trim_threshold`` is free at its top — at most that much memory stays held.
    torch's CPU tuning guide preloads jemalloc / tcmalloc for the same reason; this needs nothing
    preloaded. Process-wide, idempotent; returns False (and changes nothing) off glibc.
    """
    global _retained
    if _retained is None:
        _retained = False
        if sys.platform.startswith("linux"):
            try:
                libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
                mallopt = libc.mallopt
            except (OSError, AttributeError):
                return False
            mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
            _retained = bool(mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and bool(
                mallopt(_M_TRIM_THRESHOLD, trim_threshold))
    return _retained
