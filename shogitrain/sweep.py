"""`shogitrain sweep EXPERIMENT.yaml`: every (variant, seed) of an experiment, resumable.

An experiment file (docs/experiments.md) names a base config, variants (a list and/or a grid of
config keys), the seeds, the prepared dataset and an output directory; the run of a variant with
seed n goes to ``OUT/<variant>/seed-<n>/``. A rerun skips finished runs (run.json ``finished_step``
≥ the planned steps) and trains every other run: ``train(resume=True)`` continues one with a
checkpoint bit-identically (or extends it when the file asks for more steps), and a directory
without a checkpoint is started over. A run whose stored
config differs from the file in a key a resume may not change (train/resume.py), or that trained
on other data, stops the sweep before anything is trained. Runs go one after another in this
process — under torchrun every rank takes part in each — or ``parallel`` at a time as
``shogitrain train`` subprocesses that share the cores. ``OUT/experiment.json`` lists the runs.
"""

from __future__ import annotations

import difflib
import itertools
import json
import os
import re
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from shogitrain.config import Config, ConfigError, config_to_dict, load_config
from shogitrain.files import atomic_write
from shogitrain.report import EXPERIMENT_FILE, hms

EXPERIMENT_KEYS = ("base", "variants", "grid", "seeds", "data", "out")
VARIANT_KEYS = ("config", "set")
SET_BY_SWEEP = {"train.seed": "seeds", "data.path": "data", "run.dir": "out", "run.name": "out"}
VARIANT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+=-]*")  # a directory name, safe in a shell
LOG_FILE = "train.log"  # a subprocess run's output, in its run directory
STATUS_EVERY_S = 60.0


class SweepError(Exception):
    """An experiment file or experiment directory that cannot be run (one-line message)."""


@dataclass(frozen=True)
class Variant:
    name: str
    preset: str | None  # a config file, or None for the defaults
    overrides: tuple[str, ...]  # ``key=value`` texts, applied in order


@dataclass(frozen=True)
class PlannedRun:
    variant: Variant
    seed: int
    dir: Path
    data: str

    @property
    def label(self) -> str:
        return f"{self.variant.name}/{self.dir.name}"

    @property
    def overrides(self) -> tuple[str, ...]:
        return (*self.variant.overrides, f"train.seed={self.seed}", f"data.path={json.dumps(self.data)}",
                f"run.dir={json.dumps(str(self.dir.parent))}", f"run.name={json.dumps(self.dir.name)}")

    def config(self) -> Config:
        return load_config(self.variant.preset, self.overrides)


@dataclass
class Experiment:
    path: Path
    variants: list[Variant]
    seeds: list[int]
    data: str
    out: Path
    runs: list[PlannedRun]


# ---------------------------------------------------------------------------------------------- the file


