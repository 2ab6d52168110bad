"""Adaptive gradient clipping (docs/algorithms.md, "Adaptive gradient clipping"): hand-computed
examples, units, exclusions, idempotence, AMP and weight decay, plus a per-parameter reference."""

import pytest
import torch
from torch import nn

from shogitrain.optim.agc import AGC, select_parameters, unit_shape


def _param(values, shape=None, grad=None, dtype=torch.float32):
    t = torch.tensor(values, dtype=dtype)
    p = nn.Parameter(t.view(shape) if shape else t)
    if grad is not None:
        p.grad = torch.tensor(grad, dtype=dtype).view(p.shape)
    return p


def adaptive_clip_(params, clipping=0.01, eps=1e-3):
    AGC(params, clipping=clipping, eps=eps)()


def reference_agc_(params, clipping=0.01, eps=1e-3):
    """Plain per-parameter AGC (DM rule, trailing singleton dims squeezed before the rank rule)."""
    for p in params:
        if p.grad is None:
            continue
        dims = list(p.shape)
        while dims and dims[-1] == 1:
            dims.pop()
        w = p.detach().reshape(dims)
        g = p.grad.reshape(dims)
        if len(dims) <= 1:
            w_norm, g_norm = torch.linalg.vector_norm(w), torch.linalg.vector_norm(g)
        else:
            axes = tuple(range(1, len(dims)))
            w_norm = torch.linalg.vector_norm(w, dim=axes, keepdim=True)
            g_norm = torch.linalg.vector_norm(g, dim=axes, keepdim=True)
        max_norm = clipping * w_norm.clamp(min=eps)
        clipped = g * (max_norm / g_norm.clamp(min=1e-6))
        p.grad.copy_(torch.where(g_norm > max_norm, clipped, g).reshape(p.shape))


# ------------------------------------------------------------------------------ hand examples


def test_hand_example_conv_filters():
    # W (2,1,1,2): filter 0 = [3,4], filter 1 = [0,0]
    w = _param([3.0, 4.0, 0.0, 0.0], (2, 1, 1, 2), grad=[0.3, 0.4, 1e-6, 0.0])
    adaptive_clip_([w], clipping=0.01, eps=1e-3)
    torch.testing.assert_close(w.grad[0].flatten(), torch.tensor([0.03, 0.04]))
    # filter 1: max norm 0.01·1e-3 = 1e-5 > ‖[1e-6, 0]‖ → untouched, bit for bit
    assert torch.equal(w.grad[1].flatten(), torch.tensor([1e-6, 0.0]))

    w.grad = torch.tensor([0.3, 0.4, 3e-5, 4e-5]).view(2, 1, 1, 2)
    adaptive_clip_([w])
    torch.testing.assert_close(w.grad.flatten(), torch.tensor([0.03, 0.04, 6e-6, 8e-6]))


def test_matrix_rows_and_a_vector_together():
    w = _param([3.0, 4.0, 0.0, 0.0], (2, 2), grad=[0.3, 0.4, 3e-5, 4e-5])
    b = _param([1.0, 0.0], grad=[0.1, 0.0])
    adaptive_clip_([w, b, w])  # a parameter listed twice is clipped once
    torch.testing.assert_close(w.grad.flatten(), torch.tensor([0.03, 0.04, 6e-6, 8e-6]))
    torch.testing.assert_close(b.grad, torch.tensor([0.01, 0.0]))


def test_bias_is_one_unit():
    b = _param([1.0, 0.0], grad=[0.1, 0.0])
    adaptive_clip_([b])
    torch.testing.assert_close(b.grad, torch.tensor([0.01, 0.0]))


def test_unit_layout_by_rank_with_trailing_singletons_squeezed():
    assert unit_shape(()) == (1, 1)
    assert unit_shape((7,)) == (1, 7)
    assert unit_shape((5, 3)) == (5, 3)
    assert unit_shape((8, 4, 3, 3)) == (8, 36)
    assert unit_shape((8, 4, 1, 1)) == (8, 4)
    assert unit_shape((8, 1, 1, 1)) == (1, 8)  # WS-conv gain: one vector unit (DM), not element-wise
    assert unit_shape((1, 16)) == (1, 16)


def test_gain_of_shape_o111_is_clipped_as_one_unit():
    gain = _param([1.0, 2.0, 2.0], (3, 1, 1, 1), grad=[0.3, 0.0, 0.0])
    # as one unit: ‖W‖ = 3, max 0.03 < 0.3 → scaled by 0.1; element-wise would give 0.01 for element 0
    adaptive_clip_([gain])
    torch.testing.assert_close(gain.grad.flatten(), torch.tensor([0.03, 0.0, 0.0]))


