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
