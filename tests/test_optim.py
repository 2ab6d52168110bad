"""Optimizer / schedule factories: RAdam against torch and against the formulas of docs/algorithms.md,
"RAdam"."""

import math

import pytest
import torch
from torch import nn

from shogitrain.optim import NLCG, build_optimizer, build_scheduler, split_weight_decay

F64 = torch.float64


# ------------------------------------------------------------------------------ reference RAdam


def rho_t(t, beta2=0.999):
    rho_inf = 2 / (1 - beta2) - 1
    return rho_inf - 2 * t * beta2**t / (1 - beta2**t)


def r_t(t, beta2=0.999):
    rho_inf = 2 / (1 - beta2) - 1
    rho = rho_t(t, beta2)
    return math.sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho))


class ReferenceRAdam:
    """docs/algorithms.md, "RAdam", with torch's threshold ρ_t > 5 and SGD-with-m̂ degenerate branch."""

    def __init__(self, theta, lr, betas=(0.9, 0.999), eps=1e-8, wd=0.0, decoupled=False):
        self.theta = theta.clone()
        self.lr, (self.b1, self.b2), self.eps, self.wd, self.decoupled = lr, betas, eps, wd, decoupled
        self.m = torch.zeros_like(theta)
        self.v = torch.zeros_like(theta)
        self.t = 0

    def step(self, g):
        self.t += 1
        t = self.t
        if self.wd:
            if self.decoupled:
                self.theta = self.theta * (1 - self.lr * self.wd)
            else:
                g = g + self.wd * self.theta
        self.m = self.b1 * self.m + (1 - self.b1) * g
        self.v = self.b2 * self.v + (1 - self.b2) * g * g
        m_hat = self.m / (1 - self.b1**t)
        if rho_t(t, self.b2) > 5:
            l_t = math.sqrt(1 - self.b2**t) / (self.v.sqrt() + self.eps)
            self.theta = self.theta - self.lr * r_t(t, self.b2) * m_hat * l_t
        else:
            self.theta = self.theta - self.lr * m_hat
        return self.theta


@pytest.mark.parametrize("decoupled", [False, True])
@pytest.mark.parametrize("wd", [0.0, 1e-2])
def test_factory_radam_equals_torch_and_reference(decoupled, wd):
    gen = torch.Generator().manual_seed(0)
    init = torch.randn(7, 3, generator=gen, dtype=F64)
    a = nn.Parameter(init.clone())
    b = nn.Parameter(init.clone())
    ours = build_optimizer([("w", a)], "radam", lr=1e-2, weight_decay=wd, decoupled_weight_decay=decoupled)
    assert isinstance(ours, torch.optim.RAdam)
    theirs = torch.optim.RAdam([b], lr=1e-2, weight_decay=wd, decoupled_weight_decay=decoupled)
    ref = ReferenceRAdam(init, lr=1e-2, wd=wd, decoupled=decoupled)
    for _ in range(200):
        g = torch.randn(7, 3, generator=gen, dtype=F64)
        a.grad, b.grad = g.clone(), g.clone()
        ours.step()
        theirs.step()
        expected = ref.step(g)
    torch.testing.assert_close(a.detach(), b.detach(), rtol=0, atol=1e-12)
    torch.testing.assert_close(a.detach(), expected, rtol=0, atol=1e-12)


def test_radam_constant_gradient_first_steps():
    lr = 1e-3
    g = torch.tensor([0.5, -2.0, 3e-3], dtype=F64)
    p = nn.Parameter(torch.zeros(3, dtype=F64))
    opt = build_optimizer([("p", p)], "radam", lr=lr)
    moves = []
    for _ in range(6):
        before = p.detach().clone()
        p.grad = g.clone()
        opt.step()
        moves.append(p.detach() - before)
    for t in range(5):  # torch: SGD with bias-corrected momentum, m̂ = g
        torch.testing.assert_close(moves[t], -lr * g, rtol=1e-12, atol=0)
    # t = 6: first rectified step, ≈ −lr·r_6·sign(g)
    torch.testing.assert_close(moves[5], -lr * 0.025821 * torch.sign(g), rtol=1e-4, atol=0)
    # exactly: m̂ = g, sqrt(v) = sqrt(1−β2^6)·|g|, ε on the uncorrected sqrt(v)
    c = math.sqrt(1 - 0.999**6)
    torch.testing.assert_close(moves[5], -lr * r_t(6) * g * c / (c * g.abs() + 1e-8), rtol=1e-10, atol=0)
    assert r_t(6) == pytest.approx(0.025821, abs=5e-7)


