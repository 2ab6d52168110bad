"""The training loop: learning, resume bit-identity, non-finite handling, AMP, SWA, optimizers, DDP."""

import json
import os
import socket

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from shogitrain.cli import main
from shogitrain.config import load_config
from shogitrain.train import loop, step
from shogitrain.train.checkpoint import load_checkpoint
from shogitrain.train.loop import TrainingError, train
from shogitrain.train.runlog import read_metrics

TINY = ["model.blocks=1", "model.channels=16", "model.fc_units=16", "train.batch_size=32",
        "train.eval_interval=0", "train.log_interval=5", "train.eval_full_each_epoch=false", "train.device=cpu"]


def tiny_config(dataset, run_dir, *extra, preset="configs/tiny-bn.yaml"):
    from conftest import REPO

    return load_config(REPO / preset, [*TINY, f"data.path={dataset}", f"run.dir={run_dir.parent}",
                                       f"run.name={run_dir.name}", *extra])


def _comparable(rows):
    """Metrics rows without the wall-clock fields."""
    return [{k: v for k, v in r.items() if k not in ("time_s", "positions_per_s")} for r in rows]


def test_tiny_run_learns(sample_dataset, tmp_path):
    cfg = tiny_config(sample_dataset, tmp_path / "run", "train.steps=120", "train.eval_interval=40",
                      "train.eval_sample=512", "optim.lr=0.05", "train.batch_size=64")
    run_dir = train(cfg, progress=False)
    rows = read_metrics(run_dir)
    test = [r for r in rows if r["split"] == "test_sample"]
    assert [r["step"] for r in test] == [40, 80, 120]
    assert test[-1]["loss"] < test[0]["loss"]
    trains = [r for r in rows if r["split"] == "train"]
    assert trains[-1]["loss"] < trains[0]["loss"]
    info = json.loads((run_dir / "run.json").read_text())
    assert info["finished_step"] == 120 and info["wall_clock_s"] > 0
    assert "commit" in info["git"] and info["data_manifest_sha256"]
    assert (run_dir / "metrics.csv").read_text().startswith("step,")
    state = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert state["train_state"]["step"] == 120


@pytest.mark.parametrize("arch", ["bn", "nf"])
def test_interrupt_then_resume_is_bit_identical(sample_dataset, tmp_path, arch, monkeypatch):
    extra = [f"model.arch={arch}", "train.steps=14", "train.eval_interval=5", "train.eval_sample=64"]
    straight = train(tiny_config(sample_dataset, tmp_path / "a", *extra), progress=False)

    real_make_batch = loop.make_batch
    calls = {"n": 0}

    def ctrl_c_before_step_8(*args, **kwargs):  # as if the user pressed Ctrl-C during step 8
        calls["n"] += 1
        if calls["n"] == 8:
            raise KeyboardInterrupt
        return real_make_batch(*args, **kwargs)

    monkeypatch.setattr(loop, "make_batch", ctrl_c_before_step_8)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(sample_dataset, tmp_path / "b", *extra), progress=False)
    assert load_checkpoint(tmp_path / "b" / "checkpoint.pt")["train_state"]["step"] == 7
    monkeypatch.setattr(loop, "make_batch", real_make_batch)
    resumed = train(tiny_config(sample_dataset, tmp_path / "b", *extra), resume=True, progress=False)
    a = load_checkpoint(straight / "checkpoint.pt")
    b = load_checkpoint(resumed / "checkpoint.pt")
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    assert _comparable(read_metrics(straight)) == _comparable(read_metrics(resumed))