def _unknown(where: str, key, allowed) -> SweepError:
    close = difflib.get_close_matches(str(key), allowed, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return SweepError(f"{where}: unknown key '{key}'{hint}; expected {', '.join(allowed)}")


def _mapping(where: str, value, allowed) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SweepError(f"{where}: expected a mapping, got {value!r}")
    for key in value:
        if key not in allowed:
            raise _unknown(where, key, allowed)
    return value


def _override_texts(where: str, value) -> list[str]:
    """``{key: value}`` or ``["key=value", ...]`` → ``key=value`` texts (values as JSON, which YAML reads back)."""
    if value is None:
        return []
    if isinstance(value, dict):
        texts = [f"{key}={json.dumps(v)}" for key, v in value.items()]
    elif isinstance(value, list) and all(isinstance(t, str) and "=" in t for t in value):
        texts = list(value)
    else:
        raise SweepError(f"{where}: expected a mapping of config keys, or a list of key=value, got {value!r}")
    for text in texts:
        key = text.split("=", 1)[0].strip()
        if key in SET_BY_SWEEP:
            raise SweepError(f"{where}: {key} is set by the sweep from '{SET_BY_SWEEP[key]}', not here")
    return texts


def _preset(where: str, body: dict, default: str | None) -> str | None:
    preset = body.get("config", default)
    if preset is not None and not isinstance(preset, str):
        raise SweepError(f"{where}.config: expected the path of a config file, got {preset!r}")
    return preset


def _checked(where: str, variant: Variant) -> Variant:
    """The variant, once its config loads (an unknown key is an error with its 'did you mean')."""
    try:
        load_config(variant.preset, variant.overrides)
    except ConfigError as e:
        raise SweepError(f"{where}: {e}") from None
    if not VARIANT_NAME.fullmatch(variant.name):
        raise SweepError(f"{where}: variant name {variant.name!r} is not a plain directory name "
                         "(letters, digits, . _ + = -)")
    return variant


def _listed_variants(path: Path, spec: dict) -> list[Variant]:
    base = _mapping(f"{path}: base", spec.get("base"), VARIANT_KEYS)
    base_preset = _preset(f"{path}: base", base, None)
    base_overrides = _override_texts(f"{path}: base.set", base.get("set"))
    _checked(f"{path}: base", Variant("base", base_preset, tuple(base_overrides)))
    listed = spec.get("variants")
    if listed is None:
        return [Variant("", base_preset, tuple(base_overrides))]
    if not isinstance(listed, dict) or not listed:
        raise SweepError(f"{path}: variants: expected a mapping of variant names, got {listed!r}")
    variants = []
    for name, body in listed.items():
        where = f"{path}: variants.{name}"
        body = _mapping(where, body, VARIANT_KEYS)
        overrides = base_overrides + _override_texts(f"{where}.set", body.get("set"))
        variants.append(_checked(where, Variant(str(name), _preset(where, body, base_preset), tuple(overrides))))
    return variants


def _grid_points(path: Path, grid) -> list[tuple[str, list[str]]]:
    """``{key: [values]}`` → every combination as (name part, overrides); names use the keys' last part."""
    if grid is None:
        return [("", [])]
    if not isinstance(grid, dict) or not grid:
        raise SweepError(f"{path}: grid: expected a mapping of config keys to lists of values, got {grid!r}")
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise SweepError(f"{path}: grid.{key}: expected a non-empty list of values, got {values!r}")
        _override_texts(f"{path}: grid", {key: values[0]})
    leaves = [str(k).rsplit(".", 1)[-1] for k in grid]
    labels = leaves if len(set(leaves)) == len(leaves) else [str(k) for k in grid]
    points = []
    for combination in itertools.product(*grid.values()):
        name = "_".join(f"{label}-{value}" for label, value in zip(labels, combination))
        points.append((name, [f"{key}={json.dumps(v)}" for key, v in zip(grid, combination)]))
    return points


def _variants(path: Path, spec: dict) -> list[Variant]:
    listed = _listed_variants(path, spec)
    points = _grid_points(path, spec.get("grid"))
    variants = []
    for v, (point, overrides) in itertools.product(listed, points):
        if not point:
            variants.append(Variant(v.name or "base", v.preset, v.overrides))
            continue
        name = "_".join(part for part in (v.name, point) if part)
        variants.append(_checked(f"{path}: grid ({name})", Variant(name, v.preset, v.overrides + tuple(overrides))))
    names = [v.name for v in variants]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise SweepError(f"{path}: variant names repeat: {', '.join(repeated)}")
    return variants


def _seeds(path: Path, value) -> list[int]:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return list(range(value))
    if (isinstance(value, list) and value and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0
                                                  for s in value) and len(set(value)) == len(value)):
        return list(value)
    raise SweepError(f"{path}: seeds: expected a count ≥ 1 or a list of distinct seeds ≥ 0, got {value!r}")


def load_experiment(path, data: str | None = None, out: str | None = None) -> Experiment:
    """Read and check an experiment file; ``data`` / ``out`` replace the file's. Raises :class:`SweepError`."""
    path = Path(path)
    try:
        spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise SweepError(f"{path}: cannot read ({e.strerror})") from None
    except yaml.YAMLError as e:
        raise SweepError(f"{path}: invalid YAML: {' '.join(str(e).split())}") from None
    spec = _mapping(str(path), spec, EXPERIMENT_KEYS)
    variants = _variants(path, spec)
    seeds = _seeds(path, spec.get("seeds"))
    data = data or spec.get("data")
    out = out or spec.get("out")
    for key, value in (("data", data), ("out", out)):
        if not isinstance(value, str) or not value:
            raise SweepError(f"{path}: {key}: expected a directory (or give --{key}), got {value!r}")
    if not (Path(data) / "manifest.json").is_file():
        raise SweepError(f"{path}: data: {data} has no manifest.json (prepare it with `shogitrain prepare`)")
    out_dir = Path(out)
    runs = [PlannedRun(v, seed, out_dir / v.name / f"seed-{seed}", data) for v in variants for seed in seeds]
    return Experiment(path, variants, seeds, data, out_dir, runs)


# ---------------------------------------------------------------------------------------------- state


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def run_state(run: PlannedRun, steps: int) -> str:
    """'finished' (``steps`` or more trained), 'resume' (a checkpoint to continue) or 'new'."""
    if not (run.dir / "checkpoint.pt").is_file():
        return "new"
    finished = _read_json(run.dir / "run.json").get("finished_step")
    return "finished" if isinstance(finished, int) and finished >= steps else "resume"