def test_rho_and_r_tables():
    expected = [1.0, 1.9995, 2.9987, 3.9975, 4.996, 5.994]
    for t, rho in enumerate(expected, start=1):
        assert rho_t(t) == pytest.approx(rho, abs=1e-3)
    assert [t for t in range(1, 10) if rho_t(t) > 5][0] == 6
    assert r_t(555) < 0.5 <= r_t(556)
    assert r_t(2736) < 0.9 <= r_t(2737)
    assert r_t(100_000) == pytest.approx(1.0, abs=1e-3)
    # β2 = 0.99: first rectified step t = 6 with r ≈ 0.082, r ≥ 0.9 from t = 277
    assert [t for t in range(1, 10) if rho_t(t, 0.99) > 5][0] == 6
    assert r_t(6, 0.99) == pytest.approx(0.082, abs=5e-4)
    assert r_t(276, 0.99) < 0.9 <= r_t(277, 0.99)


def test_radam_equals_adam_times_r_t_with_eps_zero():
    gen = torch.Generator().manual_seed(1)
    init = torch.randn(10, generator=gen, dtype=F64)
    pr = nn.Parameter(init.clone())
    pa = nn.Parameter(init.clone())
    radam = build_optimizer([("p", pr)], "radam", lr=1e-3, eps=0.0)
    adam = build_optimizer([("p", pa)], "adam", lr=1e-3, eps=0.0)
    for t in range(1, 3001):
        g = torch.randn(10, generator=gen, dtype=F64)
        br, ba = pr.detach().clone(), pa.detach().clone()
        pr.grad, pa.grad = g.clone(), g.clone()
        radam.step()
        adam.step()
    torch.testing.assert_close(pr.detach() - br, (pa.detach() - ba) * r_t(3000), rtol=1e-9, atol=0)


# ------------------------------------------------------------------------------ factory


class GroupedNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3)
        self.gain = nn.Parameter(torch.ones(4))
        self.norm = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 3)
        self.frozen = nn.Parameter(torch.ones(2), requires_grad=False)

    def parameter_groups(self):
        return {"stem": ["conv.weight", "conv.bias"], "blocks": [], "policy_head": ["fc.weight", "fc.bias"],
                "value_head": [], "policy_final": ["fc.weight", "fc.bias"], "value_final": [],
                "gains": ["gain"], "biases": ["conv.bias", "fc.bias"], "norm": ["norm.weight", "norm.bias"]}


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw", "radam", "nlcg"])
def test_weight_decay_exclusion_by_group(name):
    model = GroupedNet()
    opt = build_optimizer(model, name, lr=0.1, weight_decay=1e-4, no_decay_groups=["gains", "biases", "norm"])
    names = {id(p): n for n, p in model.named_parameters()}
    groups = {g["name"]: g for g in opt.param_groups}
    assert sorted(names[id(p)] for p in groups["decay"]["params"]) == ["conv.weight", "fc.weight"]
    assert sorted(names[id(p)] for p in groups["no_decay"]["params"]) == \
        ["conv.bias", "fc.bias", "gain", "norm.bias", "norm.weight"]
    assert groups["decay"]["weight_decay"] == 1e-4 and groups["no_decay"]["weight_decay"] == 0.0


def test_factory_types_and_options():
    model = GroupedNet()
    sgd = build_optimizer(model, "SGD", lr=0.1)
    assert isinstance(sgd, torch.optim.SGD) and len(sgd.param_groups) == 1
    assert sgd.defaults["nesterov"] and sgd.defaults["momentum"] == 0.9
    assert not build_optimizer(model, "sgd", lr=0.1, momentum=0.0).defaults["nesterov"]
    assert isinstance(build_optimizer(model, "adamw", lr=1e-3), torch.optim.AdamW)
    adam = build_optimizer(model, "adam", lr=1e-3, betas=(0.8, 0.99), eps=1e-6)
    assert adam.defaults["betas"] == (0.8, 0.99) and adam.defaults["eps"] == 1e-6
    nlcg = build_optimizer(model, "nlcg", lr=0.5, update_rule="PR", line_search="online")
    assert isinstance(nlcg, NLCG) and nlcg.update_rule == "PR" and nlcg.line_search == "online"
    n_trainable = sum(p.requires_grad for p in model.parameters())
    assert sum(len(g["params"]) for g in nlcg.param_groups) == n_trainable  # frozen left out


