"""`shogitrain train`: the run directory, the data, and a short loop around ``train_step``.

Per step the loop hands a batch (gathered from the memory-mapped shards and encoded on the device,
ahead of time in the prefetch thread where that does not slow the step, ``train/data.py``) to
:func:`shogitrain.train.step.train_step`; every ``log_interval`` steps it logs the mean loss terms,
every ``eval_interval`` steps it scores a random test sample, and each epoch ends with a full test
pass and a checkpoint. Ctrl-C saves a checkpoint that ``--resume`` continues bit-identically.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import json
import math
import os
import signal
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from shogitrain.config import Config, ConfigError, config_to_dict, dump_config
from shogitrain.device import autocast_context, pick_device, resolve_amp, retain_freed_memory
from shogitrain.features import FEATURE_VERSION
from shogitrain.files import exclusive_lock, remove_stale_temps
from shogitrain.models import skip_gain_magnitudes
from shogitrain.shards.reader import ShardDataset, manifest_hash
from shogitrain.train import Interrupted, TrainingError
from shogitrain.train.checkpoint import check_feature_set, load_checkpoint, save_checkpoint
from shogitrain.train.data import RowPrefetcher, game_min_ratings, make_batch
from shogitrain.train.distributed import all_reduce_mean, init_distributed, shutdown
from shogitrain.train.evaluation import evaluate_dataset
from shogitrain.train.runlog import RunLog, environment, git_state, write_json
from shogitrain.train.resume import config_changes, may_change, refused_changes
from shogitrain.train.step import LOSS_NAMES, Run, build_run, build_run_model, build_run_optimizer, train_step

__all__ = ["TrainingError", "train"]


@dataclass
class RunData:
    """The dataset of a run and the length of its epochs."""

    train: ShardDataset
    test: ShardDataset
    min_ratings: np.ndarray  # per game id, the lower of the two players' ratings
    steps_per_epoch: int
    total_steps: int

    @classmethod
    def open(cls, cfg: Config, world_size: int) -> "RunData":
        train = ShardDataset(cfg.data.path, cfg.data.train_split)
        test = ShardDataset(cfg.data.path, cfg.data.test_split)
        min_ratings = game_min_ratings(cfg.data.path)
        batch_size = cfg.train.batch_size
        if batch_size % world_size:
            raise TrainingError(f"train.batch_size {batch_size} is not divisible by {world_size} ranks")
        steps_per_epoch = train.steps_per_epoch(batch_size)
        if len(test) == 0:
            print(f"warning: {cfg.data.path} has no positions in split {cfg.data.test_split!r}: this run will have "
                  "no test evaluations", file=sys.stderr)
        if steps_per_epoch == 0:
            raise TrainingError(f"{cfg.data.path}: {len(train)} train positions is less than one batch of {batch_size}")
        return cls(train, test, min_ratings, steps_per_epoch, cfg.train.steps or steps_per_epoch * cfg.train.epochs)

    @property
    def epochs(self) -> int:
        return math.ceil(self.total_steps / self.steps_per_epoch)


def run_name(cfg: Config) -> str:
    return cfg.run.name or f"{datetime.now():%Y%m%d-%H%M%S}-{cfg.model.arch}"


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


class _Clock:
    """Training wall-clock time (evaluations excluded, kept across resumes) and the positions per
    second of each log window."""

    def __init__(self, run: Run):
        self.state = run.state
        now = time.perf_counter()
        self.segment_start = now - self.state.elapsed_s - self.state.eval_s  # elapsed = now - start - eval_s
        self.window_start, self.window_positions, self.window_eval_s = now, 0, self.state.eval_s

    def tick(self, positions: int) -> None:
        self.window_positions += positions
        self.state.elapsed_s = time.perf_counter() - self.segment_start - self.state.eval_s

    def close_window(self) -> float:
        """Positions per second since the last call (evaluations inside the window excluded); call it
        after a device sync so that the window's work is done."""
        now = time.perf_counter()
        self.state.elapsed_s = now - self.segment_start - self.state.eval_s
        rate = self.window_positions / max(now - self.window_start - (self.state.eval_s - self.window_eval_s), 1e-9)
        self.window_start, self.window_positions, self.window_eval_s = now, 0, self.state.eval_s
        return rate