# ------------------------------------------------------------------------------ selection by group


class TwoHeadNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3)
        self.gain = nn.Parameter(torch.ones(8, 1, 1, 1))
        self.policy_conv = nn.Conv2d(8, 8, 1)
        self.policy_out = nn.Conv2d(8, 4, 1)
        self.value_fc = nn.Linear(8, 16)
        self.value_out = nn.Linear(16, 1)

    def parameter_groups(self):
        names = dict(self.named_parameters())
        return {
            "stem": ["stem.weight", "stem.bias"],
            "blocks": [],
            "policy_head": ["policy_conv.weight", "policy_conv.bias", "policy_out.weight", "policy_out.bias"],
            "value_head": ["value_fc.weight", "value_fc.bias", "value_out.weight", "value_out.bias"],
            "policy_final": ["policy_out.weight", "policy_out.bias"],
            "value_final": ["value_out.weight", "value_out.bias"],
            "gains": ["gain"],
            "biases": [n for n in names if n.endswith("bias")],
            "norm": [],
        }


def _big_grads(model, seed=0):
    gen = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=gen) * 10.0


def test_excluded_heads_are_bit_identical():
    torch.manual_seed(0)
    model = TwoHeadNet()
    _big_grads(model)
    before = {n: p.grad.clone() for n, p in model.named_parameters()}
    selected = select_parameters(model)  # default: policy_final + value_final excluded
    names = [n for n, _ in selected]
    assert names == ["gain", "stem.weight", "stem.bias", "policy_conv.weight", "policy_conv.bias",
                     "value_fc.weight", "value_fc.bias"]
    AGC([p for _, p in selected])()
    for n, p in model.named_parameters():
        if n.startswith(("policy_out", "value_out")):
            assert torch.equal(p.grad, before[n]), n
        else:
            assert not torch.equal(p.grad, before[n]), n  # grads ×10 are far above λ·‖W‖


def test_whole_heads_excluded_and_unknown_groups():
    model = TwoHeadNet()
    names = [n for n, _ in select_parameters(model, ["policy_head", "value_head"])]
    assert names == ["gain", "stem.weight", "stem.bias"]
    assert len(select_parameters(model, [])) == len(list(model.parameters()))
    with pytest.raises(ValueError, match="policy_logits"):
        select_parameters(model, ["policy_logits", "value_final"])


# ------------------------------------------------------------------------------ properties


def test_idempotent_and_below_threshold_untouched():
    torch.manual_seed(1)
    model = TwoHeadNet()
    _big_grads(model)
    agc = AGC(model.parameters())
    agc()
    once = [p.grad.clone() for p in model.parameters()]
    agc()
    for a, p in zip(once, model.parameters()):
        torch.testing.assert_close(p.grad, a, rtol=1e-6, atol=0)

    # gradients well below λ·‖W‖ stay bit-identical
    for p in model.parameters():
        p.grad = p.detach() * 1e-4
    small = [p.grad.clone() for p in model.parameters()]
    agc()
    for a, p in zip(small, model.parameters()):
        assert torch.equal(p.grad, a)


