"""Tests for shogitrain.export: ONNX / TorchScript files with dlshogi's I/O match the PyTorch model."""

from __future__ import annotations

import builtins
import sys
import types

import numpy as np
import pytest
import torch
from torch import nn

from shogitrain.export import OPENINGS, ExportError, export_model
from shogitrain.models import build_model

TINY = {"blocks": 1, "channels": 16, "fc_units": 16}
ARCHS = ("bn", "nf", "nf-blog")

try:
    from shogitrain.features import FEATURE_VERSION
except ImportError:
    FEATURE_VERSION = 1


def planes(n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    x1 = (torch.rand(n, 62, 9, 9, generator=g) < 0.06).float()
    x2 = (torch.rand(n, 57, 1, 1, generator=g) < 0.05).float().expand(n, 57, 9, 9).contiguous()
    return x1, x2


def trained_tiny(arch: str, seed: int = 0) -> nn.Module:
    """A tiny net after two SGD steps, with random BN statistics and gains: nothing left at its init value."""
    torch.manual_seed(seed)
    model = build_model(arch, **TINY)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.train()
    for step in range(2):
        x1, x2 = planes(16, seed=10 + step)
        policy, value = model(x1, x2)
        labels = torch.randint(0, 2187, (16,))
        result = torch.randint(0, 2, (16, 1)).float()
        loss = (nn.functional.cross_entropy(policy, labels)
                + nn.functional.binary_cross_entropy_with_logits(value, result))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.copy_(torch.randn(module.running_mean.shape, generator=g) * 0.2)
                module.running_var.copy_(0.5 + torch.rand(module.running_var.shape, generator=g))
        for name, p in model.named_parameters():
            if name.rsplit(".", 1)[-1] in ("gain", "skip_gain"):
                p.copy_(0.5 + torch.rand(p.shape, generator=g))
    return model.eval()


def write_checkpoint(path, model: nn.Module, feature_version: int = FEATURE_VERSION):
    torch.save({"format": "shogitrain-checkpoint", "version": 1, "feature_version": feature_version,
                "model_config": model.config, "model": model.state_dict(), "step": 2, "epoch": 0}, path)
    return path


def reference(model: nn.Module, x1, x2):
    with torch.no_grad():
        policy, value_logit = model(x1, x2)
    return policy, torch.sigmoid(value_logit)


@pytest.fixture(scope="module", params=ARCHS)
def checkpoint(request, tmp_path_factory):
    model = trained_tiny(request.param)
    path = write_checkpoint(tmp_path_factory.mktemp(request.param) / "checkpoint.pt", model)
    return request.param, model, path


def test_onnx_matches_model_with_dlshogi_io(checkpoint, tmp_path):
    import onnxruntime as ort

    arch, model, path = checkpoint
    check = planes(64, seed=3)
    result = export_model(path, "onnx", tmp_path / "model.onnx", check_inputs=check)
    assert result["format"] == "onnx" and result["path"] == str(tmp_path / "model.onnx")
    assert result["max_abs_diff_policy"] < 1e-4 and result["max_abs_diff_value"] < 1e-4

    session = ort.InferenceSession(result["path"], providers=["CPUExecutionProvider"])
    inputs = {i.name: i for i in session.get_inputs()}
    outputs = {o.name: o for o in session.get_outputs()}
    assert list(inputs) == ["input1", "input2"] and list(outputs) == ["output_policy", "output_value"]
    assert inputs["input1"].shape == ["batch_size", 62, 9, 9] and inputs["input2"].shape == ["batch_size", 57, 9, 9]
    assert outputs["output_policy"].shape == ["batch_size", 2187] and outputs["output_value"].shape == ["batch_size", 1]
    assert all(i.type == "tensor(float)" for i in session.get_inputs())

    for n in (1, 5):
        x1, x2 = planes(n, seed=20 + n)
        policy, value = session.run(None, {"input1": x1.numpy(), "input2": x2.numpy()})
        want_policy, want_value = reference(model, x1, x2)
        assert policy.shape == (n, 2187) and value.shape == (n, 1)
        np.testing.assert_allclose(policy, want_policy.numpy(), rtol=0, atol=1e-4)
        np.testing.assert_allclose(value, want_value.numpy(), rtol=0, atol=1e-4)
        assert ((value >= 0) & (value <= 1)).all()
    # The trained weights are in the file: outputs are not those of a freshly built net.
    torch.manual_seed(99)
    fresh_policy, _ = reference(build_model(arch, **TINY).eval(), x1, x2)
    assert not np.allclose(policy, fresh_policy.numpy(), atol=1e-3)


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
def test_torchscript_matches_model(checkpoint, tmp_path):
    arch, model, path = checkpoint
    result = export_model(path, "torchscript", tmp_path / "model.pt", check_inputs=planes(64, seed=4))
    assert result["format"] == "torchscript"
    assert result["max_abs_diff_policy"] < 1e-4 and result["max_abs_diff_value"] < 1e-4

    loaded = torch.jit.load(result["path"])
    for n in (1, 5):
        x1, x2 = planes(n, seed=30 + n)
        with torch.no_grad():
            policy, value = loaded(x1, x2)
        want_policy, want_value = reference(model, x1, x2)
        assert policy.shape == (n, 2187) and value.shape == (n, 1)
        assert (policy - want_policy).abs().max() < 1e-4
        assert (value - want_value).abs().max() < 1e-4
        assert ((value >= 0) & (value <= 1)).all()


def test_default_check_positions(tmp_path):
    path = write_checkpoint(tmp_path / "checkpoint.pt", trained_tiny("bn"))
    result = export_model(path, "onnx", tmp_path / "out" / "model.onnx")
    assert result["positions"] == 64 and result["inputs"] == f"64 opening positions ({OPENINGS.name})"
    assert result["max_abs_diff_policy"] < 1e-4 and result["max_abs_diff_value"] < 1e-4


def test_check_positions_fall_back_to_random_planes_and_say_why(tmp_path, monkeypatch):
    import shogitrain.export as export

    missing = tmp_path / "no-openings.sfen"
    monkeypatch.setattr(export, "OPENINGS", missing)
    x1, x2, source = export.check_positions(8)
    assert x1.shape == (8, 62, 9, 9) and x2.shape == (8, 57, 9, 9)
    assert set(x1.unique().tolist()) == {0.0, 1.0}
    assert source == f"8 random 0/1 positions (no opening lines read from {missing})"


def test_default_check_positions_are_openings_through_features(tmp_path, monkeypatch):
    """With the feature encoder importable, the default check batch is real opening positions."""
    seen = []

    def features_from_sfens(sfens, device="cpu", input2_planes=57):
        seen.extend(sfens)
        return planes(len(sfens), seed=5)

    fake = types.ModuleType("shogitrain.features")
    fake.FEATURE_VERSION = FEATURE_VERSION
    fake.features_from_sfens = features_from_sfens
    monkeypatch.setitem(sys.modules, "shogitrain.features", fake)
    path = write_checkpoint(tmp_path / "checkpoint.pt", trained_tiny("nf"))
    result = export_model(path, "torchscript", tmp_path / "model.pt")
    assert result["positions"] == 64 and "opening positions" in result["inputs"]
    assert len(set(seen)) == 64
    assert {s.split()[1] for s in seen} == {"b", "w"}  # both sides to move


def test_unknown_feature_version_is_refused(tmp_path):
    path = write_checkpoint(tmp_path / "checkpoint.pt", trained_tiny("bn"), feature_version=FEATURE_VERSION + 1)
    with pytest.raises(ExportError, match="feature version"):
        export_model(path, "onnx", tmp_path / "model.onnx", check_inputs=planes(4, seed=0))
    assert not (tmp_path / "model.onnx").exists()


def test_not_a_checkpoint_and_unknown_format(tmp_path):
    bogus = tmp_path / "bogus.pt"
    torch.save({"weights": torch.zeros(2)}, bogus)
    with pytest.raises(ExportError, match="not a shogitrain checkpoint"):
        export_model(bogus, "onnx", tmp_path / "model.onnx")
    with pytest.raises(ExportError, match="unknown export format"):
        export_model(bogus, "tflite", tmp_path / "model.tflite")


def test_missing_onnxruntime_gives_install_hint(tmp_path, monkeypatch):
    path = write_checkpoint(tmp_path / "checkpoint.pt", trained_tiny("bn"))
    real_import = builtins.__import__

    def no_onnxruntime(name, *args, **kwargs):
        if name == "onnxruntime" or name.startswith("onnxruntime."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_onnxruntime)
    with pytest.raises(ExportError, match=r"pip install 'shogitrain\[export\]'"):
        export_model(path, "onnx", tmp_path / "model.onnx")


def test_parity_failure_is_an_error(tmp_path, monkeypatch):
    """A fused model that drifts from the trained one must not pass silently."""
    model = trained_tiny("bn")
    path = write_checkpoint(tmp_path / "checkpoint.pt", model)
    real_fused = type(model).fused

    def drifting_fused(self):
        fused = real_fused(self)
        with torch.no_grad():
            next(fused.parameters()).add_(1e-2)  # a stem weight
        return fused

    monkeypatch.setattr(type(model), "fused", drifting_fused)
    with pytest.raises(ExportError, match="differs from the PyTorch model"):
        export_model(path, "torchscript", tmp_path / "model.pt", check_inputs=planes(8, seed=1))
