"""Tests for shogitrain.models: parameter counts, the Scaled WS conv, NF signal propagation,
the published-code reproduction, fusion, parameter groups and the build_model contract."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from conftest import OPENINGS
from shogitrain.models import (ACTIVATION_GAMMAS, NF_STEM_SCALE, GammaAct, ScaledStdConv2d,
                               build_model, parameter_groups)

SMALL = {"blocks": 3, "channels": 32, "fc_units": 16}


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def planes(n: int = 4, seed: int = 0, dtype=torch.float32):
    """Sparse binary input planes, roughly as sparse as real dlshogi features."""
    g = torch.Generator().manual_seed(seed)
    x1 = (torch.rand(n, 62, 9, 9, generator=g) < 0.06).to(dtype)
    x2 = (torch.rand(n, 57, 1, 1, generator=g) < 0.05).to(dtype).expand(n, 57, 9, 9).contiguous()
    return x1, x2


def randomize_(model: nn.Module, seed: int = 1) -> nn.Module:
    """Move every gain, skip gain, bias and BN statistic away from its initial value."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if leaf in ("gain", "skip_gain") or (leaf == "weight" and p.dim() == 1):
                p.copy_(0.5 + torch.rand(p.shape, generator=g, dtype=p.dtype))
            elif leaf == "bias":
                p.copy_(0.1 * torch.randn(p.shape, generator=g, dtype=p.dtype))
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(0.2 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
    return model


def nf_param_count(blocks, channels, fc_units, skip_scalar=True):
    """Hand count for 'nf' (and 'nf-blog'): WS convs carry weight + gain (O) + bias (O)."""
    k = channels
    stem = (62 * 9 + 62 + 57) * k + 3 * (k + k)
    block = 2 * (9 * k * k + 2 * k) + (1 if skip_scalar else 0)
    policy = 27 * k + 2187
    value = (27 * k + 27 + 27) + (2187 * fc_units + fc_units) + (fc_units + 1)
    return stem + blocks * block + policy + value


# --- parameter counts and shapes ------------------------------------------------------------

def test_parameter_counts_of_the_2021_networks():
    assert n_params(build_model("bn")) == 7_346_562
    assert n_params(build_model("nf-blog")) == 7_347_340
    assert nf_param_count(10, 192, 256) == 7_347_340
    assert n_params(build_model("nf")) == nf_param_count(10, 192, 256)
    assert n_params(build_model("nf", skip_init="last_gain")) == 7_347_330
    assert n_params(build_model("nf-blog", blog_skip_gain=False)) == 7_347_330


@pytest.mark.parametrize("arch", ["nf", "nf-blog"])
def test_parameter_count_formula_small(arch):
    assert n_params(build_model(arch, **SMALL)) == nf_param_count(**SMALL)


@pytest.mark.parametrize("arch", ["bn", "nf", "nf-blog"])
def test_output_shapes(arch):
    model = build_model(arch)
    x1, x2 = planes(3)
    policy, value = model(x1, x2)
    assert policy.shape == (3, 2187) and value.shape == (3, 1)
    assert policy.dtype == value.dtype == torch.float32
    assert torch.isfinite(policy).all() and torch.isfinite(value).all()
    assert len(model.blocks) == 10


@pytest.mark.parametrize("arch", ["bn", "nf", "nf-blog"])
def test_policy_is_flattened_channel_major_plus_bias(arch):
    model = randomize_(build_model(arch, **SMALL)).eval()
    x1, x2 = planes(2)
    with torch.no_grad():
        h = model.final_act(model.blocks(model.stem(x1, x2)))
        maps = model.policy_head.conv(h)  # [N, 27, 9, 9]
        policy, _ = model(x1, x2)
    for direction, sq in [(0, 0), (0, 59), (12, 10), (26, 80)]:
        expected = maps[:, direction, sq // 9, sq % 9] + model.policy_head.bias[81 * direction + sq]
        torch.testing.assert_close(policy[:, 81 * direction + sq], expected)


# --- Scaled WS conv ---------------------------------------------------------------------------

@pytest.mark.parametrize("groups", [1, 4])
def test_ws_conv_nf_kernel_is_standardized(groups):
    torch.manual_seed(0)
    conv = ScaledStdConv2d(32, 48, 3, padding=1, groups=groups, gamma=1.7, eps=1e-4)
    with torch.no_grad():
        conv.weight.mul_(3.0).add_(0.7)  # any scale and offset
        conv.gain.copy_(0.5 + torch.rand_like(conv.gain))
    w = conv.standardized_weight().double()
    assert w.mean(dim=(1, 2, 3)).abs().max() < 1e-6
    expected = (conv.gain.double().flatten() * 1.7) ** 2
    torch.testing.assert_close(w.pow(2).sum(dim=(1, 2, 3)), expected, rtol=1e-5, atol=0)


def test_ws_conv_blog_kernel_matches_published_formula():
    torch.manual_seed(0)
    eps = 1e-4
    conv = ScaledStdConv2d(16, 8, 3, padding=1, gamma=1.7881293296813965, eps=eps, std_form="blog")
    with torch.no_grad():
        conv.gain.copy_(0.5 + torch.rand_like(conv.gain))
    w = conv.weight.detach().double()
    mean = w.mean(dim=(1, 2, 3), keepdim=True)
    std = w.std(dim=(1, 2, 3), keepdim=True, unbiased=False)
    scale = 1.7881293296813965 * (16 * 9) ** -0.5
    expected = conv.gain.double() * scale * (w - mean) / (std + eps)
    got = conv.standardized_weight().double()
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7)
    assert got.mean(dim=(1, 2, 3)).abs().max() < 1e-6
    # Σŵ² = (gain·γ)² up to the eps-size shrink σ²/(σ+eps)²
    ratio = got.pow(2).sum(dim=(1, 2, 3)) / (conv.gain.double().flatten() * 1.7881293296813965) ** 2
    shrink = (std.flatten() / (std.flatten() + eps)) ** 2
    torch.testing.assert_close(ratio, shrink, rtol=1e-5, atol=0)
    assert (1 - ratio).max() < 3 * eps / std.min()


# The published (std + eps) form is invariant only up to eps/std (0.5 % at c = 0.25 with eps 1e-4),
# so it is checked with a negligible eps; the DM form with its clamp is invariant as long as N·σ² > eps.
@pytest.mark.parametrize("std_form,eps", [("nf", 1e-4), ("blog", 1e-9)])
def test_ws_conv_is_scale_invariant(std_form, eps):
    torch.manual_seed(0)
    conv = ScaledStdConv2d(16, 8, 3, padding=1, std_form=std_form, eps=eps)
    x = torch.randn(4, 16, 9, 9)
    y = conv(x)
    for c in (0.25, 3.7):
        scaled = ScaledStdConv2d(16, 8, 3, padding=1, std_form=std_form, eps=eps)
        scaled.load_state_dict(conv.state_dict())
        with torch.no_grad():
            scaled.weight.mul_(c)
        torch.testing.assert_close(scaled(x), y, rtol=1e-5, atol=1e-5)


def test_ws_conv_preserves_unit_variance():
    torch.manual_seed(0)
    conv = ScaledStdConv2d(128, 64, 3, padding=0)
    x = torch.randn(8, 128, 32, 32)  # no padding: every output sees all taps
    with torch.no_grad():
        y = conv(x)
    var, mean = torch.var_mean(y, dim=(0, 2, 3))
    assert mean.abs().max() < 0.1
    assert abs(var.mean().item() - 1) < 0.03


def test_ws_conv_to_conv2d_is_the_same_function():
    torch.manual_seed(0)
    conv = ScaledStdConv2d(16, 8, 3, padding=1, gamma=1.3)
    plain = conv.to_conv2d()
    assert type(plain) is nn.Conv2d
    x = torch.randn(2, 16, 9, 9)
    torch.testing.assert_close(plain(x), conv(x))


# --- activation gains -------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(ACTIVATION_GAMMAS))
def test_activation_gain_gives_unit_variance(name):
    # E over z ~ N(0,1) by quadrature on a fine grid (exact to ~1e-10; Monte Carlo would need 1e7+ draws)
    z = torch.linspace(-12, 12, 240_001, dtype=torch.float64)
    w = torch.exp(-z ** 2 / 2) / math.sqrt(2 * math.pi) * (z[1] - z[0])
    y = GammaAct(name, ACTIVATION_GAMMAS[name])(z)
    mean = (w * y).sum()
    var = (w * y * y).sum() - mean ** 2
    assert abs(var.item() - 1) < 2e-3


def test_activation_gain_monte_carlo_relu_silu():
    torch.manual_seed(0)
    z = torch.randn(4_000_000, dtype=torch.float64)
    for name in ("relu", "silu"):
        var = GammaAct(name, ACTIVATION_GAMMAS[name])(z).var().item()
        assert abs(var - 1) < 5e-3


# --- NF-ResNet (paper form) -------------------------------------------------------------------

def test_nf_block_betas_follow_expected_std():
    model = build_model("nf", alpha=0.3)
    for i, block in enumerate(model.blocks):
        assert block.beta == pytest.approx((1 + i * 0.3 ** 2) ** -0.5, rel=1e-12)
        assert block.alpha == 0.3


def test_nf_has_no_normalization_layers():
    model = build_model("nf")
    assert not any(isinstance(m, nn.modules.batchnorm._NormBase) for m in model.modules())
    assert not any(isinstance(m, (nn.GroupNorm, nn.LayerNorm)) for m in model.modules())


@pytest.mark.parametrize("skip_init", ["zero", "last_gain"])
def test_nf_blocks_are_identity_at_init(skip_init):
    torch.manual_seed(0)
    model = build_model("nf", skip_init=skip_init, **SMALL)
    x = torch.randn(4, 32, 9, 9)
    for block in model.blocks:
        assert torch.equal(block(x), x)


def test_nf_skip_init_one_is_not_identity():
    model = build_model("nf", skip_init="one", **SMALL)
    assert all(b.skip_gain.item() == 1.0 for b in model.blocks)
    x = torch.randn(4, 32, 9, 9)
    assert not torch.allclose(model.blocks[0](x), x)


def test_nf_signal_propagation_variance_law():
    """Skip gains 1, N(0,1) fed to the blocks: avg channel variance after block i ≈ 1 + (i+1)α²."""
    torch.manual_seed(0)
    alpha = 0.2
    model = build_model("nf", skip_init="one", alpha=alpha)  # 10 blocks, 192 channels
    h = torch.randn(32, 192, 9, 9)
    with torch.no_grad():
        for i, block in enumerate(model.blocks):
            h = block(h)
            avg_var = h.var(dim=(0, 2, 3), unbiased=False).mean().item()  # DM signal_metrics avg_var
            expected = 1 + (i + 1) * alpha ** 2
            assert abs(avg_var / expected - 1) < 0.10, (i, avg_var, expected)


def test_nf_first_step_gradients():
    torch.manual_seed(0)
    model = build_model("nf", **SMALL)
    x1, x2 = planes(8)
    policy, value = model(x1, x2)
    (policy.logsumexp(1).mean() + value.square().mean()).backward()
    for block in model.blocks:
        for conv in (block.conv1, block.conv2):
            for p in (conv.weight, conv.gain, conv.bias):
                assert p.grad is None or torch.count_nonzero(p.grad) == 0
        assert block.skip_gain.grad is not None and block.skip_gain.grad.abs() > 0


def test_nf_last_gain_first_step_gradients():
    torch.manual_seed(0)
    model = build_model("nf", skip_init="last_gain", **SMALL)
    x1, x2 = planes(8)
    policy, value = model(x1, x2)
    (policy.logsumexp(1).mean() + value.square().mean()).backward()
    for block in model.blocks:
        assert block.skip_gain is None
        assert torch.count_nonzero(block.conv1.weight.grad) == 0
        assert torch.count_nonzero(block.conv2.weight.grad) == 0
        assert torch.count_nonzero(block.conv2.gain.grad) > 0


def test_nf_stem_calibration_standardizes_each_channel():
    torch.manual_seed(0)
    model = build_model("nf", **SMALL)
    x1, x2 = planes(64)
    stats = model.calibrate_stem(x1, x2)
    assert stats["std"] < 1  # sparse planes: the raw stem output is far from unit variance
    with torch.no_grad():
        y = model.stem(x1, x2).double()
    var, mean = torch.var_mean(y, dim=(0, 2, 3), unbiased=False)
    assert mean.abs().max() < 1e-5
    torch.testing.assert_close(var, torch.ones_like(var), rtol=1e-4, atol=0)
    assert not any(n.startswith("stem.standardize") for n, _ in model.named_parameters())
    assert "stem.standardize.scale" in model.state_dict()  # saved with the checkpoint
    with pytest.raises(ValueError, match="nf"):
        build_model("bn", **SMALL).calibrate_stem(x1, x2)


def test_nf_default_stem_scale_on_real_positions():
    cshogi = pytest.importorskip("cshogi")
    from cshogi import dlshogi
    lines = OPENINGS.read_text().split("\n")
    lines = [line for line in lines if line.strip()][:400:2]
    x1 = torch.zeros(len(lines), 62, 9, 9)
    x2 = torch.zeros(len(lines), 57, 9, 9)
    for i, line in enumerate(lines):
        board = cshogi.Board()
        moves = line.split()[2:]
        for move in moves[: i % (len(moves) + 1)]:
            board.push_usi(move)
        f1, f2 = x1[i].numpy(), x2[i].numpy()
        dlshogi.make_input_features(board, f1, f2)
    torch.manual_seed(0)
    model = build_model("nf")
    assert model.stem.standardize.scale[0] == pytest.approx(NF_STEM_SCALE)
    with torch.no_grad():
        rms = model.stem(x1, x2).pow(2).mean().sqrt().item()
    assert 0.8 < rms < 1.25


# --- NF as published (nf-blog) ----------------------------------------------------------------

def test_nf_blog_block_is_the_published_forward():
    torch.manual_seed(0)
    model = randomize_(build_model("nf-blog", **SMALL))
    x = torch.randn(2, 32, 9, 9)
    for block in model.blocks:
        expected = block.conv2(x) * block.skip_gain * 0.2 + x
        torch.testing.assert_close(block(x), expected)


def test_nf_blog_ignores_conv1_and_nf_does_not():
    x1, x2 = planes(4)
    for arch, should_change in (("nf-blog", False), ("nf", True)):
        torch.manual_seed(0)
        model = randomize_(build_model(arch, **SMALL))  # skip gains nonzero
        with torch.no_grad():
            before = model(x1, x2)
            for block in model.blocks:
                block.conv1.weight.add_(torch.randn_like(block.conv1.weight))
                block.conv1.bias.add_(1.0)
            after = model(x1, x2)
        changed = not all(torch.equal(a, b) for a, b in zip(before, after))
        assert changed == should_change, arch


def test_nf_blog_options_and_init():
    model = build_model("nf-blog", **SMALL)
    for block in model.blocks:
        assert block.skip_gain.item() == 0.0
        assert block.conv1.eps == 1e-4 and block.conv2.std_form == "blog"
        assert block.conv2.gamma == ACTIVATION_GAMMAS["silu"]
    assert model.stem.features1_3x3.gamma == ACTIVATION_GAMMAS["silu"]  # γ folded even in the stem
    assert isinstance(model.stem.act, nn.Identity)
    early = build_model("nf-blog", blog_eps=1e-5, blog_skip_gain=False, **SMALL)
    assert all(b.skip_gain is None and b.conv2.eps == 1e-5 for b in early.blocks)
    x = torch.randn(2, 32, 9, 9)
    torch.testing.assert_close(early.blocks[0](x), early.blocks[0].conv2(x) * 0.2 + x)


def test_nf_blog_first_step_gradients():
    torch.manual_seed(0)
    model = build_model("nf-blog", **SMALL)
    x1, x2 = planes(8)
    policy, value = model(x1, x2)
    (policy.logsumexp(1).mean() + value.square().mean()).backward()
    for block in model.blocks:
        assert block.conv1.weight.grad is None  # conv1 never reaches the output
        assert torch.count_nonzero(block.conv2.weight.grad) == 0
        assert block.skip_gain.grad.abs() > 0


# --- fusion, memory format, autocast ----------------------------------------------------------

@pytest.mark.parametrize("arch,options", [
    ("bn", {}), ("nf", {}), ("nf", {"skip_init": "last_gain", "activation": "relu"}),
    ("nf-blog", {}), ("nf-blog", {"blog_skip_gain": False}),
])
def test_fused_matches_eval_model_float64(arch, options):
    """Fusion is exact algebra: float64 outputs agree to 1e-10."""
    torch.manual_seed(0)
    model = randomize_(build_model(arch, **options)).double()
    x1, x2 = planes(6, dtype=torch.float64)
    if arch == "nf":
        model.calibrate_stem(x1, x2)
    model.eval()
    fused = model.fused()
    assert fused.is_fused and not model.is_fused
    assert not any(isinstance(m, (ScaledStdConv2d, nn.BatchNorm2d)) for m in fused.modules())
    assert all(getattr(m, "gamma", 1.0) == 1.0 for m in fused.modules())
    assert fused.stem.features1_1x1 is None
    with torch.no_grad():
        for a, b in zip(model(x1, x2), fused(x1, x2)):
            torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-10)
    assert n_params(fused) < n_params(model)


