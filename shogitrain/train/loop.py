"""`shogitrain train`: the experiment runner, one readable function with named helpers.

Order of one step: features on the device (for the next batches in the prefetch thread on CUDA
or where a CPU core is free for it, ``train/data.py``) → forward under autocast → dlshogi loss →
backward (scaled for fp16) → unscale → clip (global norm or AGC, heads excluded by group name) →
non-finite check (one device sync) → optimizer step (NLCG also gets the all-reduced loss) → LR
schedule → SWA/EMA update. Every ``eval_interval`` steps a random test sample is scored, and each epoch ends with a full test pass, through the same
function `shogitrain eval` uses.
"""

from __future__ import annotations

import itertools
import math
import os
import signal
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from torch import nn

from shogitrain.config import Config, config_to_dict, dump_config
from shogitrain.device import autocast_context, pick_device, retain_freed_memory
from shogitrain.evaluate import evaluate_dataset
from shogitrain.features import FEATURE_VERSION
from shogitrain.models import build_model
from shogitrain.optim import build_optimizer, build_scheduler
from shogitrain.optim.agc import AGC, select_parameters
from shogitrain.shards.reader import ShardDataset, manifest_hash
from shogitrain.train.checkpoint import load_checkpoint, save_checkpoint
from shogitrain.train.data import RowPrefetcher, game_min_ratings, make_batch
from shogitrain.train.distributed import all_reduce_mean, init_distributed, shutdown
from shogitrain.train.loss import policy_value_loss
from shogitrain.train.runlog import RunLog, environment, git_state, write_json

LOSS_TERMS = ("total", "policy_loss", "result_loss", "eval_loss", "entropy")
LOSS_NAMES = ("loss", "policy_loss", "result_loss", "eval_loss", "policy_entropy")  # as logged


class TrainingError(Exception):
    """A run that cannot go on: bad data, too many non-finite steps, an unusable checkpoint."""


@dataclass
class TrainState:
    step: int = 0
    epoch: int = 0
    nonfinite_total: int = 0
    nonfinite_streak: int = 0
    elapsed_s: float = 0.0  # wall-clock training time over all (resumed) segments, evaluations excluded
    eval_s: float = 0.0  # wall-clock time spent in evaluations
    loss_sums: tuple = ()  # loss terms summed since the last train log row (kept across a resume)
    loss_count: int = 0


def build_run_model(cfg: Config, device: torch.device) -> nn.Module:
    m = cfg.model
    model = build_model(m.arch, blocks=m.blocks, channels=m.channels, fc_units=m.fc_units,
                        activation=m.activation, **m.options)
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


def run_name(cfg: Config) -> str:
    return cfg.run.name or f"{datetime.now():%Y%m%d-%H%M%S}-{cfg.model.arch}"


def _loss_and_grads_finite(loss: torch.Tensor, params) -> bool:
    """The loss and every gradient finite, decided with one device sync."""
    ok = torch.isfinite(loss)
    grads = [p.grad for p in params if p.grad is not None]
    if grads:
        ok = ok & torch.isfinite(torch.stack(torch._foreach_norm(grads))).all()
    return bool(ok)


def _encode_in_background(device: torch.device, world_size: int) -> bool:
    """Build batches (copy + feature encoding) in the prefetch thread rather than the main one?

    On CUDA, yes: the main thread then only launches the step. On CPU only when a core is free for
    it: with every core in the step's OpenMP team (2 cores, 2 threads), a third busy thread
    preempts a team member and the step's parallel regions wait for it — measured on 2 cores, the
    step got 5–10 % slower with background encoding, 1–3 % with encoding on the main thread
    (docs/benchmarks.md, "Training step")."""
    if device.type != "cpu":
        return True
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    local_ranks = int(os.environ.get("LOCAL_WORLD_SIZE", world_size))
    return cores > torch.get_num_threads() * local_ranks


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