class _Trainer:
    """The loop's view of one run: the run state, its data, directory, log and progress bar."""

    def __init__(self, run: Run, data: RunData, run_dir: Path, log: RunLog, bar):
        self.run, self.data, self.run_dir, self.log, self.bar = run, data, run_dir, log, bar
        self.cfg, self.state, self.is_main = run.cfg, run.state, run.dist.is_main
        self.clock = _Clock(run)
        self.interrupted = 0  # the number of a signal asking to stop (SIGINT, SIGTERM), else 0

    def save(self) -> None:
        if self.is_main:
            save_checkpoint(self.run_dir / "checkpoint.pt",
                            self.run.checkpoint_state(FEATURE_VERSION, config_to_dict(self.cfg)))
            self.log.write_csv()

    def evaluate(self, split_name: str, indices=None, model=None) -> None:
        if len(self.data.test) == 0:  # RunData.open warned about it
            return
        start = time.perf_counter()
        metrics, _ = evaluate_dataset(model or self.run.model, self.data.test, self.run.device,
                                      batch_size=max(self.cfg.train.batch_size, 256), amp=self.cfg.amp,
                                      loss_cfg=self.cfg.loss, indices=indices, min_ratings=self.data.min_ratings,
                                      progress=False)
        self.state.eval_s += time.perf_counter() - start
        self.log.log({"step": self.state.step, "epoch": self.state.epoch, "split": split_name,
                      "time_s": round(self.state.elapsed_s, 3), **metrics})

    def log_train(self) -> None:
        run, state = self.run, self.state
        means = (all_reduce_mean(run.loss_sums, run.dist) / max(state.loss_count, 1)).tolist()
        rate = self.clock.close_window()  # after the sync of tolist(): the device work is done
        row = {"step": state.step, "epoch": state.epoch, "split": "train", "time_s": round(state.elapsed_s, 3),
               **dict(zip(LOSS_NAMES, means)), "lr": run.optimizer.param_groups[0]["lr"],
               "positions_per_s": round(rate, 1), "nonfinite_steps": state.nonfinite_total,
               **skip_gain_magnitudes(run.model)}
        self.log.log(row)
        self.bar.set_postfix(loss=f"{means[0]:.4f}", lr=f"{row['lr']:.3g}", pos_s=f"{rate:.0f}")
        run.loss_sums.zero_()
        state.loss_count = 0

    def after_step(self) -> None:
        """Logging, the periodic test sample and checkpoint, and Ctrl-C, after each step."""
        cfg, state, total = self.cfg, self.state, self.data.total_steps
        self.clock.tick(cfg.train.batch_size)
        self.bar.update(1)
        if state.step % cfg.train.log_interval == 0 or state.step == total:
            self.log_train()
        if cfg.train.eval_interval and state.step % cfg.train.eval_interval == 0 and self.is_main:
            rng = np.random.default_rng([cfg.train.seed, state.step])
            size = min(cfg.train.eval_sample, len(self.data.test))
            self.evaluate("test_sample", np.sort(rng.choice(len(self.data.test), size=size, replace=False)))
        if cfg.train.checkpoint_interval and state.step % cfg.train.checkpoint_interval == 0:
            self.save()
        if self.interrupted:
            raise Interrupted(self.interrupted)

    def epoch(self, epoch: int, encode_ahead: bool) -> None:
        """The rest of ``epoch`` (all of it, or what a resumed run has not done yet)."""
        run, cfg, state, data = self.run, self.cfg, self.state, self.data
        state.epoch = epoch
        done = state.step - epoch * data.steps_per_epoch  # batches of this epoch already trained (resume)
        index_batches = itertools.islice(
            data.train.batch_indices(cfg.train.batch_size, seed=cfg.train.seed, epoch=epoch, rank=run.dist.rank,
                                     world_size=run.dist.world_size, shuffle=cfg.data.shuffle,
                                     order=cfg.data.order),
            done, data.steps_per_epoch)

        def load_batch(rows):
            return make_batch(rows, run.device, data.min_ratings, cfg.model.input2_planes)

        # Rows are gathered in the prefetch thread; where it does not take a core from the step, they
        # are also copied and encoded there (make_batch) while this step trains.
        prefetcher = RowPrefetcher(data.train, index_batches, depth=cfg.data.prefetch,
                                   transform=load_batch if encode_ahead else None,
                                   intra_op_threads=1 if run.device.type == "cpu" else None,
                                   cuda_device=run.device if run.device.type == "cuda" else None)
        try:
            for item in prefetcher:
                train_step(run, item if encode_ahead else load_batch(item))
                self.after_step()
                if state.step >= data.total_steps:
                    break
        finally:
            prefetcher.close()
        if cfg.schedule.unit == "epoch":
            run.scheduler.step()
        if (state.step % data.steps_per_epoch == 0 or state.step >= data.total_steps) \
                and cfg.train.eval_full_each_epoch and self.is_main:
            self.evaluate("test")
        self.save()

    def finish_averaging(self) -> None:
        """SWA/EMA: recompute the average's BatchNorm statistics, score it, save it as final."""
        run = self.run
        if run.averaged is None:
            return
        if self.cfg.swa.update_bn:
            from shogitrain.train.init import recompute_bn_statistics

            recompute_bn_statistics(run.averaged.module, self.data.train, run.device, self.cfg.train.batch_size,
                                    self.cfg.train.seed)
        run.averaged_final = True
        if self.is_main:
            self.evaluate("test_averaged", model=run.averaged.module)
            self.save()