@pytest.mark.parametrize("arch", ["bn", "nf", "nf-blog"])
def test_fused_matches_eval_model_float32(arch):
    """float32: rounding only; measured max |diff| ≈ 3e-6 on logits of magnitude ≈ 5."""
    torch.manual_seed(0)
    model = randomize_(build_model(arch)).eval()
    x1, x2 = planes(6)
    with torch.no_grad():
        for a, b in zip(model(x1, x2), model.fused()(x1, x2)):
            torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("arch", ["bn", "nf", "nf-blog"])
def test_channels_last_gives_the_same_outputs(arch):
    torch.manual_seed(0)
    model = randomize_(build_model(arch, **SMALL)).eval()
    x1, x2 = planes(4)
    with torch.no_grad():
        expected = model(x1, x2)
        model = model.to(memory_format=torch.channels_last)
        got = model(x1.to(memory_format=torch.channels_last), x2.to(memory_format=torch.channels_last))
    for a, b in zip(expected, got):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("arch", ["bn", "nf", "nf-blog"])
def test_autocast_bf16_cpu_runs(arch):
    torch.manual_seed(0)
    model = build_model(arch, **SMALL)
    x1, x2 = planes(4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        policy, value = model(x1, x2)
        loss = policy.float().logsumexp(1).mean() + value.float().square().mean()
    loss.backward()
    assert policy.shape == (4, 2187) and value.shape == (4, 1)
    assert torch.isfinite(policy.float()).all() and torch.isfinite(value.float()).all()
    assert model.stem.features1_3x3.weight.grad is not None


# --- parameter groups -------------------------------------------------------------------------

@pytest.mark.parametrize("arch", ["bn", "nf", "nf-blog"])
def test_parameter_groups(arch):
    model = build_model(arch, **SMALL)
    groups = model.parameter_groups()
    names = [n for n, _ in model.named_parameters()]
    assert set(groups) == {"stem", "blocks", "policy_head", "value_head", "policy_final",
                           "value_final", "gains", "biases", "norm"}
    assert all(set(v) <= set(names) for v in groups.values())
    by_module = groups["stem"] + groups["blocks"] + groups["policy_head"] + groups["value_head"]
    assert sorted(by_module) == sorted(names)  # the four module groups partition the parameters
    assert set(groups["policy_final"]) == {"policy_head.conv.weight", "policy_head.bias"}
    assert set(groups["value_final"]) == {"value_head.fc2.weight", "value_head.fc2.bias"}
    assert set(groups["biases"]) == {n for n in names if n.endswith("bias")}
    assert parameter_groups(model) == groups
    if arch == "bn":
        assert groups["gains"] == []
        assert "stem.norm.weight" in groups["norm"] and "blocks.0.norm2.bias" in groups["norm"]
        assert len(groups["norm"]) == 2 * (1 + 2 * 3 + 1)
    else:
        assert groups["norm"] == []
        assert "blocks.0.skip_gain" in groups["gains"]
        assert "blocks.2.conv1.gain" in groups["gains"] and "stem.features2_1x1.gain" in groups["gains"]
        assert "value_head.conv.gain" in groups["gains"]
        assert len(groups["gains"]) == 3 + 3 * 3 + 1
    nf_last = build_model("nf", skip_init="last_gain", **SMALL).parameter_groups()
    assert not any("skip_gain" in n for n in nf_last["gains"])


def test_parameter_groups_follow_a_wrapper_prefix():
    class Wrapper(nn.Module):
        def __init__(self, module):
            super().__init__()
            self.module = module

    wrapped = Wrapper(build_model("nf", **SMALL))
    groups = parameter_groups(wrapped)
    names = {n for n, _ in wrapped.named_parameters()}
    assert "module.value_head.fc2.weight" in groups["value_final"]
    assert all(set(v) <= names for v in groups.values())
    with pytest.raises(ValueError):
        parameter_groups(nn.Linear(2, 2))


# --- config and errors ------------------------------------------------------------------------

@pytest.mark.parametrize("arch,options", [
    ("bn", {}), ("nf", {"skip_init": "last_gain", "alpha": 0.3, "activation": "gelu"}),
    ("nf-blog", {"blog_eps": 1e-5, "blog_skip_gain": False}),
])
def test_config_round_trip(arch, options):
    model = build_model(arch, **SMALL, **options)
    assert model.config["arch"] == arch
    rebuilt = build_model(**model.config)
    assert rebuilt.config == model.config
    assert [(n, p.shape) for n, p in rebuilt.named_parameters()] == \
           [(n, p.shape) for n, p in model.named_parameters()]
    rebuilt.load_state_dict(model.state_dict())
    x1, x2 = planes(2)
    model.eval(), rebuilt.eval()
    for a, b in zip(model(x1, x2), rebuilt(x1, x2)):
        assert torch.equal(a, b)
    assert build_model(arch).config == {**build_model(arch).config}  # plain dict of defaults


def test_config_records_defaults():
    assert build_model("nf").config == {"arch": "nf", "blocks": 10, "channels": 192, "fc_units": 256,
                                        "activation": "silu", "input2_planes": 57, "alpha": 0.2,
                                        "skip_init": "zero", "eps": 1e-4}


@pytest.mark.parametrize("kwargs,word", [
    ({"arch": "nfnet"}, "nfnet"),
    ({"arch": "bn", "alpha": 0.2}, "alpha"),
    ({"arch": "nf", "blog_eps": 1e-5}, "blog_eps"),
    ({"arch": "nf", "skip_init": "half"}, "half"),
    ({"arch": "nf", "activation": "swishy"}, "swishy"),
    ({"arch": "nf", "eps": -1.0}, "eps"),
    ({"arch": "bn", "blocks": -1}, "blocks"),
])
def test_bad_arguments_raise_value_error_naming_them(kwargs, word):
    with pytest.raises(ValueError, match=word):
        build_model(**kwargs)