def test_amp_unscaled_grads_equal_fp32_grads():
    torch.manual_seed(2)
    x = torch.randn(4, 3, 9, 9)
    ref = TwoHeadNet()
    amp = TwoHeadNet()
    amp.load_state_dict(ref.state_dict())

    def loss_of(m):
        h = torch.relu(m.stem(x)) * m.gain.view(1, -1, 1, 1)
        p = m.policy_out(torch.relu(m.policy_conv(h)))
        v = m.value_out(torch.relu(m.value_fc(h.mean((2, 3)))))
        return p.square().mean() + v.square().mean()

    loss_of(ref).backward()
    AGC([p for _, p in select_parameters(ref)])()

    # torch.amp.GradScaler works on CPU: scale the loss, unscale_ the optimizer's grads, then AGC.
    opt = torch.optim.SGD(amp.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    scaler.scale(loss_of(amp)).backward()
    assert not torch.equal(amp.stem.weight.grad, ref.stem.weight.grad)  # still scaled
    scaler.unscale_(opt)
    AGC([p for _, p in select_parameters(amp)])()
    for (n, a), b in zip(amp.named_parameters(), ref.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-6, atol=0, msg=n)


def test_weight_decay_is_not_clipped():
    torch.manual_seed(3)
    lin = nn.Linear(6, 4)
    lin.weight.grad = torch.randn(4, 6)  # far above 0.01·‖W‖: clipped
    lin.bias.grad = torch.randn(4)
    theta = [p.detach().clone() for p in lin.parameters()]
    AGC(lin.parameters())()
    clipped = [p.grad.clone() for p in lin.parameters()]
    lr, wd = 0.1, 0.05
    opt = torch.optim.SGD(lin.parameters(), lr=lr, weight_decay=wd)
    opt.step()
    for p, th, g in zip(lin.parameters(), theta, clipped):
        # SGD adds wd·θ to the (already clipped) gradient: same ops, bit-identical
        assert torch.equal(p.detach(), th - lr * (g + wd * th))
        decay = (th - lr * g) - p.detach()
        torch.testing.assert_close(decay, lr * wd * th, rtol=1e-4, atol=1e-7)
        # had the decay passed through AGC, it would have been scaled with the gradient
        assert not torch.allclose(p.detach(), th - lr * (g + wd * th) * 0.5)


# ------------------------------------------------------------------------------ vectorised == reference


class MixedNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.convs = nn.ModuleList([nn.Conv2d(8, 8, 3) for _ in range(3)])
        self.pointwise = nn.Conv2d(8, 16, 1)
        self.depthwise = nn.Conv2d(16, 16, 3, groups=16)       # (16,1,3,3)
        self.gains4 = nn.ParameterList([nn.Parameter(torch.rand(8, 1, 1, 1) + 0.5) for _ in range(3)])
        self.gains1 = nn.ParameterList([nn.Parameter(torch.rand(16)) for _ in range(2)])
        self.skip_gain = nn.Parameter(torch.zeros(()))           # zero-initialised scalar gain
        self.fc = nn.Linear(16, 32)
        self.fc2 = nn.Linear(32, 32)
        self.out = nn.Linear(32, 1)                               # (1,32): one row


def test_vectorised_equals_per_parameter_reference():
    torch.manual_seed(4)
    a, b = MixedNet(), MixedNet()
    b.load_state_dict(a.state_dict())
    gen = torch.Generator().manual_seed(5)
    for pa, pb in zip(a.parameters(), b.parameters()):
        # magnitudes from 1e-6 to 1e-1 per row so that some units clip and others do not
        rows = pa.shape[0] if pa.dim() else 1
        scale = 10.0 ** (-6 + 5 * torch.rand(rows, generator=gen)).view((-1,) + (1,) * (pa.dim() - 1))
        g = torch.randn(pa.shape, generator=gen) * (scale if pa.dim() else scale.squeeze())
        pa.grad, pb.grad = g.clone(), g.clone()
    before = [p.grad.clone() for p in a.parameters()]
    agc = AGC(a.parameters())
    assert len(agc._row_groups) < len(list(a.parameters()))  # grouped, not one entry per parameter
    agc()
    reference_agc_(b.parameters())
    changed = unchanged = 0
    for (n, pa), pb, g0 in zip(a.named_parameters(), b.parameters(), before):
        torch.testing.assert_close(pa.grad, pb.grad, rtol=1e-6, atol=0, msg=n)
        changed += int((pa.grad != g0).sum())
        unchanged += int((pa.grad == g0).sum())
    assert changed > 100 and unchanged > 100


def test_missing_grads_skipped_and_bf16_grads():
    torch.manual_seed(6)
    net = MixedNet()
    for p in net.parameters():
        p.grad = torch.randn(p.shape)
    net.fc2.weight.grad = None
    ref = MixedNet()
    ref.load_state_dict(net.state_dict())
    for p, q in zip(net.parameters(), ref.parameters()):
        q.grad = None if p.grad is None else p.grad.clone()
    AGC(net.parameters())()
    reference_agc_(ref.parameters())
    assert net.fc2.weight.grad is None
    for p, q in zip(net.parameters(), ref.parameters()):
        if p.grad is not None:
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-6, atol=0)

    # bf16 parameters and grads: norms are taken in float32, result within bf16 rounding
    lin = nn.Linear(8, 4).to(torch.bfloat16)
    lin.weight.grad = torch.randn(4, 8).to(torch.bfloat16)
    lin.bias.grad = torch.randn(4).to(torch.bfloat16)
    ref32 = nn.Linear(8, 4)
    ref32.load_state_dict({k: v.float() for k, v in lin.state_dict().items()})
    ref32.weight.grad = lin.weight.grad.float()
    ref32.bias.grad = lin.bias.grad.float()
    AGC(lin.parameters())()
    reference_agc_(ref32.parameters())
    torch.testing.assert_close(lin.weight.grad.float(), ref32.weight.grad, rtol=1e-2, atol=0)
    assert lin.weight.grad.dtype == torch.bfloat16