def test_factory_errors():
    model = GroupedNet()
    with pytest.raises(ValueError, match="sgd, adam, adamw, radam, nlcg"):
        build_optimizer(model, "lamb", lr=0.1)
    with pytest.raises(ValueError, match="'skip_gains'"):
        build_optimizer(model, "sgd", lr=0.1, no_decay_groups=["skip_gains"])
    with pytest.raises(ValueError, match="nlcg"):
        build_optimizer(model, "sgd", lr=0.1, update_rule="PR")
    with pytest.raises(ValueError, match="parameter_groups"):
        split_weight_decay(list(model.named_parameters()), ["gains"])


# ------------------------------------------------------------------------------ schedules


def _lrs(name, calls, lr=1.0, **kw):
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=lr)
    sched = build_scheduler(opt, name, **kw)
    out = [opt.param_groups[0]["lr"]]
    for _ in range(calls):
        opt.step()
        sched.step()
        out.append(opt.param_groups[0]["lr"])
    return out


def test_warmup_then_cosine():
    lrs = _lrs("cosine", 10, lr=0.8, total_steps=10, warmup_steps=3, min_lr=0.08)
    assert lrs[:4] == pytest.approx([0.2, 0.4, 0.6, 0.8])  # base·(k+1)/(W+1)
    for k in range(3, 11):
        expected = 0.08 + 0.72 * (1 + math.cos(math.pi * (k - 3) / 7)) / 2
        assert lrs[k] == pytest.approx(expected, rel=1e-12)
    assert lrs[10] == pytest.approx(0.08)


def test_cosine_without_warmup_and_constant():
    lrs = _lrs("cosine", 4, total_steps=4)
    assert lrs == pytest.approx([1.0, (1 + math.cos(math.pi / 4)) / 2, 0.5, (1 + math.cos(3 * math.pi / 4)) / 2, 0.0])
    assert _lrs("constant", 3) == [1.0] * 4
    assert _lrs("constant", 4, warmup_steps=2, warmup_start_factor=0.1) == pytest.approx([0.1, 0.55, 1.0, 1.0, 1.0])


def test_step_decay_counts_from_the_start():
    lrs = _lrs("step", 12, total_steps=12, warmup_steps=2, step_size=4, gamma=0.5)
    assert lrs == pytest.approx([1 / 3, 2 / 3, 1, 1, 0.5, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25, 0.25, 0.125])
    assert _lrs("step", 6, milestones=[2, 5], gamma=0.1) == pytest.approx([1, 1, 0.1, 0.1, 0.1, 0.01, 0.01])


def test_epoch_lengths_with_per_step_calls():
    # 2 warmup epochs, cosine to epoch 6, 5 optimizer steps per epoch, scheduler stepped per step
    per_step = _lrs("cosine", 30, total_steps=6, warmup_steps=2, steps_per_unit=5)
    assert per_step[10] == pytest.approx(1.0)
    assert per_step[20] == pytest.approx(0.5)
    assert per_step[30] == pytest.approx(0.0, abs=1e-12)
    # the same lengths stepped once per epoch
    per_epoch = _lrs("cosine", 6, total_steps=6, warmup_steps=2)
    assert [per_step[5 * e] for e in range(2, 7)] == pytest.approx(per_epoch[2:])


def test_schedule_errors():
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    with pytest.raises(ValueError, match="constant, step, cosine"):
        build_scheduler(opt, "linear")
    with pytest.raises(ValueError, match="total_steps"):
        build_scheduler(opt, "cosine")
    with pytest.raises(ValueError, match="after the warmup"):
        build_scheduler(opt, "step", milestones=[1], warmup_steps=2)


def test_scheduler_drives_nlcg_lr():
    p = nn.Parameter(torch.zeros(3))
    opt = build_optimizer([("p", p)], "nlcg", lr=0.4, line_search="none", precond="none")
    sched = build_scheduler(opt, "cosine", total_steps=4, warmup_steps=1)
    seen = []
    for _ in range(3):
        p.grad = torch.ones(3)
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx([0.2, 0.4, 0.4 * (1 + math.cos(math.pi / 3)) / 2])