def train(cfg: Config, resume: bool = False, progress: bool = True) -> Path:
    """Train one run described by ``cfg``; returns the run directory."""
    from tqdm import tqdm

    if not cfg.data.path:
        raise TrainingError("no dataset: give --data DIR (or data.path in the config)")
    device_kind = cfg.train.device if cfg.train.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    dist_info = init_distributed(device_kind)
    device = pick_device(cfg.train.device, dist_info.local_rank)
    if device.type == "cpu":
        retain_freed_memory()
    run_dir = Path(cfg.run.dir) / run_name(cfg)
    ckpt_path = run_dir / "checkpoint.pt"
    checkpoint = None
    if resume:
        if not ckpt_path.is_file():
            raise TrainingError(f"{ckpt_path}: nothing to resume")
        checkpoint = load_checkpoint(ckpt_path)
    elif dist_info.is_main and (run_dir / "metrics.jsonl").exists():
        raise TrainingError(f"{run_dir}: a run with this name exists (use --resume or another run.name)")

    torch.manual_seed(cfg.train.seed)
    train_data = ShardDataset(cfg.data.path, cfg.data.train_split)
    test_data = ShardDataset(cfg.data.path, cfg.data.test_split)
    min_ratings = game_min_ratings(cfg.data.path)
    batch_size = cfg.train.batch_size
    if batch_size % dist_info.world_size:
        raise TrainingError(f"train.batch_size {batch_size} is not divisible by {dist_info.world_size} ranks")
    steps_per_epoch = train_data.steps_per_epoch(batch_size)
    if steps_per_epoch == 0:
        raise TrainingError(f"{cfg.data.path}: {len(train_data)} train positions is less than one batch of {batch_size}")
    total_steps = cfg.train.steps or steps_per_epoch * cfg.train.epochs
    epochs = math.ceil(total_steps / steps_per_epoch)

    model = build_run_model(cfg, device)
    if cfg.init.method == "gradinit" and checkpoint is None:
        from shogitrain.train.init import run_gradinit

        run_gradinit(model, cfg, train_data, min_ratings, device, run_dir if dist_info.is_main else None)
    if dist_info.enabled and cfg.train.sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    named = list(model.named_parameters())
    optimizer = build_run_optimizer(cfg, model)
    sched_total = total_steps if cfg.schedule.unit == "step" else epochs
    scheduler = build_scheduler(optimizer, cfg.schedule.name, total_steps=sched_total,
                                warmup_steps=cfg.schedule.warmup_steps, step_size=cfg.schedule.step_size,
                                gamma=cfg.schedule.gamma, min_lr=cfg.schedule.min_lr)
    clip_params = [p for _, p in named]
    agc = None
    if cfg.clip.mode == "agc":
        agc = AGC([p for _, p in select_parameters(model, cfg.clip.agc_exclude)],
                  clipping=cfg.clip.agc_clipping, eps=cfg.clip.agc_eps)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.amp == "fp16")
    averaged = None
    if cfg.swa.mode != "off":
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        averaged = AveragedModel(
            model, multi_avg_fn=get_ema_multi_avg_fn(cfg.swa.ema_decay) if cfg.swa.mode == "ema" else None
        )

    averaged_final = False   # the average's BatchNorm statistics match its weights (end of run)
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

    train_model: nn.Module = model
    if dist_info.enabled:
        # nf-blog's conv1 never receives a gradient (the published branch discards it).
        train_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=cfg.model.arch == "nf-blog")
    if cfg.train.compile:
        train_model = torch.compile(train_model)

    log = RunLog(run_dir, enabled=dist_info.is_main, resume_step=state.step if checkpoint else None)
    if dist_info.is_main:
        dump_config(cfg, run_dir / "config.yaml")
        n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
        write_json(run_dir / "run.json", {
            "name": run_dir.name, "git": git_state(), "data": str(cfg.data.path),
            "data_manifest_sha256": manifest_hash(cfg.data.path), "environment": environment(),
            "seed": cfg.train.seed, "world_size": dist_info.world_size, "device": str(device),
            "parameters": n_params, "train_positions": len(train_data), "test_positions": len(test_data),
            "steps": total_steps, "steps_per_epoch": steps_per_epoch,
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds"), "resumed": checkpoint is not None,
        })

    def checkpoint_state() -> dict:
        return {
            "feature_version": FEATURE_VERSION, "model_config": model.config, "model": model.state_dict(),
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
            "averaged": averaged.state_dict() if averaged is not None else None,
            "averaged_final": averaged_final,
            "train_state": vars(state) | {"loss_sums": tuple(sums.tolist()), "loss_count": sums_count},
            "rng": {"torch": torch.get_rng_state()},
            "config": config_to_dict(cfg),
        }

    def save() -> None:
        if dist_info.is_main:
            save_checkpoint(ckpt_path, checkpoint_state())
            log.write_csv()

    def evaluate(split_name: str, indices=None, eval_model=None) -> dict:
        eval_start = time.perf_counter()
        metrics, _ = evaluate_dataset(eval_model or model, test_data, device, batch_size=max(batch_size, 256),
                                      amp=cfg.amp, loss_cfg=cfg.loss, indices=indices, min_ratings=min_ratings,
                                      progress=False)
        row = {"step": state.step, "epoch": state.epoch, "split": split_name,
               "time_s": round(state.elapsed_s, 3), **metrics}
        state.eval_s += time.perf_counter() - eval_start
        log.log(row)
        return metrics

    interrupted = {"flag": False}

    def on_sigint(signum, frame):
        interrupted["flag"] = True

    previous_handler = signal.signal(signal.SIGINT, on_sigint) if dist_info.is_main else None
    bar = tqdm(total=total_steps, initial=state.step, disable=not (progress and dist_info.is_main),
               unit="step", dynamic_ncols=True, desc=run_dir.name)
    sums = torch.tensor(state.loss_sums or [0.0] * len(LOSS_TERMS), dtype=torch.float64, device=device)
    sums_count = state.loss_count
    window_start, window_positions, window_eval_s = time.perf_counter(), 0, state.eval_s
    segment_start = time.perf_counter() - state.elapsed_s - state.eval_s  # elapsed = now - start - eval_s
    encode_ahead = _encode_in_background(device, dist_info.world_size)

    def load_batch(rows):
        return make_batch(rows, device, min_ratings)

    try:
        while state.step < total_steps:
            epoch = state.step // steps_per_epoch
            state.epoch = epoch
            first = state.step - epoch * steps_per_epoch  # batches of this epoch already done (resume)
            index_batches = itertools.islice(
                train_data.batch_indices(batch_size, seed=cfg.train.seed, epoch=epoch, rank=dist_info.rank,
                                         world_size=dist_info.world_size, shuffle=cfg.data.shuffle),
                first, steps_per_epoch)
            # Rows are gathered in the prefetch thread; where it does not take a core from the
            # step, they are also copied and encoded there (make_batch), while this step trains.
            prefetcher = RowPrefetcher(train_data, index_batches, depth=cfg.data.prefetch,
                                       transform=load_batch if encode_ahead else None,
                                       intra_op_threads=1 if device.type == "cpu" else None,
                                       cuda_device=device if device.type == "cuda" else None)
            for item in prefetcher:
                batch = item if encode_ahead else load_batch(item)
                train_model.train()
                with autocast_context(cfg.amp, device):
                    policy_logits, value_logit = train_model(batch.x1, batch.x2)
                    terms = policy_value_loss(policy_logits.float(), value_logit.float(), batch.labels,
                                              batch.result, batch.eval, batch.has_eval, cfg.loss)
                loss = terms.total
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
                total_norm = None
                if cfg.clip.mode == "norm":
                    total_norm = torch.nn.utils.clip_grad_norm_(clip_params, cfg.clip.max_norm)
                elif agc is not None:
                    agc()
                finite = _step_finite(loss, clip_params, total_norm, check_grads=not scaler.is_enabled())
                if finite:
                    if cfg.optim.name == "nlcg":
                        scaler.step(optimizer, loss=float(all_reduce_mean(loss.detach(), dist_info)))
                    else:
                        scaler.step(optimizer)
                    scaler.update()
                    state.nonfinite_streak = 0
                    sums += torch.stack([getattr(terms, k).detach().double() for k in LOSS_TERMS])
                    sums_count += 1
                else:
                    state.nonfinite_total += 1
                    state.nonfinite_streak += 1
                    scaler.update()  # resets the unscale_ bookkeeping; an inf lowers the scale
                    if state.nonfinite_streak >= cfg.train.max_nonfinite:
                        raise TrainingError(
                            f"{state.nonfinite_streak} consecutive steps with a non-finite loss or gradient at step "
                            f"{state.step}; lower optim.lr, enable clipping, or use --amp off")
                if cfg.schedule.unit == "step":
                    scheduler.step()
                if averaged is not None and state.step >= cfg.swa.start_step and state.step % cfg.swa.interval == 0:
                    averaged.update_parameters(model)
                state.step += 1
                window_positions += batch_size
                state.elapsed_s = time.perf_counter() - segment_start - state.eval_s
                bar.update(1)

                if state.step % cfg.train.log_interval == 0 or state.step == total_steps:
                    means = (all_reduce_mean(sums, dist_info) / max(sums_count, 1)).tolist()
                    now = time.perf_counter()  # after the sync of tolist(): the device work is done
                    state.elapsed_s = now - segment_start - state.eval_s
                    row = {"step": state.step, "epoch": epoch, "split": "train", "time_s": round(state.elapsed_s, 3),
                           **dict(zip(LOSS_NAMES, means)), "lr": optimizer.param_groups[0]["lr"],
                           "positions_per_s": round(  # evaluations inside the window excluded
                               window_positions / max(now - window_start - (state.eval_s - window_eval_s), 1e-9), 1),
                           "nonfinite_steps": state.nonfinite_total}
                    log.log(row)
                    bar.set_postfix(loss=f"{means[0]:.4f}", lr=f"{row['lr']:.3g}",
                                    pos_s=f"{row['positions_per_s']:.0f}")
                    sums.zero_()
                    sums_count = 0
                    window_start, window_positions, window_eval_s = now, 0, state.eval_s
                if cfg.train.eval_interval and state.step % cfg.train.eval_interval == 0 and dist_info.is_main:
                    rng = np.random.default_rng([cfg.train.seed, state.step])
                    sample = np.sort(rng.choice(len(test_data), size=min(cfg.train.eval_sample, len(test_data)),
                                                replace=False))
                    evaluate("test_sample", sample)
                if cfg.train.checkpoint_interval and state.step % cfg.train.checkpoint_interval == 0:
                    save()
                if interrupted["flag"]:
                    raise KeyboardInterrupt
                if state.step >= total_steps:
                    break
            prefetcher.close()
            if cfg.schedule.unit == "epoch":
                scheduler.step()
            epoch_done = state.step % steps_per_epoch == 0 or state.step >= total_steps
            if epoch_done and cfg.train.eval_full_each_epoch and dist_info.is_main:
                evaluate("test")
            save()
        if averaged is not None:
            from shogitrain.train.init import recompute_bn_statistics

            if cfg.swa.update_bn:
                recompute_bn_statistics(averaged.module, train_data, device, batch_size, cfg.train.seed)
            averaged_final = True
            if dist_info.is_main:
                evaluate("test_averaged", eval_model=averaged.module)
                save()
    except KeyboardInterrupt:
        save()
        if dist_info.is_main:
            bar.write(f"interrupted at step {state.step}: checkpoint saved to {ckpt_path}; continue with --resume")
        raise
    finally:
        bar.close()
        log.close()
        if previous_handler is not None:
            signal.signal(signal.SIGINT, previous_handler)
        if dist_info.is_main and (run_dir / "run.json").exists():
            import json

            info = json.loads((run_dir / "run.json").read_text())
            info.update({"finished_step": state.step, "wall_clock_s": round(state.elapsed_s, 3),
                         "eval_s": round(state.eval_s, 3),
                         "nonfinite_steps": state.nonfinite_total,
                         "ended": datetime.now(timezone.utc).isoformat(timespec="seconds")})
            write_json(run_dir / "run.json", info)
        shutdown(dist_info)
    return run_dir
