"""One training step, and the run state it works on (built once per run by :func:`build_run`).

The step, in order: forward under autocast → dlshogi loss → backward (scaled for fp16) → unscale →
clip (global norm, or AGC with the head layers excluded by group name) → non-finite check (one
device sync) → optimizer step (NLCG also gets the all-reduced loss) → LR schedule → SWA/EMA
update. A step with a non-finite loss or gradient is skipped and counted; too many in a row end
the run.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from shogitrain.config import Config
from shogitrain.device import autocast_context
from shogitrain.models import build_model
from shogitrain.optim import build_optimizer, build_scheduler
from shogitrain.optim.agc import AGC, select_parameters
from shogitrain.train import TrainingError
from shogitrain.train.data import Batch
from shogitrain.train.distributed import DistInfo, all_reduce_mean
from shogitrain.train.loss import policy_value_loss

LOSS_TERMS = ("total", "policy_loss", "result_loss", "eval_loss", "entropy")
LOSS_NAMES = ("loss", "policy_loss", "result_loss", "eval_loss", "policy_entropy")  # as logged


@dataclass
class TrainState:
    """The counters of a run, saved in its checkpoint (``train_state``)."""

    step: int = 0
    epoch: int = 0
    nonfinite_total: int = 0
    nonfinite_streak: int = 0
    elapsed_s: float = 0.0  # wall-clock training time over all (resumed) segments, evaluations excluded
    eval_s: float = 0.0  # wall-clock time spent in evaluations
    loss_sums: tuple = ()  # loss terms summed since the last train log row (kept across a resume)
    loss_count: int = 0


@dataclass
class Run:
    """Everything a training step reads and changes."""

    cfg: Config
    device: torch.device
    dist: DistInfo
    model: nn.Module  # the bare network: checkpointed and evaluated
    net: nn.Module  # what the step calls: the model, or DDP / torch.compile around it
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    agc: AGC | None
    averaged: nn.Module | None  # torch.optim.swa_utils.AveragedModel (swa.mode swa / ema)
    params: list[nn.Parameter] = field(default_factory=list)  # the model's, for clipping and the finiteness check
    state: TrainState = field(default_factory=TrainState)
    loss_sums: torch.Tensor | None = None  # float64 [len(LOSS_TERMS)] on the device, since the last log row
    averaged_final: bool = False  # the average's BatchNorm statistics match its weights (end of run)

    def checkpoint_state(self, feature_version: int, config: dict) -> dict:
        """The checkpoint of this run (see train/checkpoint.py)."""
        return {
            "feature_version": feature_version, "model_config": self.model.config, "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "averaged": self.averaged.state_dict() if self.averaged is not None else None,
            "averaged_final": self.averaged_final,
            "train_state": vars(self.state) | {"loss_sums": tuple(self.loss_sums.tolist())},
            "rng": {"torch": torch.get_rng_state()},
            "config": config,
        }


def build_run_model(cfg: Config, device: torch.device) -> nn.Module:
    m = cfg.model
    model = build_model(m.arch, blocks=m.blocks, channels=m.channels, fc_units=m.fc_units,
                        activation=m.activation, input2_planes=m.input2_planes, **m.options)
    model = model.to(device)
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def build_run_optimizer(cfg: Config, model: nn.Module) -> torch.optim.Optimizer:
    o = cfg.optim
    return build_optimizer(
        model, o.name, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov, weight_decay=o.weight_decay,
        no_decay_groups=o.no_decay, betas=tuple(o.betas), eps=o.eps,
        decoupled_weight_decay=o.decoupled_weight_decay, **o.nlcg,
    )


def build_run(cfg: Config, device: torch.device, dist: DistInfo, model: nn.Module, total_steps: int,
              epochs: int, checkpoint: dict | None = None) -> Run:
    """The run state around an initialised ``model``: optimizer, schedule, scaler, AGC, averaging,
    counters — restored from ``checkpoint`` when resuming."""
    if dist.enabled and cfg.train.sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    optimizer = build_run_optimizer(cfg, model)
    s = cfg.schedule
    scheduler = build_scheduler(optimizer, s.name, total_steps=total_steps if s.unit == "step" else epochs,
                                warmup_steps=s.warmup_steps, step_size=s.step_size, gamma=s.gamma,
                                min_lr=s.min_lr)
    agc = None
    if cfg.clip.mode == "agc":
        agc = AGC([p for _, p in select_parameters(model, cfg.clip.agc_exclude)],
                  clipping=cfg.clip.agc_clipping, eps=cfg.clip.agc_eps)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.amp == "fp16")
    averaged = None
    if cfg.swa.mode != "off":
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        averaged = AveragedModel(
            model, multi_avg_fn=get_ema_multi_avg_fn(cfg.swa.ema_decay) if cfg.swa.mode == "ema" else None)
    state = TrainState()
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        scaler.load_state_dict(checkpoint["scaler"])
        if averaged is not None and checkpoint.get("averaged") is not None:
            averaged.load_state_dict(checkpoint["averaged"])
        state = TrainState(**checkpoint["train_state"])
        torch.set_rng_state(checkpoint["rng"]["torch"])
    net: nn.Module = model
    if dist.enabled:
        # nf-blog's conv1 never receives a gradient (the published branch discards it).
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=cfg.model.arch == "nf-blog")
    if cfg.train.compile:
        net = torch.compile(net)
    sums = torch.tensor(state.loss_sums or [0.0] * len(LOSS_TERMS), dtype=torch.float64, device=device)
    return Run(cfg, device, dist, model, net, optimizer, scheduler, scaler, agc, averaged, list(model.parameters()),
               state, sums)


def _loss_and_grads_finite(loss: torch.Tensor, params) -> bool:
    """The loss and every gradient finite, decided with one device sync."""
    ok = torch.isfinite(loss)
    grads = [p.grad for p in params if p.grad is not None]
    if grads:
        ok = ok & torch.isfinite(torch.stack(torch._foreach_norm(grads))).all()
    return bool(ok)


def _step_finite(loss: torch.Tensor, params, total_norm: torch.Tensor | None, check_grads: bool) -> bool:
    """Whether to take the optimizer step: the loss is finite and (``check_grads``, i.e. no
    GradScaler doing its own check) every gradient norm is finite — with one device sync.

    With clipping by global norm, ``total_norm`` (clip_grad_norm_'s, of the same parameters)
    answers for the gradients when it is finite; only a non-finite one falls back to the
    per-tensor check on the clipped gradients (an overflowing total norm with finite gradients
    has zeroed them, which steps as before)."""
    loss = loss.detach()
    if not check_grads:
        return bool(torch.isfinite(loss))
    if total_norm is not None and bool(torch.isfinite(loss) & torch.isfinite(total_norm)):
        return True
    return _loss_and_grads_finite(loss, params)


def train_step(run: Run, batch: Batch) -> bool:
    """One optimizer step on ``batch`` (the order is the module docstring's); False when it was
    skipped for a non-finite loss or gradient."""
    cfg, state, scaler, optimizer = run.cfg, run.state, run.scaler, run.optimizer
    run.net.train()
    with autocast_context(cfg.amp, run.device):
        policy_logits, value_logit = run.net(batch.x1, batch.x2)
        terms = policy_value_loss(policy_logits.float(), value_logit.float(), batch.labels, batch.result,
                                  batch.eval, batch.has_eval, cfg.loss, policy_target=batch.policy)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(terms.total).backward()
    scaler.unscale_(optimizer)
    params = run.params
    total_norm = None
    if cfg.clip.mode == "norm":
        total_norm = torch.nn.utils.clip_grad_norm_(params, cfg.clip.max_norm)
    elif run.agc is not None:
        run.agc()
    finite = _step_finite(terms.total, params, total_norm, check_grads=not scaler.is_enabled())
    if finite:
        if cfg.optim.name == "nlcg":
            scaler.step(optimizer, loss=float(all_reduce_mean(terms.total.detach(), run.dist)))
        else:
            scaler.step(optimizer)
        state.nonfinite_streak = 0
        run.loss_sums += torch.stack([getattr(terms, k).detach().double() for k in LOSS_TERMS])
        state.loss_count += 1
    else:
        state.nonfinite_total += 1
        state.nonfinite_streak += 1
    scaler.update()  # after a skipped step too: resets the unscale_ bookkeeping; an inf lowers the scale
    if not finite and state.nonfinite_streak >= cfg.train.max_nonfinite:
        raise TrainingError(
            f"{state.nonfinite_streak} consecutive steps with a non-finite loss or gradient at step "
            f"{state.step}; lower optim.lr, enable clipping, or use --amp off")
    if cfg.schedule.unit == "step":
        run.scheduler.step()
    if run.averaged is not None and state.step >= cfg.swa.start_step and state.step % cfg.swa.interval == 0:
        run.averaged.update_parameters(run.model)
    state.step += 1
    return finite