def check_same_run(run: PlannedRun) -> None:
    """Refuse a run with a checkpoint whose config differs from the plan in a key a resume may not
    change (the rules of train/resume.py), or that trained on other data — finished runs included,
    which the sweep would otherwise skip without a look."""
    from shogitrain.shards.reader import manifest_hash
    from shogitrain.train.resume import config_changes, refused_changes

    try:
        stored = yaml.safe_load((run.dir / "config.yaml").read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        stored = None
    if not isinstance(stored, dict):
        raise SweepError(f"{run.dir}: a checkpoint without a readable config.yaml; move the run away to restart it")
    planned = config_to_dict(run.config())
    if planned.get("amp") == "auto":  # train resolves it for the device; config.yaml holds the choice
        planned["amp"] = stored.get("amp")
    refused = refused_changes(config_changes(stored, planned))
    if refused:
        raise SweepError(f"{run.dir}: trained with another config than the experiment's: {'; '.join(refused)}; "
                         "restore the experiment file or move the run away")
    recorded = _read_json(run.dir / "run.json").get("data_manifest_sha256")
    if recorded and recorded != manifest_hash(run.data):
        raise SweepError(f"{run.dir}: trained on another dataset than {run.data} (manifest hash differs)")


def planned_steps(cfg: Config) -> int:
    """The run's total optimizer steps, as `train` computes them (train.steps, else epochs of the data)."""
    if cfg.train.steps:
        return cfg.train.steps
    from shogitrain.shards.reader import ShardDataset

    return ShardDataset(cfg.data.path, cfg.data.train_split).steps_per_epoch(cfg.train.batch_size) * cfg.train.epochs


def measured_progress(run: PlannedRun) -> tuple[int, float | None]:
    """(steps done, seconds per step including evaluations) from the run's files; seconds None if unmeasured."""
    info = _read_json(run.dir / "run.json")
    if isinstance(info.get("finished_step"), int) and info["finished_step"] > 0 and info.get("wall_clock_s"):
        return info["finished_step"], (info["wall_clock_s"] + info.get("eval_s", 0.0)) / info["finished_step"]
    from shogitrain.train.runlog import read_metrics

    try:
        rows = [r for r in read_metrics(run.dir) if r.get("time_s") and r.get("step")]
    except ValueError:  # a row half-written by a run being killed
        rows = []
    if not rows:
        return 0, None
    return rows[-1]["step"], rows[-1]["time_s"] / rows[-1]["step"]


class Progress:
    """Runs done / total and an ETA from the step times measured in the runs' own files."""

    def __init__(self, runs: list[PlannedRun], parallel: int):
        self.runs, self.parallel = runs, parallel
        self.steps = {r.label: planned_steps(r.config()) for r in runs}
        self.done: set[str] = set()  # labels of the finished runs

    def eta_s(self) -> float | None:
        measured = {r.label: measured_progress(r) for r in self.runs}
        by_variant: dict[str, list[float]] = {}
        for run in self.runs:
            seconds = measured[run.label][1]
            if seconds is not None:
                by_variant.setdefault(run.variant.name, []).append(seconds)
        if not by_variant:
            return None
        fallback = statistics.fmean(statistics.median(v) for v in by_variant.values())
        remaining, left = 0.0, 0
        for run in self.runs:
            if run.label in self.done:
                continue
            per_step = statistics.median(by_variant.get(run.variant.name, [fallback]))
            remaining += max(self.steps[run.label] - measured[run.label][0], 0) * per_step
            left += 1
        return remaining / max(1, min(self.parallel, left))

    def line(self, running: list[PlannedRun] = ()) -> str:
        eta = self.eta_s()
        text = f"sweep: {len(self.done)}/{len(self.runs)} runs done"
        if running:
            text += ", running " + ", ".join(
                f"{r.label} (step {measured_progress(r)[0]}/{self.steps[r.label]})" for r in running)
        return text + ("; ETA " + hms(eta) if eta is not None else "; ETA after the first measured steps")


# ---------------------------------------------------------------------------------------------- running


def _write_listing(exp: Experiment) -> None:
    listing = {
        "experiment": str(exp.path), "data": exp.data, "seeds": exp.seeds,
        "variants": [{"name": v.name, "config": v.preset, "set": list(v.overrides)} for v in exp.variants],
        "runs": [{"variant": r.variant.name, "seed": r.seed, "dir": str(r.dir.relative_to(exp.out))} for r in exp.runs],
    }
    exp.out.mkdir(parents=True, exist_ok=True)
    with atomic_write(exp.out / EXPERIMENT_FILE) as f:
        f.write(json.dumps(listing, indent=1) + "\n")


def _is_shogitrain_error(e: Exception) -> bool:
    """An error of a shogitrain class: bad input or a diverged run, a one-line message (not a bug)."""
    return type(e).__module__.split(".")[0] == "shogitrain"


def _run_here(pending: list[PlannedRun], states: dict, progress: Progress, show_bars: bool, say,
              under_torchrun: bool) -> list[str]:
    """Train the runs one after another in this process; returns the failures ('label: message')."""
    from shogitrain.train.loop import train

    failures = []
    for run in pending:
        say(f"{progress.line()}\n  → {run.label}" + (" (resuming)" if states[run.label] == "resume" else ""))
        try:
            # a directory without a checkpoint (stopped before its first save): train starts it over
            train(run.config(), resume=states[run.label] == "resume", progress=show_bars)
        except Exception as e:
            if not _is_shogitrain_error(e):
                raise
            if under_torchrun:  # the other ranks cannot go on alone
                raise SweepError(f"{run.label}: {e}") from None
            failures.append(f"{run.label}: {e}")
        else:
            progress.done.add(run.label)
    return failures


def _train_command(run: PlannedRun, resume: bool) -> list[str]:
    command = [sys.executable, "-m", "shogitrain", "train", "--quiet"]
    if run.variant.preset:
        command += ["--config", run.variant.preset]
    for text in run.overrides:
        command += ["--set", text]
    return command + (["--resume"] if resume else [])


def _last_line(path: Path) -> str:
    try:
        lines = [line for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    except OSError:
        return "no output"
    return lines[-1] if lines else "no output"


def _run_subprocesses(pending: list[PlannedRun], states: dict, progress: Progress, parallel: int, say) -> list[str]:
    """Train ``parallel`` runs at a time as `shogitrain train` processes sharing the cores."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = str(max(1, cores // parallel))
    env = os.environ | {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    queue, active, failures = list(pending), {}, []
    last_status = 0.0
    try:
        while queue or active:
            while queue and len(active) < parallel:
                run = queue.pop(0)
                run.dir.mkdir(parents=True, exist_ok=True)
                with open(run.dir / LOG_FILE, "a", encoding="utf-8") as log:
                    active[run.label] = (run, subprocess.Popen(_train_command(run, states[run.label] == "resume"),
                                                               stdout=log, stderr=subprocess.STDOUT, env=env))
                say(f"  → {run.label} started" + (" (resuming)" if states[run.label] == "resume" else ""))
            time.sleep(0.5)
            finished = [(label, run, p.returncode) for label, (run, p) in active.items() if p.poll() is not None]
            for label, run, code in finished:
                del active[label]
                if code == 0:
                    progress.done.add(label)
                else:
                    failures.append(f"{label}: {_last_line(run.dir / LOG_FILE)} (see {run.dir / LOG_FILE})")
            if (queue or active) and (finished or time.monotonic() - last_status > STATUS_EVERY_S):
                say(progress.line([run for run, _ in active.values()]))
                last_status = time.monotonic()
    except KeyboardInterrupt:  # Ctrl-C reached the children too: each saves its checkpoint
        for _, p in active.values():
            p.wait()
        raise
    return failures


def run_sweep(path, data: str | None = None, out: str | None = None, parallel: int = 1, dry_run: bool = False,
              progress: bool = True, say=print) -> Experiment:
    """Train every run of the experiment not finished yet; raises :class:`SweepError` if any failed.

    Under torchrun every rank reads the runs' states before the process group forms (a rendezvous
    of all ranks), so no rank sees a file another has already changed; the group then serves
    every run."""
    exp = load_experiment(path, data, out)
    under_torchrun = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if under_torchrun and parallel > 1:
        raise SweepError("--parallel runs single-process runs side by side; under torchrun each run uses "
                         "every rank, one after another: use --parallel 1")
    tracker = Progress(exp.runs, parallel)
    states = {run.label: run_state(run, tracker.steps[run.label]) for run in exp.runs}
    for run in exp.runs:
        if states[run.label] != "new":
            check_same_run(run)
    tracker.done = {label for label, state in states.items() if state == "finished"}
    if dry_run:
        for run in exp.runs:
            say(f"{run.label}: {states[run.label]} ({tracker.steps[run.label]} steps) → {run.dir}")
        say(tracker.line())
        return exp
    from shogitrain.train.distributed import init_distributed, shutdown

    device = exp.runs[0].config().train.device
    group = init_distributed(device if device != "auto" else ("cuda" if _cuda() else "cpu"))
    say = say if group.is_main else (lambda *_: None)
    try:
        if group.is_main:
            _write_listing(exp)
        pending = [run for run in exp.runs if states[run.label] != "finished"]
        if parallel == 1:
            failures = _run_here(pending, states, tracker, progress and group.is_main, say, group.enabled)
        else:
            failures = _run_subprocesses(pending, states, tracker, parallel, say)
    finally:
        shutdown(group)  # one process group for every run: formed above, after each rank read the states
    say(tracker.line())
    if failures:
        raise SweepError(f"{len(failures)} of {len(exp.runs)} runs failed: " + "; ".join(failures))
    return exp


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()
