"""`shogitrain sweep`: the experiment file's checks, skipping finished runs, resuming after SIGKILL, ETA."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner

from conftest import REPO
from shogitrain.cli import main
from shogitrain.sweep import PlannedRun, Progress, SweepError, Variant, load_experiment, run_sweep
from shogitrain.train.checkpoint import load_checkpoint
from shogitrain.train.runlog import read_metrics

TINY = {"model.blocks": 1, "model.channels": 16, "model.fc_units": 16, "train.batch_size": 32,
        "train.eval_interval": 8, "train.eval_sample": 64, "train.log_interval": 4, "train.checkpoint_interval": 4,
        "train.device": "cpu"}


def write_experiment(path: Path, dataset: Path, out: Path, steps: int = 8, seeds=2, **extra) -> Path:
    spec = {
        "base": {"config": str(REPO / "configs/tiny-bn.yaml"), "set": {**TINY, "train.steps": steps}},
        "variants": {"bn": None, "nf": {"config": str(REPO / "configs/tiny-nf.yaml")}},
        "seeds": seeds, "data": str(dataset), "out": str(out), **extra,
    }
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _comparable(rows):
    return [{k: v for k, v in r.items() if k not in ("time_s", "positions_per_s")} for r in rows]


# ---------------------------------------------------------------------------------------------- the file


def _error(tmp_path, sample_dataset, **spec) -> str:
    path = write_experiment(tmp_path / "e.yaml", sample_dataset, tmp_path / "out")
    data = yaml.safe_load(path.read_text()) | spec
    path.write_text(yaml.safe_dump({k: v for k, v in data.items() if v != "DROP"}))
    with pytest.raises(SweepError) as info:
        load_experiment(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)
    return str(info.value)


def test_experiment_file_errors_name_the_key(sample_dataset, tmp_path):
    assert "unknown key 'seed' (did you mean 'seeds'?)" in _error(tmp_path, sample_dataset, seeds="DROP", seed=3)
    bad_key = _error(tmp_path, sample_dataset, variants={"nf": {"set": {"optim.lrr": 0.1}}})
    assert "variants.nf" in bad_key and "unknown config key 'optim.lrr' (did you mean 'optim.lr'?)" in bad_key
    assert "unknown key 'sets' (did you mean 'set'?)" in _error(tmp_path, sample_dataset, variants={"nf": {"sets": {}}})
    assert "train.seed is set by the sweep from 'seeds'" in _error(
        tmp_path, sample_dataset, variants={"nf": {"set": ["train.seed=3"]}})
    assert "base: model.blocks: must be ≥ 1" in _error(tmp_path, sample_dataset, base={"set": {"model.blocks": 0}})
    assert "seeds: expected a count" in _error(tmp_path, sample_dataset, seeds=[1, 1])
    assert "has no manifest.json" in _error(tmp_path, sample_dataset, data=str(tmp_path))
    assert "grid.optim.lr: expected a non-empty list" in _error(tmp_path, sample_dataset, grid={"optim.lr": 0.1})
    assert "variants.nf.config: expected the path" in _error(tmp_path, sample_dataset, variants={"nf": {"config": 3}})
    assert "cannot read config file" in _error(tmp_path, sample_dataset, variants={"nf": {"config": "no.yaml"}})
    assert "not a plain directory name" in _error(tmp_path, sample_dataset, variants={"a/b": None})
    result = CliRunner().invoke(main, ["sweep", str(tmp_path / "e.yaml")])
    assert result.exit_code == 1 and result.output.startswith("Error: ") and "not a plain" in result.output


def test_grid_crossed_with_variants(sample_dataset, tmp_path):
    path = write_experiment(tmp_path / "e.yaml", sample_dataset, tmp_path / "out", seeds=[3, 5],
                            grid={"optim.lr": [0.01, 0.02], "model.fc_units": [24]})
    exp = load_experiment(path, out=str(tmp_path / "elsewhere"))
    assert [v.name for v in exp.variants] == ["bn_lr-0.01_fc_units-24", "bn_lr-0.02_fc_units-24",
                                              "nf_lr-0.01_fc_units-24", "nf_lr-0.02_fc_units-24"]
    run = exp.runs[-1]
    assert run.dir == tmp_path / "elsewhere" / "nf_lr-0.02_fc_units-24" / "seed-5"
    cfg = run.config()
    assert (cfg.model.arch, cfg.optim.lr, cfg.train.seed, cfg.model.fc_units) == ("nf", 0.02, 5, 24)
    assert (cfg.run.dir, cfg.run.name, cfg.data.path) == (str(run.dir.parent), "seed-5", str(sample_dataset))

    spec = yaml.safe_load(path.read_text())
    del spec["variants"]
    spec["grid"] = {"optim.lr": [0.01, 0.02]}
    path.write_text(yaml.safe_dump(spec))
    assert [v.name for v in load_experiment(path).variants] == ["lr-0.01", "lr-0.02"]
    del spec["grid"]
    path.write_text(yaml.safe_dump(spec))
    assert [v.name for v in load_experiment(path).variants] == ["base"]


# ---------------------------------------------------------------------------------------------- running


def _sweep_process(path: Path, *args, env=None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "shogitrain", "sweep", str(path), "--quiet", *args],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_killed_sweep_resumes_to_the_same_results(sample_dataset, tmp_path):
    """SIGKILL the sweep during its third run, leave the fourth's directory logged but never checkpointed,
    rerun: every run ends with the weights and metrics of an uninterrupted sweep (one thread each)."""
    steps = 24
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_sweep(write_experiment(tmp_path / "ref.yaml", sample_dataset, tmp_path / "ref", steps=steps),
                  progress=False, say=lambda *_: None)
    finally:
        torch.set_num_threads(torch_threads)

    env = os.environ | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    path = write_experiment(tmp_path / "e.yaml", sample_dataset, tmp_path / "out", steps=steps)
    killed = _sweep_process(path, env=env)
    third = tmp_path / "out" / "nf" / "seed-0"
    deadline = time.monotonic() + 300
    while not (third / "checkpoint.pt").exists() and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert load_checkpoint(third / "checkpoint.pt")["train_state"]["step"] < steps  # killed mid-run
    fourth = tmp_path / "out" / "nf" / "seed-1"
    fourth.mkdir(parents=True, exist_ok=True)
    (fourth / "metrics.jsonl").write_text('{"step": 4, "split": "train"}\n')  # logged, never checkpointed

    rerun = _sweep_process(path, env=env)
    output = rerun.communicate(timeout=300)[0]
    assert rerun.returncode == 0, output
    assert "nf/seed-0 (resuming)" in output and "→ bn/" not in output and "→ nf/seed-1" in output
    assert "4/4 runs done" in output
    for run in ("bn/seed-0", "bn/seed-1", "nf/seed-0", "nf/seed-1"):
        a = load_checkpoint(tmp_path / "ref" / run / "checkpoint.pt")
        b = load_checkpoint(tmp_path / "out" / run / "checkpoint.pt")
        assert b["train_state"]["step"] == steps
        for name, tensor in a["model"].items():
            assert torch.equal(tensor, b["model"][name]), (run, name)
        assert _comparable(read_metrics(tmp_path / "ref" / run)) == _comparable(read_metrics(tmp_path / "out" / run))


def test_parallel_runs_share_the_cores(sample_dataset, tmp_path):
    path = write_experiment(tmp_path / "e.yaml", sample_dataset, tmp_path / "out", steps=4, seeds=1)
    result = CliRunner().invoke(main, ["sweep", str(path), "--parallel", "2"])
    assert result.exit_code == 0, result.output
    assert "bn/seed-0 started" in result.output and "2/2 runs done" in result.output
    threads = max(1, len(os.sched_getaffinity(0)) // 2)
    for run in ("bn/seed-0", "nf/seed-0"):
        info = json.loads((tmp_path / "out" / run / "run.json").read_text())
        assert (info["finished_step"], info["environment"]["cpu_threads"]) == (4, threads)
        assert "run directory:" in (tmp_path / "out" / run / "train.log").read_text()


def test_rerun_skips_finished_runs_and_refuses_a_changed_config(sample_dataset, tmp_path):
    path = write_experiment(tmp_path / "e.yaml", sample_dataset, tmp_path / "out", steps=4, seeds=[7])
    said = []
    run_sweep(path, progress=False, say=said.append)
    assert said[-1].startswith("sweep: 2/2 runs done")
    listing = json.loads((tmp_path / "out" / "experiment.json").read_text())
    assert [r["dir"] for r in listing["runs"]] == ["bn/seed-7", "nf/seed-7"]
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "out").rglob("checkpoint.pt")}

    said.clear()
    run_sweep(path, progress=False, say=said.append)
    assert not any("→" in line for line in said) and said[-1].startswith("sweep: 2/2 runs done; ETA 0:00:00")
    assert stamps == {p: p.stat().st_mtime_ns for p in (tmp_path / "out").rglob("checkpoint.pt")}

    spec = yaml.safe_load(path.read_text())
    spec["base"]["set"]["train.steps"] = 6  # more steps: the finished runs are extended
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    run_sweep(path, progress=False, say=said.append)
    for run in ("bn/seed-7", "nf/seed-7"):
        info = json.loads((tmp_path / "out" / run / "run.json").read_text())
        assert (info["finished_step"], info["resumes"][0]["step"]) == (6, 4)

    spec["variants"]["nf"]["set"] = {"optim.lr": 0.01}
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    with pytest.raises(SweepError, match=r"nf/seed-7: trained with another config than the experiment's: "
                                         r"optim.lr \(0.05 → 0.01\)"):
        run_sweep(path, progress=False, say=said.append)


def test_eta_from_measured_step_times(sample_dataset, tmp_path):
    """Runs a/0 finished (8 s training + 2 s evaluation for 10 steps: 1.0 s/step), a/1 at step 4 after 6 s
    (1.5 s/step), b/0 not started. Variant a: median 1.25 s/step; b: no measurement, the mean over
    variants, 1.25 s/step. Left: a/1 6 steps, b/0 10 steps → 16 × 1.25 = 20 s; two at a time: 10 s."""
    a, b = Variant("a", None, ("train.steps=10",)), Variant("b", None, ("train.steps=10",))
    runs = [PlannedRun(a, 0, tmp_path / "a" / "seed-0", str(sample_dataset)),
            PlannedRun(a, 1, tmp_path / "a" / "seed-1", str(sample_dataset)),
            PlannedRun(b, 0, tmp_path / "b" / "seed-0", str(sample_dataset))]
    for run in runs[:2]:
        run.dir.mkdir(parents=True)
    (runs[0].dir / "run.json").write_text(json.dumps({"finished_step": 10, "steps": 10, "wall_clock_s": 8.0,
                                                      "eval_s": 2.0}))
    (runs[1].dir / "metrics.jsonl").write_text(json.dumps({"step": 4, "split": "train", "time_s": 6.0}) + "\n")
    progress = Progress(runs, parallel=1)
    progress.done = {"a/seed-0"}
    assert progress.eta_s() == pytest.approx(20.0)
    progress = Progress(runs, parallel=2)
    progress.done = {"a/seed-0"}
    assert progress.eta_s() == pytest.approx(10.0)
    assert progress.line([runs[1]]) == "sweep: 1/3 runs done, running a/seed-1 (step 4/10); ETA 0:00:10"


def _torchrun_worker(rank, world_size, port, path):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world_size),
                      RANK=str(rank), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    run_sweep(path, progress=False, say=lambda *_: None)


def test_sweep_under_torchrun_uses_every_rank_per_run(sample_dataset, tmp_path):
    """Two ranks, two runs: one process group serves both (forming a second one after the first
    was destroyed hung in gloo's rendezvous)."""
    from test_train import spawn_ranks

    path = write_experiment(tmp_path / "e.yaml", sample_dataset, tmp_path / "out", steps=4, seeds=1)
    spawn_ranks(_torchrun_worker, 2, str(path))
    for run in ("bn/seed-0", "nf/seed-0"):
        info = json.loads((tmp_path / "out" / run / "run.json").read_text())
        assert (info["world_size"], info["finished_step"]) == (2, 4)


@pytest.mark.parametrize("name", ["blog-2021-cpu", "blog-2021-gpu"])
def test_2021_experiment_files(name, sample_dataset, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)  # the files name their presets relative to the repository root
    exp = load_experiment(f"configs/experiments/{name}.yaml", data=str(sample_dataset), out=str(tmp_path))
    assert [v.name for v in exp.variants] == ["bn", "nf-blog", "nf", "nf-skip1"]
    assert exp.seeds == [0, 1, 2] and len(exp.runs) == 12
    cfg = {run.variant.name: run.config() for run in exp.runs if run.seed == 0}
    assert [c.model.arch for c in cfg.values()] == ["bn", "nf-blog", "nf", "nf"]
    assert [c.clip.mode for c in cfg.values()] == ["norm", "agc", "agc", "agc"]
    assert cfg["nf-skip1"].model.options == {"skip_init": "one"} and cfg["nf"].model.options == {}
    assert cfg["nf-blog"].clip.agc_exclude == ["policy_head", "value_head"]
    assert len({(c.train.steps, c.train.batch_size, c.model.blocks, c.model.channels, c.amp, c.optim.lr)
                for c in cfg.values()}) == 1  # the variants differ in the net and its clipping only
    if name.endswith("gpu"):
        c = cfg["bn"]
        assert (c.model.blocks, c.model.channels, c.train.batch_size, c.amp, c.train.device) == (10, 192, 1024, "fp16", "cuda")