def test_nonfinite_steps_are_skipped_then_abort(sample_dataset, tmp_path, monkeypatch):
    real = step.policy_value_loss
    calls = {"n": 0}

    def sometimes_nan(*args, **kwargs):
        terms = real(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 2 or calls["n"] > 4:
            terms.total = terms.total * float("nan")
        return terms

    monkeypatch.setattr(step, "policy_value_loss", sometimes_nan)
    cfg = tiny_config(sample_dataset, tmp_path / "run", "train.steps=50", "train.max_nonfinite=3")
    with pytest.raises(TrainingError, match="3 consecutive steps"):
        train(cfg, progress=False)
    state = load_checkpoint(tmp_path / "run" / "checkpoint.pt") if (tmp_path / "run" / "checkpoint.pt").exists() else None
    assert state is None or all(torch.isfinite(t).all() for t in state["model"].values() if t.is_floating_point())


@pytest.mark.parametrize("extra", [
    ["amp=bf16"],
    ["swa.mode=ema", "swa.interval=2"],
    ["optim.name=radam", "optim.lr=0.001", "optim.decoupled_weight_decay=true"],
    ["optim.name=nlcg", "optim.lr=0.05"],
    ["model.arch=nf", "clip.mode=agc"],
    ["model.arch=nf-blog", "clip.mode=agc", "clip.agc_exclude=[policy_head,value_head]"],
    ["init.method=gradinit", "init.gradinit.iters=3", "init.gradinit.batch_size=32"],
    ["init.method=gradinit", "init.gradinit.iters=3", "init.gradinit.batch_size=32", "optim.name=adamw",
     "optim.lr=0.001"],
    ["schedule.name=cosine", "schedule.warmup_steps=2"],
])
def test_options_run(sample_dataset, tmp_path, extra):
    run_dir = train(tiny_config(sample_dataset, tmp_path / "run", "train.steps=6", *extra), progress=False)
    rows = read_metrics(run_dir)
    assert rows[-1]["step"] == 6
    assert all(np.isfinite(r["loss"]) for r in rows if r["split"] == "train")
    if "swa.mode=ema" in extra:
        assert any(r["split"] == "test_averaged" for r in rows)
    if "init.method=gradinit" in extra:
        assert (run_dir / "gradinit_scales.csv").read_text().startswith("parameter,scale")


def test_cli_reports_config_errors_in_one_line(sample_dataset, tmp_path):
    result = CliRunner().invoke(main, ["train", "--data", str(sample_dataset), "--run-dir", str(tmp_path / "r"),
                                       "--set", "optim.lrr=0.1"])
    assert result.exit_code == 1
    assert "optim.lrr" in result.output and "optim.lr" in result.output
    result = CliRunner().invoke(main, ["train", "--data", str(tmp_path / "missing"), "--run-dir", str(tmp_path / "r")])
    assert result.exit_code == 1 and "manifest.json" in result.output


def test_existing_run_is_not_overwritten(sample_dataset, tmp_path):
    cfg = tiny_config(sample_dataset, tmp_path / "run", "train.steps=2")
    train(cfg, progress=False)
    with pytest.raises(TrainingError, match="exists"):
        train(cfg, progress=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn_ranks(worker, world_size: int, *args) -> None:
    """``mp.spawn(worker, (world_size, port, *args))`` on a free port. The trainer meets through
    env:// (MASTER_PORT), so the port is picked before the ranks bind it; if another process took
    it meanwhile, try again on a new one."""
    import torch.multiprocessing as mp

    for attempt in range(3):
        try:
            mp.spawn(worker, args=(world_size, _free_port(), *args), nprocs=world_size, join=True)
            return
        except mp.ProcessRaisedException as e:
            if "EADDRINUSE" not in str(e) or attempt == 2:
                raise


def _ddp_worker(rank, world_size, port, dataset, run_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world_size),
                      RANK=str(rank), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from pathlib import Path

    train(tiny_config(dataset, Path(run_dir), "train.steps=4", "model.arch=nf", "train.batch_size=32"),
          progress=False)


@pytest.mark.slow
def test_ddp_two_ranks_match_one_process(sample_dataset, tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)            # as each rank: the same reduction order
    try:
        single = train(tiny_config(sample_dataset, tmp_path / "single", "train.steps=4", "model.arch=nf",
                                   "train.batch_size=32"), progress=False)
    finally:
        torch.set_num_threads(threads)
    spawn_ranks(_ddp_worker, 2, str(sample_dataset), str(tmp_path / "ddp"))
    a = load_checkpoint(single / "checkpoint.pt")["model"]
    b = load_checkpoint(tmp_path / "ddp" / "checkpoint.pt")["model"]
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.parametrize("optimizer, expected", [("sgd", "sgd"), ("adamw", "adam"), ("radam", "sgd")])
def test_gradinit_auto_variant_follows_the_optimizer(sample_dataset, tmp_path, monkeypatch, optimizer, expected):
    import shogitrain.optim.gradinit as gi
    from shogitrain.shards.reader import ShardDataset
    from shogitrain.train.init import run_gradinit

    seen = {}
    monkeypatch.setattr(gi, "gradinit", lambda *a, **k: seen.update(k) or {})
    cfg = tiny_config(sample_dataset, tmp_path / "run", "init.method=gradinit", f"optim.name={optimizer}")
    from shogitrain.models import build_model

    run_gradinit(build_model("bn", blocks=1, channels=8, fc_units=8), cfg, ShardDataset(sample_dataset), None,
                 torch.device("cpu"))
    assert seen["variant"] == expected


@pytest.mark.slow
def test_compiled_channels_last_run_equals_eager_on_cpu(sample_dataset, tmp_path):
    """train.compile (inductor on CPU) and train.channels_last give the eager run's losses."""
    eager = read_metrics(train(tiny_config(sample_dataset, tmp_path / "eager", "train.steps=4"), progress=False))
    compiled = read_metrics(train(tiny_config(sample_dataset, tmp_path / "compiled", "train.steps=4",
                                              "train.compile=true", "train.channels_last=true"), progress=False))
    train_rows = [(r["step"], r["loss"]) for r in eager if r["split"] == "train"]
    assert train_rows and train_rows[-1][0] == 4
    assert [s for s, _ in train_rows] == [r["step"] for r in compiled if r["split"] == "train"]
    for (_, want), got in zip(train_rows, (r["loss"] for r in compiled if r["split"] == "train")):
        assert got == pytest.approx(want, rel=1e-4)
