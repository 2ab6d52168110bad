"""`compare` over seeds: grouping by config, intervals, paired differences against a baseline (hand-computed)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from shogitrain.config import Config, config_to_dict
from shogitrain.report import ReportError, compare_runs

# Final test losses per (variant, seed), chosen so the statistics are easy to do by hand.
FINAL_LOSS = {("bn", 0): 3.30, ("bn", 1): 3.40, ("bn", 2): 3.20,
              ("nf", 0): 3.80, ("nf", 1): 3.80, ("nf", 2): 3.90,     # nf − bn = 0.5, 0.4, 0.7
              ("nf-lr", 0): 3.31, ("nf-lr", 1): 3.42, ("nf-lr", 2): 3.17}  # − bn = 0.01, 0.02, −0.03


def write_run(run_dir: Path, seed: int, final_loss: float, *overrides, manifest="abc123", curve_shift=0.0):
    """A run directory as `train` leaves it: config.yaml (resolved), run.json and metrics.jsonl."""
    cfg = config_to_dict(Config())
    cfg["train"]["seed"] = seed
    cfg["run"] = {"dir": str(run_dir.parent), "name": run_dir.name}
    cfg["data"]["path"] = f"/somewhere/{run_dir.name}/data"  # where the data lives does not split a group
    for key, value in overrides:
        node = cfg
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg))
    (run_dir / "run.json").write_text(json.dumps({
        "name": run_dir.name, "seed": seed, "data_manifest_sha256": manifest, "finished_step": 20,
        "steps": 20, "wall_clock_s": 100.0 + seed, "git": {"commit": "feedc0ffee", "dirty": False}}))
    rows = []
    for step in (10, 20):
        rows.append({"step": step, "epoch": 0, "split": "train", "time_s": step * 5.0,
                     "loss": 5.0 - step / 10 + seed * 0.1 + curve_shift, "positions_per_s": 900.0 + seed})
        rows.append({"step": step, "epoch": 0, "split": "test_sample", "time_s": step * 5.0,
                     "loss": final_loss + 0.1 * (20 - step), "policy_loss": 2.0 + seed * 0.01,
                     "result_loss": 0.6, "eval_loss": 0.6, "policy_accuracy": 0.3, "value_accuracy": 0.6})
    rows.append({"step": 20, "epoch": 0, "split": "test", "time_s": 100.0, "loss": final_loss,
                 "policy_loss": 2.0 + seed * 0.01, "result_loss": 0.6, "eval_loss": 0.6,
                 "policy_accuracy": 0.3, "value_accuracy": 0.6})
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture
def experiment(tmp_path):
    """Three variants × three seeds, laid out as `shogitrain sweep` writes them."""
    variants = {"bn": [], "nf": [("model.arch", "nf"), ("clip.mode", "agc")],
                "nf-lr": [("model.arch", "nf"), ("clip.mode", "agc"), ("optim.lr", 0.05)]}
    runs = []
    for name, overrides in variants.items():
        for seed in range(3):
            run = tmp_path / "exp" / name / f"seed-{seed}"
            write_run(run, seed, FINAL_LOSS[(name, seed)], *overrides,
                      ("train.log_interval", 10 + seed))  # logging cadence does not split a group either
            runs.append({"variant": name, "seed": seed, "dir": f"{name}/seed-{seed}"})
    (tmp_path / "exp" / "experiment.json").write_text(json.dumps({"runs": runs}))
    return tmp_path / "exp"


def test_seeds_grouped_variants_kept_apart(experiment, tmp_path):
    out = tmp_path / "cmp"
    compare_runs([experiment], out)
    summary = json.loads((out / "summary.json").read_text())
    groups = summary["groups"]
    assert [g["name"] for g in groups] == ["bn", "nf", "nf-lr"]
    assert [g["seeds"] for g in groups] == [[0, 1, 2]] * 3
    assert summary["baseline"] == "bn"

    # bn's final loss over seeds 3.30, 3.40, 3.20: mean 3.30, s = 0.1, half-width 4.302653·0.1/√3
    loss = groups[0]["final"]["loss"]
    assert loss["kind"] == "t" and loss["mean"] == pytest.approx(3.30)
    assert loss["half_width"] == pytest.approx(4.302653 * 0.1 / math.sqrt(3), abs=1e-6)
    assert loss["values"] == [3.30, 3.40, 3.20]

    by = {(d["group"], d["metric"]): d for d in summary["differences"]}
    # nf − bn paired by seed: 0.5, 0.4, 0.7 → mean 0.5333, s = 0.152753, t = 0.5333/(s/√3) = 6.0474 on 2 df:
    # p = 1 − t/sqrt(2 + t²) = 0.026271 → resolved (higher)
    d = by[("nf", "loss")]
    s = math.sqrt(((0.5 - 1.6 / 3) ** 2 + (0.4 - 1.6 / 3) ** 2 + (0.7 - 1.6 / 3) ** 2) / 2)
    t = (1.6 / 3) / (s / math.sqrt(3))
    assert (d["seeds"], d["n"], d["df"]) == ([0, 1, 2], 3, 2)
    assert d["mean"] == pytest.approx(1.6 / 3) and d["t"] == pytest.approx(t)
    assert d["p"] == pytest.approx(1 - t / math.sqrt(2 + t * t), abs=1e-9)
    assert d["p"] == pytest.approx(0.026271, abs=1e-6) and d["resolved"]
    # nf-lr − bn: 0.01, 0.02, −0.03 → mean 0, the interval straddles 0 → not resolved
    d = by[("nf-lr", "loss")]
    assert d["mean"] == pytest.approx(0.0, abs=1e-12) and d["low"] < 0 < d["high"] and not d["resolved"]

    report = (out / "report.md").read_text()
    assert "| bn | test | 20 | 3.3000 ± 0.2484 |" in report
    assert "### nf − bn" in report and "### nf-lr − bn" in report
    loss_row = next(line for line in report.splitlines() if line.startswith("| loss |") and "+0.5333" in line)
    assert "resolved: higher" in loss_row and "0.0263" in loss_row
    loss_row = next(line for line in report.splitlines() if line.startswith("| loss |") and "+0.0000" in line)
    assert "**not resolved**" in loss_row
    # the keys that set the groups apart (data.path, run.*, train.log_interval and the seed do not)
    assert "Config keys that set the groups apart: `clip.mode`, `model.arch`, `optim.lr`." in report


def test_band_points_are_mean_and_t_interval(experiment, tmp_path):
    out = tmp_path / "cmp"
    compare_runs([experiment], out)
    figures = json.loads((out / "summary.json").read_text())["figures"]
    band = next(b for b in figures["training_loss"]["bands"] if b["group"] == "bn")
    # train loss at step 10 is 4.0, 4.1, 4.2 over the seeds: mean 4.1, s = 0.1
    step, mean, low, high = band["points"][0]
    assert (step, band["band"], band["n"]) == (10, "t", 3)
    assert mean == pytest.approx(4.1)
    assert (high - mean) == pytest.approx(4.302653 * 0.1 / math.sqrt(3), abs=1e-6) and low == pytest.approx(2 * mean - high)
    # every seed's own series is kept as well
    assert len([s for s in figures["training_loss"]["series"] if s["group"] == "bn"]) == 3
    assert "test_sample" in {b["split"] for b in figures["test_policy_loss"]["bands"]}
    assert "skip_gains" not in figures  # no run logged skip gains


def test_baseline_option_and_errors(experiment, tmp_path):
    compare_runs([experiment], tmp_path / "cmp", baseline="nf")
    summary = json.loads((tmp_path / "cmp" / "summary.json").read_text())
    assert summary["baseline"] == "nf"
    d = next(d for d in summary["differences"] if d["group"] == "bn" and d["metric"] == "loss")
    assert d["mean"] == pytest.approx(-1.6 / 3)
    with pytest.raises(ReportError, match="unknown baseline 'gn'; groups: bn, nf, nf-lr"):
        compare_runs([experiment], tmp_path / "c2", baseline="gn")
    with pytest.raises(ReportError, match="2 names given for 3 groups"):
        compare_runs([experiment], tmp_path / "c3", names=["a", "b"])
    compare_runs([experiment], tmp_path / "c4", names=["BN", "NF", "NF lr 0.05"])
    assert [g["name"] for g in json.loads((tmp_path / "c4" / "summary.json").read_text())["groups"]] == \
        ["BN", "NF", "NF lr 0.05"]


def test_other_data_repeated_seed_and_two_seeds(tmp_path):
    write_run(tmp_path / "a0", 0, 3.0)
    write_run(tmp_path / "a1", 1, 3.2)
    write_run(tmp_path / "a0-again", 0, 3.1)              # the same seed again: not pooled
    write_run(tmp_path / "other-data", 2, 3.3, manifest="fff")  # another dataset: its own group
    out = tmp_path / "cmp"
    compare_runs([tmp_path / d for d in ("a0", "a1", "a0-again", "other-data")], out)
    groups = json.loads((out / "summary.json").read_text())["groups"]
    assert [(g["name"], g["seeds"]) for g in groups] == [("a", [0, 1]), ("a0-again", [0]), ("other-data", [2])]
    loss = groups[0]["final"]["loss"]  # two seeds: the min–max range, no t-interval
    assert (loss["kind"], loss["low"], loss["high"]) == ("min-max", 3.0, 3.2)
    report = (out / "report.md").read_text()
    assert "3.1000 [3.0000, 3.2000]" in report
    assert "not tested (one pair of runs" in report  # a0-again against a: seed 0 only
    assert "other-data: no seed in common with the baseline" in report
    diffs = json.loads((out / "summary.json").read_text())["differences"]
    again = next(d for d in diffs if d["group"] == "a0-again" and d["metric"] == "loss")
    assert (again["seeds"], again["n"], again["p"]) == ([0], 1, None) and again["mean"] == pytest.approx(0.1)
    assert not any(d["group"] == "other-data" for d in diffs)  # no seed in common with the baseline
