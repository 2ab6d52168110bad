"""The 119-plane input (dlshogi's NYUGYOKU_FEATURES): bit-identical to cshogi in that mode, a model and
its export with a 119-plane input2, checkpoints that refuse the other feature set."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from conftest import SAMPLE
from shogitrain import features as F
from shogitrain.cli import main
from shogitrain.config import ConfigError, load_config
from shogitrain.models import build_model
from shogitrain.records import read_csa
from shogitrain.shards import format as fmt

cshogi = pytest.importorskip("cshogi")
from cshogi import dlshogi  # noqa: E402

# Positions at the edges of the planes: pieces in the enemy camp 9…12, points from 20 down to below 0
EDGES = [
    "k8/GG7/PPPPPPPPP/9/9/9/9/9/4K4 b r2b2g4s4n4l9p 1",
    "k8/G8/PPPPPPPPP/9/9/9/9/9/4K4 w 2r2b3g4s4n4l9p 1",
    "k8/G8/PPPPPPPPP/9/9/9/9/9/4K4 b 2r2b3g4s4n4l9p 1",
    "k8/9/PPPPPPPP1/9/9/9/9/9/4K4 b 2r2b4g4s4n4l9pP 1",
    "k8/9/PPPPPPPP1/9/9/9/9/9/4K4 w 2r2b4g4s4n4l9pP 1",
    "k8/9/PPPPPPPPP/9/9/9/9/9/4K4 w 2r2b4g4s4n4l9p 1",
    "k8/9/PPPPPPPPP/9/9/9/9/9/4K4 b r2b4g4s4n4l9p 1",
    "k8/GGG6/PPPPPPPPP/9/9/9/9/9/4K4 b rbg4s4n4l9p 1",
    "K8/9/9/9/9/9/9/9/8k b R2B4G3S4N4L18Pr1s 1",
    "4k4/9/9/9/9/9/9/9/4K4 w 2R2B4G4S4N4L18P 1",
    "4k4/9/9/9/9/9/9/9/4K4 b 2r2b4g4s4n4l18p 1",
    "8K/9/9/9/9/9/ppppppppp/9/k8 w 2R2B4G4S4N4L9P 1",
]


def _oracle(boards):
    """cshogi's features2 (per plane) for cshogi Boards, in nyugyoku mode."""
    f1 = np.zeros((62, 9, 9), np.float32)
    f2 = np.zeros((119, 9, 9), np.float32)
    out = []
    dlshogi.use_nyugyoku_features(True)
    try:
        for board in boards:
            f2[:] = 0          # cshogi clears only the first 57 planes itself
            dlshogi.make_input_features(board, f1, f2)
            assert (f2 == f2[:, :1, :1]).all()
            out.append(f2[:, 0, 0].copy())
    finally:
        dlshogi.use_nyugyoku_features(False)
    return np.stack(out)


def _positions():
    boards = [cshogi.Board(s) for s in EDGES]
    for path in sorted((SAMPLE / "selfplay").glob("*.csa"))[::10] + sorted((SAMPLE / "floodgate").glob("*.csa")):
        for game in read_csa(path):
            board = cshogi.Board(game.sfen)
            for usi in game.moves:
                boards.append(cshogi.Board(board.sfen()))
                board.push_usi(usi)
    rows = np.zeros(len(boards), fmt.POSITION_DTYPE)
    rows["board"] = [b.pieces for b in boards]
    rows["hand"] = [b.pieces_in_hand for b in boards]
    rows["turn"] = [b.turn for b in boards]
    return boards, rows


def test_119_planes_match_cshogi_in_nyugyoku_mode():
    boards, rows = _positions()
    want = _oracle(boards)
    x1, x2, _ = F.encode_rows(rows, input2_planes=119)
    assert x2.shape == (len(rows), 119, 9, 9)
    got = x2[:, :, 0, 0].numpy()
    bad = np.flatnonzero((got != want).any(1))
    assert len(bad) == 0, (boards[bad[0]].sfen(), np.flatnonzero(got[bad[0]]), np.flatnonzero(want[bad[0]]))
    assert (want[:, 57:].sum(0) > 0).all()               # every one of the 62 extra planes is exercised
    x1_57, x2_57, _ = F.encode_rows(rows)
    assert torch.equal(x1, x1_57) and torch.equal(x2[:, :57], x2_57)


def test_config_key_and_model_input():
    from conftest import REPO

    cfg = load_config(REPO / "configs/tiny-bn.yaml", ["model.input2_planes=119"])
    assert cfg.model.input2_planes == 119
    with pytest.raises(ConfigError, match="model.input2_planes"):
        load_config(REPO / "configs/tiny-bn.yaml", ["model.input2_planes=100"])
    model = build_model("nf", blocks=1, channels=8, fc_units=8, input2_planes=119)
    assert model.config["input2_planes"] == 119 and build_model(**model.config).config == model.config
    policy, value = model(torch.zeros(2, 62, 9, 9), torch.zeros(2, 119, 9, 9))
    assert policy.shape == (2, 2187) and value.shape == (2, 1)


def test_export_has_a_119_plane_input2(sample_dataset, tmp_path):
    pytest.importorskip("onnxruntime")
    import onnxruntime as ort

    from shogitrain.export import export_model
    from test_export import write_checkpoint

    torch.manual_seed(0)
    model = build_model("bn", blocks=1, channels=16, fc_units=16, input2_planes=119).eval()
    result = export_model(write_checkpoint(tmp_path / "c.pt", model), "onnx", tmp_path / "n.onnx")
    assert result["max_abs_diff_policy"] <= 1e-4
    session = ort.InferenceSession(str(tmp_path / "n.onnx"), providers=["CPUExecutionProvider"])
    shapes = {i.name: i.shape for i in session.get_inputs()}
    assert shapes["input1"][1:] == [62, 9, 9] and shapes["input2"][1:] == [119, 9, 9]
    scored = CliRunner().invoke(main, ["eval", "--onnx", str(tmp_path / "n.onnx"), "--data", str(sample_dataset),
                                       "--device", "cpu", "-q"])
    assert scored.exit_code == 0, scored.output     # eval feeds the ONNX net its 119 planes


def test_a_run_refuses_a_checkpoint_of_the_other_feature_set(sample_dataset, tmp_path):
    from test_train import tiny_config

    from shogitrain.train.loop import train

    run = tmp_path / "run"
    train(tiny_config(sample_dataset, run, "train.steps=2", "model.input2_planes=119"), progress=False)
    result = CliRunner().invoke(main, ["train", "--config", "configs/tiny-bn.yaml", "--data", str(sample_dataset),
                                       "--run-dir", str(run), "--resume", "-q", "--set", "train.steps=4",
                                       "--set", "model.blocks=1", "--set", "model.channels=16",
                                       "--set", "model.fc_units=16", "--set", "train.device=cpu"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "reads 119 input2 planes" in result.output and "model.input2_planes=119" in result.output


def test_runs_saved_before_the_key_existed_resume_with_the_57_planes():
    from shogitrain.train.resume import config_changes

    old = {"model": {"arch": "bn", "blocks": 1}}
    assert config_changes(old, {"model": {"arch": "bn", "blocks": 1, "input2_planes": 57}}) == {}
    assert config_changes(old, {"model": {"arch": "bn", "blocks": 1, "input2_planes": 119}}) == \
        {"model.input2_planes": (57, 119)}
