"""The design card's commands as typed, on a CPU: `train --arch A --data D` with no config, `eval` of
record files, `eval --onnx` of any dlshogi-format model."""

import json
import warnings

import pytest
import torch
import yaml
from click.testing import CliRunner

from conftest import SAMPLE
from shogitrain.cli import main
from shogitrain.train.runlog import read_metrics

TINY = ["--set", "model.blocks=2", "--set", "model.channels=16", "--set", "model.fc_units=16",
        "--set", "train.steps=12", "--set", "train.eval_interval=6", "--set", "train.eval_sample=256",
        "--set", "train.log_interval=2", "--quiet"]


def _run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.mark.parametrize("arch, clip", [("nf", "agc"), ("nf-blog", "agc"), ("bn", "norm")])
def test_train_with_no_config_uses_the_arch_preset_and_amp_auto(sample_dataset, tmp_path, arch, clip):
    run_dir = tmp_path / arch
    result = _run("train", "--arch", arch, "--data", sample_dataset, "--run-dir", run_dir, *TINY)
    assert result.exit_code == 0, result.output
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert cfg["amp"] == "off" and cfg["clip"]["mode"] == clip  # lr 0.1, batch 1024: the 2021 settings
    assert cfg["defaults_from"]["amp"] == "auto: off on cpu" and f"the {arch} preset" in cfg["defaults_from"]["clip"]
    rows = read_metrics(run_dir)
    trains = [r for r in rows if r["split"] == "train"]
    assert trains[-1]["step"] == 12 and trains[-1]["nonfinite_steps"] == 0
    assert all(r["loss"] is not None for r in rows)


def test_a_device_error_comes_before_the_run_directory(sample_dataset, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: fp16 is available")
    run_dir = tmp_path / "run"
    result = _run("train", "--arch", "nf", "--data", sample_dataset, "--run-dir", run_dir, "--amp", "fp16", *TINY)
    assert result.exit_code == 1 and "amp=fp16 needs CUDA" in result.output
    assert not run_dir.exists()


@pytest.fixture(scope="module")
def tiny_checkpoint(sample_dataset, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("card") / "bn"
    assert _run("train", "--arch", "bn", "--data", sample_dataset, "--run-dir", run_dir, *TINY).exit_code == 0
    return run_dir / "checkpoint.pt"


def test_eval_of_record_files_prepares_them_on_the_fly(tiny_checkpoint, sample_dataset, tmp_path):
    out = tmp_path / "records.json"
    result = _run("eval", "--checkpoint", tiny_checkpoint, "--data", SAMPLE / "floodgate", "-q", "--json", out)
    assert result.exit_code == 0, result.output
    records = json.loads(out.read_text())
    assert records["split"] == "test" and records["source_files"] == 12
    assert records["data"] == [str(SAMPLE / "floodgate")]
    # the same positions as the prepared dataset's test split (the floodgate files, the same filters)
    prepared = _run("eval", "--checkpoint", tiny_checkpoint, "--data", sample_dataset, "-q", "--json",
                    tmp_path / "prepared.json")
    assert prepared.exit_code == 0
    same = json.loads((tmp_path / "prepared.json").read_text())
    assert records["positions"] == same["positions"]
    assert records["metrics"]["loss"] == pytest.approx(same["metrics"]["loss"], abs=1e-9)
    # the usual filters can be changed: every game, draws and short ones included
    loose = _run("eval", "--checkpoint", tiny_checkpoint, "--data", SAMPLE / "floodgate", "-q", "--draws",
                 "--min-moves", "0", "--endings", "%TORYO,%KACHI,%TIME_UP,%SENNICHITE", "--no-require-eval")
    assert loose.exit_code == 0 and "positions from 12 source files" in loose.output


def test_eval_of_an_onnx_model_equals_the_checkpoint(tiny_checkpoint, sample_dataset, tmp_path):
    onnx_path = tmp_path / "net.onnx"
    assert _run("export", "--checkpoint", tiny_checkpoint, "--format", "onnx", "--out", onnx_path).exit_code == 0
    outputs = {}
    for flag, path in (("--checkpoint", tiny_checkpoint), ("--onnx", onnx_path)):
        result = _run("eval", flag, path, "--data", sample_dataset, "-q", "--json", tmp_path / "e.json")
        assert result.exit_code == 0, result.output
        outputs[flag] = json.loads((tmp_path / "e.json").read_text())["metrics"]
    for name, value in outputs["--checkpoint"].items():
        assert outputs["--onnx"][name] == pytest.approx(value, abs=1e-4), name


def _plain_onnx(path, names=("input1", "input2"), outputs=("output_policy", "output_value"), batch=None):
    """A small dlshogi-shaped net exported with its own names and a fixed or dynamic batch axis."""
    from shogitrain.export import DlshogiNet
    from shogitrain.models import build_model

    net = DlshogiNet(build_model("bn", blocks=1, channels=8, fc_units=8).eval())
    n = batch or 2
    example = (torch.zeros(n, 62, 9, 9), torch.zeros(n, 57, 9, 9))
    axes = None if batch else {name: {0: "batch"} for name in (*names, *outputs)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, example, str(path), dynamo=False, input_names=list(names), output_names=list(outputs),
                          dynamic_axes=axes)
    return path


def test_eval_onnx_with_a_fixed_batch_and_with_foreign_names(sample_dataset, tmp_path):
    fixed = _plain_onnx(tmp_path / "fixed.onnx", batch=7)  # 7 divides no split: the last chunk is padded
    result = _run("eval", "--onnx", fixed, "--data", sample_dataset, "-q", "--batch-size", "100")
    assert result.exit_code == 0, result.output
    foreign = _plain_onnx(tmp_path / "foreign.onnx", names=("x", "y"))
    result = _run("eval", "--onnx", foreign, "--data", sample_dataset, "-q")
    assert result.exit_code == 1 and "not a dlshogi-format network: expected inputs input1" in result.output
    assert "'x'" in result.output and result.output.count("\n") == 1
    result = _run("eval", "--data", sample_dataset)
    assert result.exit_code == 2 and "give one model" in result.output
