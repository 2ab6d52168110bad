"""CUDA checks: skipped on machines without a GPU, run them on one with `pytest tests/test_cuda.py`."""

import numpy as np
import pytest
import torch

from shogitrain.models import build_model
from shogitrain.train.runlog import read_metrics

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


@pytest.mark.parametrize("arch", ["bn", "nf", "nf-blog"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_forward_under_autocast_matches_fp32(arch, dtype):
    torch.manual_seed(0)
    model = build_model(arch, blocks=2, channels=32, fc_units=32).cuda().eval()
    x1 = (torch.rand(16, 62, 9, 9, device="cuda") < 0.1).float()
    x2 = (torch.rand(16, 57, 9, 9, device="cuda") < 0.1).float()
    with torch.no_grad():
        ref_policy, ref_value = model(x1, x2)
        with torch.autocast("cuda", dtype=dtype):
            policy, value = model(x1, x2)
        cl = model.to(memory_format=torch.channels_last)
        cl_policy, _ = cl(x1.to(memory_format=torch.channels_last), x2.to(memory_format=torch.channels_last))
    assert policy.shape == (16, 2187) and value.shape == (16, 1)
    torch.testing.assert_close(policy.float(), ref_policy, atol=0.1, rtol=0.05)
    torch.testing.assert_close(cl_policy, ref_policy, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("amp", ["fp16", "bf16"])
def test_tiny_training_run_on_cuda(sample_dataset, tmp_path, amp):
    from test_train import tiny_config

    from shogitrain.train.loop import train

    cfg = tiny_config(sample_dataset, tmp_path / "run", "train.device=cuda", f"amp={amp}", "train.steps=20",
                      "train.channels_last=true", "model.arch=nf", "clip.mode=agc", "train.eval_interval=10")
    run_dir = train(cfg, progress=False)
    rows = read_metrics(run_dir)
    assert rows[-1]["step"] == 20
    assert all(np.isfinite(r["loss"]) for r in rows if r["split"] == "train")


def test_compiled_training_run_on_cuda(sample_dataset, tmp_path):
    from test_train import tiny_config

    from shogitrain.train.loop import train

    cfg = tiny_config(sample_dataset, tmp_path / "run", "train.device=cuda", "amp=bf16", "train.steps=6",
                      "train.compile=true", "train.channels_last=true")
    rows = read_metrics(train(cfg, progress=False))
    assert rows[-1]["step"] == 6
    assert all(np.isfinite(r["loss"]) for r in rows if r["split"] == "train")


def test_chunked_features_on_cuda_match_cpu():
    """CUDA encodes a batch as one chunk; CPU in CHUNK-sized chunks: the same bits."""
    from test_features import _sample_rows

    from shogitrain.features import encode_rows

    rows = _sample_rows()
    for dtype in (torch.float32, torch.bfloat16, torch.uint8):
        x1, x2, lab = encode_rows(rows, dtype=dtype)
        y1, y2, lab2 = encode_rows(rows, device="cuda", dtype=dtype)
        assert torch.equal(y1.cpu(), x1) and torch.equal(y2.cpu(), x2) and torch.equal(lab2.cpu(), lab)


def test_eval_on_cuda_matches_cpu(sample_dataset, tmp_path):
    from test_train import tiny_config

    from shogitrain.evaluate import evaluate_checkpoint
    from shogitrain.train.loop import train

    run_dir = train(tiny_config(sample_dataset, tmp_path / "run", "train.steps=4"), progress=False)
    cpu = evaluate_checkpoint(run_dir / "checkpoint.pt", sample_dataset, device="cpu", progress=False)
    gpu = evaluate_checkpoint(run_dir / "checkpoint.pt", sample_dataset, device="cuda", progress=False)
    for name, value in cpu["metrics"].items():
        assert gpu["metrics"][name] == pytest.approx(value, rel=1e-3, abs=1e-4), name


def test_ddp_nccl_two_gpus(sample_dataset, tmp_path):
    if torch.cuda.device_count() < 2:
        pytest.skip("needs 2 GPUs")
    from test_train import spawn_ranks

    spawn_ranks(_nccl_worker, 2, str(sample_dataset), str(tmp_path / "ddp"))
    assert read_metrics(tmp_path / "ddp")[-1]["step"] == 4


def _nccl_worker(rank, world_size, port, dataset, run_dir):
    import os
    from pathlib import Path

    from test_train import tiny_config

    from shogitrain.train.loop import train

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world_size),
                      RANK=str(rank), LOCAL_RANK=str(rank))
    train(tiny_config(dataset, Path(run_dir), "train.steps=4", "train.device=cuda", "train.sync_bn=true"),
          progress=False)
