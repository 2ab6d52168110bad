"""`shogitrain eval`, `compare` and `export` from the command line on a tiny trained run."""

import json

import pytest
import torch
from click.testing import CliRunner

from shogitrain.cli import main
from shogitrain.evaluate import evaluate_checkpoint
from shogitrain.train.metrics import METRIC_NAMES
from shogitrain.train.checkpoint import save_checkpoint
from shogitrain.train.runlog import read_metrics


@pytest.fixture(scope="module")
def tiny_run(sample_dataset, tmp_path_factory):
    from test_train import tiny_config

    from shogitrain.train.loop import train

    run_dir = tmp_path_factory.mktemp("runs") / "tiny"
    return train(tiny_config(sample_dataset, run_dir, "train.steps=8", "train.eval_full_each_epoch=true"),
                 progress=False)


def test_eval_prints_table_and_writes_json(tiny_run, sample_dataset, tmp_path):
    out = tmp_path / "eval.json"
    result = CliRunner().invoke(main, ["eval", "--checkpoint", str(tiny_run / "checkpoint.pt"), "--data",
                                       str(sample_dataset), "--json", str(out), "--quiet", "--batch-size", "100"])
    assert result.exit_code == 0, result.output
    for name in METRIC_NAMES:
        assert name in result.output
    data = json.loads(out.read_text())
    assert set(METRIC_NAMES) <= set(data["metrics"])
    assert {"ply_1-30", "ply_31-60", "ply_61-100", "ply_101+"} <= set(data["stratified"])
    assert any(k.startswith("rating_3500") for k in data["stratified"])
    assert sum(data["stratified"][k]["positions"] for k in data["stratified"] if k.startswith("ply_")) == data["positions"]
    # the same numbers as the training loop's full test pass at the end of the run
    final_test = [r for r in read_metrics(tiny_run) if r["split"] == "test"][-1]
    for name in ("loss", "policy_accuracy", "value_accuracy"):
        assert data["metrics"][name] == pytest.approx(final_test[name], rel=1e-6)
    # batch size does not change the answer
    again = evaluate_checkpoint(tiny_run / "checkpoint.pt", sample_dataset, batch_size=37, progress=False)
    assert again["metrics"]["loss"] == pytest.approx(data["metrics"]["loss"], rel=1e-9)


def test_eval_refuses_foreign_checkpoints(tiny_run, sample_dataset, tmp_path):
    state = torch.load(tiny_run / "checkpoint.pt", weights_only=True)
    state["feature_version"] = 99
    other = tmp_path / "other.pt"
    save_checkpoint(other, {k: v for k, v in state.items() if k not in ("format", "version")})
    result = CliRunner().invoke(main, ["eval", "--checkpoint", str(other), "--data", str(sample_dataset)])
    assert result.exit_code == 1 and "feature version 99" in result.output
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    result = CliRunner().invoke(main, ["eval", "--checkpoint", str(junk), "--data", str(sample_dataset)])
    assert result.exit_code == 1 and "junk.pt" in result.output


def test_compare_and_export_commands(tiny_run, tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["compare", str(tiny_run), str(tiny_run), "--out", str(tmp_path / "cmp"),
                                  "--name", "a", "--name", "b"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "cmp" / "report.md").exists() and (tmp_path / "cmp" / "training_loss.png").exists()
    result = runner.invoke(main, ["compare", str(tmp_path / "nothing"), "--out", str(tmp_path / "c2")])
    assert result.exit_code == 1
    result = runner.invoke(main, ["export", "--checkpoint", str(tiny_run / "checkpoint.pt"), "--format", "onnx",
                                  "--out", str(tmp_path / "m.onnx")])
    assert result.exit_code == 0, result.output
    assert "max |Δ|" in result.output and (tmp_path / "m.onnx").stat().st_size > 0
    assert "on 64 opening positions (floodgate-2016-openings-24ply.sfen)" in result.output


@pytest.fixture(scope="module")
def averaged_run(sample_dataset, tmp_path_factory):
    from test_train import tiny_config

    from shogitrain.train.loop import train

    run_dir = tmp_path_factory.mktemp("runs") / "ema"
    return train(tiny_config(sample_dataset, run_dir, "train.steps=8", "swa.mode=ema", "swa.interval=2"),
                 progress=False)


def test_eval_and_export_of_the_averaged_weights(averaged_run, sample_dataset, tmp_path):
    from shogitrain.export import export_model
    from shogitrain.features import FEATURE_VERSION
    from shogitrain.train.checkpoint import load_checkpoint, model_from_checkpoint

    checkpoint = averaged_run / "checkpoint.pt"
    state = load_checkpoint(checkpoint)
    assert state["averaged_final"] is True
    averaged = evaluate_checkpoint(checkpoint, sample_dataset, progress=False, weights="averaged")
    raw = evaluate_checkpoint(checkpoint, sample_dataset, progress=False)
    assert averaged["weights"] == "averaged" and raw["weights"] == "raw"
    # the numbers the training loop logged for the average (BN statistics recomputed) at the end
    logged = [r for r in read_metrics(averaged_run) if r["split"] == "test_averaged"][-1]
    for name in ("loss", "policy_accuracy", "value_accuracy"):
        assert averaged["metrics"][name] == pytest.approx(logged[name], rel=1e-6)
    assert averaged["metrics"]["loss"] != pytest.approx(raw["metrics"]["loss"], rel=1e-6)

    model = model_from_checkpoint(state, FEATURE_VERSION, "averaged").eval()
    x1 = (torch.rand(4, 62, 9, 9) < 0.1).float()
    x2 = (torch.rand(4, 57, 1, 1) < 0.1).float().expand(4, 57, 9, 9).contiguous()
    result = export_model(checkpoint, "torchscript", tmp_path / "avg.pt", check_inputs=(x1, x2), weights="averaged")
    assert result["weights"] == "averaged"
    exported = torch.jit.load(str(tmp_path / "avg.pt"))
    with torch.no_grad():
        policy, _ = model(x1, x2)
        assert (exported(x1, x2)[0] - policy).abs().max() < 1e-4
    cli = CliRunner().invoke(main, ["export", "--checkpoint", str(checkpoint), "--format", "torchscript",
                                    "--out", str(tmp_path / "avg2.pt"), "--weights", "averaged"])
    assert cli.exit_code == 0 and "averaged weights" in cli.output, cli.output


def test_averaged_weights_refused_when_missing_or_not_final(tiny_run, averaged_run, sample_dataset, tmp_path):
    result = CliRunner().invoke(main, ["eval", "--checkpoint", str(tiny_run / "checkpoint.pt"), "--data",
                                       str(sample_dataset), "--weights", "averaged", "--quiet"])
    assert result.exit_code == 1 and "no averaged weights" in result.output
    # a checkpoint saved before the end of the run: the average's BN statistics are not recomputed yet
    state = torch.load(averaged_run / "checkpoint.pt", weights_only=True)
    state["averaged_final"] = False
    mid_run = tmp_path / "mid.pt"
    save_checkpoint(mid_run, {k: v for k, v in state.items() if k not in ("format", "version")})
    for command in (["eval", "--data", str(sample_dataset), "--quiet"],
                    ["export", "--format", "torchscript", "--out", str(tmp_path / "m.pt")]):
        result = CliRunner().invoke(main, [*command, "--checkpoint", str(mid_run), "--weights", "averaged"])
        assert result.exit_code == 1 and "not final" in result.output and "mid.pt" in result.output