def _check_buildable(cfg: Config, device: torch.device) -> None:
    """Build the model and optimizer on the meta device and open the autocast context: a bad model
    or optimizer option is a ConfigError, a precision the device lacks a DeviceError — before
    anything is written."""
    autocast_context(cfg.amp, device)
    meta = torch.device("meta")
    with meta:
        try:
            model = build_run_model(cfg, meta)
        except (ValueError, TypeError) as e:
            raise ConfigError(f"model: {e}") from None
        try:
            build_run_optimizer(cfg, model)
        except TypeError as e:  # an option the optimizer does not take
            raise ConfigError(f"optim.{cfg.optim.name}: {e}") from None
        except ValueError as e:
            raise ConfigError(f"optim: {e}") from None


def _resolved(cfg: Config, device: torch.device) -> Config:
    """A copy of ``cfg`` with the automatic choices made for ``device`` and noted in defaults_from."""
    cfg = copy.deepcopy(cfg)
    if cfg.amp == "auto":
        cfg.amp = resolve_amp(cfg.amp, device)
        cfg.defaults_from["amp"] = f"auto: {cfg.amp} on {device.type}"
    return cfg


def _verify_data(root) -> None:
    from shogitrain.shards.verify import verify_dataset

    problems, _ = verify_dataset(root, rows=False)  # the rows are checked batch by batch
    if problems:
        more = f" (and {len(problems) - 1} more; `shogitrain verify {root}` lists them)" if len(problems) > 1 else ""
        raise TrainingError(f"{problems[0]}{more}")


def _checkpoint_to_resume(run_dir: Path, resume: bool) -> dict | None:
    """The checkpoint to continue from, or None to start at step 0. A run directory that holds no
    checkpoint (its run stopped before the first save) starts over, with or without --resume."""
    ckpt_path = run_dir / "checkpoint.pt"
    if ckpt_path.is_file():
        if resume:
            return load_checkpoint(ckpt_path)
        raise TrainingError(f"{run_dir}: a run with this name exists (use --resume or another run.name)")
    if (run_dir / "metrics.jsonl").exists():
        print(f"{run_dir}: no checkpoint was saved (the run stopped before its first one): starting over",
              file=sys.stderr)
    elif resume:
        print(f"{run_dir}: nothing to resume yet: starting at step 0", file=sys.stderr)
    return None


def _allowed_resume_changes(cfg: Config, checkpoint: dict, run_dir: Path) -> dict:
    """The config changes a resume may make (they are recorded); refuse the others, and other data."""
    changes = config_changes(checkpoint.get("config", {}), config_to_dict(cfg))
    refused = refused_changes(changes)
    if refused:
        raise TrainingError(f"{run_dir}: --resume with a changed config: {'; '.join(refused)} "
                            "(only the length, logging, evaluation and checkpoint intervals may change)")
    info_path = run_dir / "run.json"
    trained_on = json.loads(info_path.read_text()).get("data_manifest_sha256") if info_path.is_file() else None
    now = manifest_hash(cfg.data.path)
    if trained_on and trained_on != now:
        raise TrainingError(f"{run_dir}: --resume with other data: {cfg.data.path} is not the dataset this run "
                            f"trained on (manifest sha256 {trained_on[:12]}… → {now[:12]}…)")
    return {key: list(change) for key, change in changes.items() if may_change(key)}


def _write_provenance(run: Run, run_dir: Path, data: RunData, resume_changes: dict | None) -> None:
    """config.yaml, and run.json: a new one for a new run; a resumed run's gets the resume appended."""
    cfg = run.cfg
    dump_config(cfg, run_dir / "config.yaml")
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    if resume_changes is not None and (run_dir / "run.json").is_file():
        info = json.loads((run_dir / "run.json").read_text())
        info["resumed"] = True
        info["steps"] = data.total_steps
        info.setdefault("resumes", []).append({"step": run.state.step, "at": now, "changes": resume_changes})
        write_json(run_dir / "run.json", info)
        return
    write_json(run_dir / "run.json", {
        "name": run_dir.name, "git": git_state(), "data": str(cfg.data.path),
        "data_manifest_sha256": manifest_hash(cfg.data.path), "environment": environment(),
        "seed": cfg.train.seed, "world_size": run.dist.world_size, "device": str(run.device),
        "parameters": sum(p.numel() for p in run.model.parameters() if p.requires_grad),
        "train_positions": len(data.train), "test_positions": len(data.test),
        "steps": data.total_steps, "steps_per_epoch": data.steps_per_epoch,
        "started": now, "resumed": resume_changes is not None,
    })


