"""Optimizer and learning-rate schedule factories.

:func:`build_optimizer` makes one of ``sgd | adam | adamw | radam | nlcg`` with weight decay off for
the parameters of the model's ``no_decay_groups`` (two param groups, ``"decay"`` / ``"no_decay"``).
:func:`build_scheduler` composes torch's schedulers: ``LinearLR`` warm-up, then constant, step
(``MultiStepLR``) or cosine, joined by ``SequentialLR``. Lengths are given in *units* and
``steps_per_unit`` says how many ``scheduler.step()`` calls make one (the caller steps per
optimizer step or per epoch); after k calls the rate is the schedule's value at k/steps_per_unit
units. Do not step a cosine schedule past ``total_steps``: torch's is periodic and would rise again.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import nn
from torch.optim import lr_scheduler

from shogitrain.names import OPTIMIZERS, SCHEDULES

from .nlcg import NLCG

__all__ = ["build_optimizer", "build_scheduler", "split_weight_decay"]


def split_weight_decay(model_or_named_params, no_decay_groups: Iterable[str] = ()) -> tuple[list, list]:
    """``(decay, no_decay)`` lists of ``(name, parameter)``; only ``requires_grad`` parameters.

    ``no_decay_groups`` are group names of ``model.parameter_groups()``; an unknown name raises
    ValueError naming it. With no groups everything decays.
    """
    no_decay_groups = list(no_decay_groups)
    if isinstance(model_or_named_params, nn.Module):
        named = list(model_or_named_params.named_parameters())
        groups_fn = getattr(model_or_named_params, "parameter_groups", None)
    else:
        named = list(model_or_named_params)
        groups_fn = None
    named = [(n, p) for n, p in named if p.requires_grad]
    if not no_decay_groups:
        return named, []
    if groups_fn is None:
        raise ValueError(f"no_decay_groups={no_decay_groups} needs a model with parameter_groups()")
    groups = groups_fn()
    unknown = [g for g in no_decay_groups if g not in groups]
    if unknown:
        raise ValueError(f"unknown parameter group(s) {unknown}; the model declares {sorted(groups)}")
    excluded = {name for g in no_decay_groups for name in groups[g]}
    return [(n, p) for n, p in named if n not in excluded], [(n, p) for n, p in named if n in excluded]


def build_optimizer(
    model_or_named_params,
    name: str,
    lr: float,
    momentum: float = 0.9,
    nesterov: bool = True,
    weight_decay: float = 0.0,
    no_decay_groups: Iterable[str] = (),
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    decoupled_weight_decay: bool = False,
    **nlcg_options,
) -> torch.optim.Optimizer:
    """Build optimizer ``name`` over a model (or ``(name, parameter)`` pairs).

    * ``sgd``: ``SGD(lr, momentum, nesterov, weight_decay)`` (Nesterov only with momentum > 0);
    * ``adam``: ``Adam(lr, betas, eps, weight_decay, decoupled_weight_decay)``;
    * ``adamw``: ``AdamW(lr, betas, eps, weight_decay)`` (always decoupled);
    * ``radam``: ``RAdam(lr, betas, eps, weight_decay, decoupled_weight_decay)``
      (docs/algorithms.md, "RAdam": decoupled = the authors' form; torch's default is L2);
    * ``nlcg``: ``NLCG(lr, weight_decay, decoupled_weight_decay, **nlcg_options)``.

    Parameters in ``no_decay_groups`` go to a second param group with ``weight_decay=0``; groups
    carry a ``"name"`` key (``"decay"`` / ``"no_decay"``) and empty groups are left out.
    ``nlcg_options`` are only accepted for ``nlcg``.
    """
    key = name.lower()
    if key not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; valid names: {', '.join(OPTIMIZERS)}")
    if nlcg_options and key != "nlcg":
        raise ValueError(f"options {sorted(nlcg_options)} apply only to 'nlcg', not {name!r}")
    decay, no_decay = split_weight_decay(model_or_named_params, no_decay_groups)
    param_groups = [
        {"params": [p for _, p in ps], "weight_decay": wd, "name": tag}
        for tag, ps, wd in (("decay", decay, weight_decay), ("no_decay", no_decay, 0.0))
        if ps
    ]
    if not param_groups:
        raise ValueError("no trainable parameters")
    if key == "sgd":
        return torch.optim.SGD(param_groups, lr=lr, momentum=momentum, nesterov=nesterov and momentum > 0,
                               weight_decay=weight_decay)
    if key == "adam":
        return torch.optim.Adam(param_groups, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                decoupled_weight_decay=decoupled_weight_decay)
    if key == "adamw":
        return torch.optim.AdamW(param_groups, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
    if key == "radam":
        return torch.optim.RAdam(param_groups, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                 decoupled_weight_decay=decoupled_weight_decay)
    return NLCG(param_groups, lr=lr, weight_decay=weight_decay, decoupled_weight_decay=decoupled_weight_decay,
                **nlcg_options)


def _calls(units: float, steps_per_unit: float) -> int:
    return int(round(units * steps_per_unit))


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    name: str = "constant",
    total_steps: float | None = None,
    warmup_steps: float = 0,
    step_size: float | None = None,
    gamma: float = 0.1,
    min_lr: float = 0.0,
    milestones: Sequence[float] | None = None,
    steps_per_unit: float = 1,
    warmup_start_factor: float | None = None,
) -> lr_scheduler.LRScheduler:
    """LR schedule ``name`` with an optional linear warmup (all lengths in units; see the module doc).

    * warmup: after ``k`` calls (``k ≤ W``, W = warmup in calls) ``lr = base·(s + (1 − s)·k/W)`` with
      ``s = warmup_start_factor``, default ``1/(W+1)`` so that ``lr = base·(k+1)/(W+1)``; full lr at k = W;
    * ``constant``: ``base`` after the warmup;
    * ``step``: ×``gamma`` at every multiple of ``step_size`` (or at each of ``milestones``), counted
      in units from the start of training (not from the end of warmup); milestones must lie after
      the warmup;
    * ``cosine``: from ``base`` at the end of warmup to ``min_lr`` (absolute, every group) at
      ``total_steps``: ``min_lr + (base − min_lr)·(1 + cos(π·(k − W)/(T − W)))/2``.
    """
    key = name.lower()
    if key not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; valid names: {', '.join(SCHEDULES)}")
    if steps_per_unit <= 0:
        raise ValueError(f"steps_per_unit must be > 0, got {steps_per_unit}")
    warmup = _calls(warmup_steps, steps_per_unit)
    total = None if total_steps is None else _calls(total_steps, steps_per_unit)
    if warmup < 0 or (total is not None and total <= warmup and key == "cosine"):
        raise ValueError(f"need 0 <= warmup_steps < total_steps, got {warmup_steps} and {total_steps}")

    if key == "constant":
        main = lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
    elif key == "step":
        if milestones is None:
            if step_size is None or step_size <= 0:
                raise ValueError("schedule 'step' needs step_size > 0 or milestones")
            if total is None:
                raise ValueError("schedule 'step' with step_size needs total_steps")
            size = _calls(step_size, steps_per_unit)
            points = list(range(size, total + 1, size))
        else:
            points = sorted(_calls(m, steps_per_unit) for m in milestones)
        if any(m <= warmup for m in points):
            raise ValueError(f"step milestones {points} (in calls) must come after the warmup ({warmup})")
        main = lr_scheduler.MultiStepLR(optimizer, milestones=[m - warmup for m in points], gamma=gamma)
    else:
        if total is None:
            raise ValueError("schedule 'cosine' needs total_steps")
        main = lr_scheduler.CosineAnnealingLR(optimizer, T_max=total - warmup, eta_min=min_lr)
    if warmup == 0:
        return main
    start = 1.0 / (warmup + 1) if warmup_start_factor is None else float(warmup_start_factor)
    if not 0.0 < start <= 1.0:
        raise ValueError(f"warmup_start_factor must be in (0, 1], got {start}")
    ramp = lr_scheduler.LinearLR(optimizer, start_factor=start, end_factor=1.0, total_iters=warmup)
    return lr_scheduler.SequentialLR(optimizer, [ramp, main], milestones=[warmup])