def _record_end(run: Run, run_dir: Path) -> None:
    path = run_dir / "run.json"
    if run.dist.is_main and path.exists():
        state = run.state
        info = json.loads(path.read_text())
        info.update({"finished_step": state.step, "wall_clock_s": round(state.elapsed_s, 3),
                     "eval_s": round(state.eval_s, 3), "nonfinite_steps": state.nonfinite_total,
                     "ended": datetime.now(timezone.utc).isoformat(timespec="seconds")})
        write_json(path, info)


def train(cfg: Config, resume: bool = False, progress: bool = True) -> Path:
    """Train one run described by ``cfg``; returns the run directory.

    Everything that can be checked is checked before the run directory is touched: the config
    builds, the device supports it, the dataset opens (and, unless ``data.verify`` is off, matches
    its checksums). One process at a time writes a run directory (``RUN_DIR/.lock``)."""
    if not cfg.data.path:
        raise TrainingError("no dataset: give --data DIR (or data.path in the config)")
    device_kind = cfg.train.device if cfg.train.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    dist = init_distributed(device_kind)
    device = pick_device(cfg.train.device, dist.local_rank)
    cfg = _resolved(cfg, device)
    _check_buildable(cfg, device)
    data = RunData.open(cfg, dist.world_size)
    if cfg.data.verify:
        _verify_data(cfg.data.path)
    if device.type == "cpu":
        retain_freed_memory()
    run_dir = Path(cfg.run.dir) / run_name(cfg)
    lock = exclusive_lock(run_dir / ".lock", f"run directory {run_dir}") if dist.is_main else contextlib.nullcontext()
    with lock:
        for stale in remove_stale_temps(run_dir, ".*.tmp-*") if dist.is_main else ():
            print(f"removed {stale}, left by a process that no longer runs", file=sys.stderr)
        return _train(cfg, dist, device, data, run_dir, resume, progress)


def _train(cfg: Config, dist, device: torch.device, data: RunData, run_dir: Path, resume: bool,
           progress: bool) -> Path:
    checkpoint = _checkpoint_to_resume(run_dir, resume)
    if checkpoint is not None:
        check_feature_set(checkpoint, cfg.model.input2_planes)
    resume_changes = _allowed_resume_changes(cfg, checkpoint, run_dir) if checkpoint else None
    torch.manual_seed(cfg.train.seed)
    model = build_run_model(cfg, device)
    if cfg.init.method == "gradinit" and checkpoint is None:
        from shogitrain.train.init import run_gradinit

        run_gradinit(model, cfg, data.train, data.min_ratings, device, run_dir if dist.is_main else None)
    run = build_run(cfg, device, dist, model, data.total_steps, data.epochs, checkpoint)
    log = RunLog(run_dir, enabled=dist.is_main, resume_step=run.state.step if checkpoint else None)
    if dist.is_main:
        _write_provenance(run, run_dir, data, resume_changes)

    bar = tqdm(total=data.total_steps, initial=run.state.step, disable=not (progress and dist.is_main),
               unit="step", dynamic_ncols=True, desc=run_dir.name)
    trainer = _Trainer(run, data, run_dir, log, bar)

    def on_signal(signum, frame):
        trainer.interrupted = signum

    handled = (signal.SIGINT, signal.SIGTERM) if dist.is_main else ()
    previous = {signum: signal.signal(signum, on_signal) for signum in handled}
    encode_ahead = _encode_in_background(device, dist.world_size)
    try:
        while run.state.step < data.total_steps:
            trainer.epoch(run.state.step // data.steps_per_epoch, encode_ahead)
        trainer.finish_averaging()
    except KeyboardInterrupt:
        trainer.save()
        if dist.is_main:
            bar.write(f"interrupted at step {run.state.step}: checkpoint saved to {run_dir / 'checkpoint.pt'}; "
                      "continue with --resume", file=sys.stderr)
        raise
    finally:
        bar.close()
        log.close()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        _record_end(run, run_dir)
        shutdown(dist)
    return run_dir
