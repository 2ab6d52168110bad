"""GradInit (docs/algorithms.md, "GradInit") on small modules (an MLP and a conv + BatchNorm net)."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from shogitrain.optim.gradinit import (
    ScaleAdam,
    cat_batches,
    default_inputs_of,
    grad_norm,
    gradinit,
    scale_gradient,
    simulated_step,
    write_scales,
)


class MLP(nn.Module):
    def __init__(self, d_in=4, hidden=8, classes=3):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d_in, hidden), nn.Tanh(), nn.Linear(hidden, classes))

    def forward(self, x):
        return self.net(x)


class ConvBN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 3 * 3, 3)

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).flatten(1))


def ce_loss(out, batch):
    return F.cross_entropy(out, batch[1])


def half_batches(seed=0, n=8, shape=(4,), classes=3, shift=0.0):
    """An endless generator of (x, y) half-batches."""
    g = torch.Generator().manual_seed(seed)
    while True:
        yield (torch.randn(n, *shape, generator=g) + shift, torch.randint(0, classes, (n,), generator=g))


def fixed_batch(seed=0, n=8):
    half = next(half_batches(seed, n))
    return lambda: half


def params_of(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


# 1. scale gradient ------------------------------------------------------------------------------


def test_scale_gradient_equals_autograd_for_explicit_scale():
    torch.manual_seed(0)
    model = MLP().double()
    x, y = next(half_batches(n=16))
    x = x.double()
    for name in ("net.0.weight", "net.2.weight", "net.0.bias"):
        p0 = dict(model.named_parameters())[name].detach().clone()
        alpha = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
        loss = F.cross_entropy(functional_call(model, {name: alpha * p0}, (x,)), y)
        (d_alpha,) = torch.autograd.grad(loss, alpha)

        p = (0.7 * p0).requires_grad_(True)
        loss_p = F.cross_entropy(functional_call(model, {name: p}, (x,)), y)
        (g,) = torch.autograd.grad(loss_p, p)
        ours = scale_gradient(g, p.detach(), p0.norm())
        torch.testing.assert_close(ours, d_alpha, rtol=1e-5, atol=0)


# 2. after a step --------------------------------------------------------------------------------


def test_after_steps_direction_kept_norm_is_alpha_times_init_norm():
    torch.manual_seed(0)
    model = MLP()
    before = params_of(model)
    scales = gradinit(model, half_batches(), ce_loss, gamma=math.inf, lr=0.1, iters=5)
    assert set(scales) == set(before)
    after = params_of(model)
    for name, alpha in scales.items():
        p0, p = before[name], after[name]
        assert p.norm().item() == pytest.approx(alpha * p0.norm().item(), rel=1e-5)
        torch.testing.assert_close(p / p.norm(), p0 / p0.norm(), atol=1e-6, rtol=0)
        assert alpha >= (0.0 if name.endswith("bias") else 0.01)
    assert any(abs(a - 1) > 1e-3 for a in scales.values())  # something was learned


def test_scale_floor_weights_min_scale_biases_zero():
    w = torch.randn(3, 4)
    b = torch.randn(3)
    opt = ScaleAdam([w, b], [0.01, 0.0], lr=0.5)
    for _ in range(6):  # ⟨g, p⟩ > 0 → the clipped scale gradient is +1 → α falls by ≈ lr per step
        opt.step([w.clone(), b.clone() if b.norm() > 0 else None], constraint=False)
    assert opt.alpha.tolist() == [0.01, 0.0]
    assert w.norm().item() == pytest.approx(0.01 * opt.init_norm[0].item(), rel=1e-6)
    assert torch.count_nonzero(b) == 0


def test_constraint_and_objective_keep_separate_first_moments():
    w = torch.randn(5)
    opt = ScaleAdam([w], [0.01], lr=0.01)
    opt.step([w.clone()], constraint=True)  # scale gradient clipped to +1: α = 1 − lr
    assert opt.alpha.item() == pytest.approx(0.99, abs=1e-6)
    opt.step([-w.clone()], constraint=False)  # own first moment: m̂ = −1, shared v̂ = 1 → α = 1
    assert opt.alpha.item() == pytest.approx(1.0, abs=1e-6)


# 3. zero tensors, BatchNorm ----------------------------------------------------------------------


def test_zero_tensors_stay_zero_and_are_not_scaled():
    torch.manual_seed(0)
    model = MLP()
    with torch.no_grad():
        model.net[0].bias.zero_()
    scales = gradinit(model, half_batches(), ce_loss, gamma=math.inf, lr=0.1, iters=3)
    assert torch.count_nonzero(model.net[0].bias) == 0
    assert "net.0.bias" not in scales


def test_batchnorm_uses_batch_statistics_and_keeps_running_stats():
    torch.manual_seed(0)
    model = ConvBN()
    model.train()
    bn = model.bn
    with torch.no_grad():
        bn.running_mean.fill_(0.25)
        bn.running_var.fill_(2.0)
    stats = {k: v.clone() for k, v in bn.state_dict().items() if "running" in k or "num_batches" in k}
    seen = []

    def record(module, inputs, output):
        seen.append((module.training, output.detach().mean(dim=(0, 2, 3))))

    handle = bn.register_forward_hook(record)
    # inputs far from the running statistics: only batch statistics centre the BN output
    gradinit(model, half_batches(shape=(2, 3, 3), shift=5.0), ce_loss, gamma=math.inf, lr=0.05, iters=3)
    handle.remove()
    assert len(seen) == 6 and all(training for training, _ in seen)
    # forwards alternate L(S; θ) and L(S̃; θ'); at θ the BN shift is its zero bias (never scaled),
    # so batch statistics give a per-channel output mean of 0 (running stats would give ≈ 5·Σw)
    assert torch.count_nonzero(bn.bias) == 0
    for _, mean in seen[0::2]:
        torch.testing.assert_close(mean, torch.zeros(4), atol=1e-5, rtol=0)
    for k, v in bn.state_dict().items():
        if k in stats:
            torch.testing.assert_close(v, stats[k], rtol=0, atol=0)
    assert model.training and bn.training and bn.track_running_stats  # modes restored


def test_modes_restored_for_eval_model_with_dropout():
    model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.5), nn.Linear(8, 3))
    model.eval()
    gradinit(model, half_batches(), ce_loss, gamma=math.inf, iters=2)
    assert not model.training and not model[1].training
    model.train()
    gradinit(model, half_batches(), ce_loss, gamma=math.inf, iters=2)
    assert model.training and model[1].training


# 4. folding ------------------------------------------------------------------------------------


def test_folded_model_equals_explicit_multipliers():
    torch.manual_seed(0)
    model = ConvBN()
    original = copy.deepcopy(model)
    scales = gradinit(model, half_batches(shape=(2, 3, 3)), ce_loss, gamma=math.inf, lr=0.1, iters=4)
    x = torch.randn(10, 2, 3, 3)
    model.eval()
    original.eval()
    theta0 = dict(original.named_parameters())
    explicit = {n: scales[n] * theta0[n] for n in scales}
    torch.testing.assert_close(model(x), functional_call(original, explicit, (x,)), atol=1e-6, rtol=0)


# 5. inner step ----------------------------------------------------------------------------------


@pytest.mark.parametrize("variant, normalize", [("sgd", True), ("sgd", False), ("adam", True)])
def test_inner_step_functional_call_equals_stepped_copy(variant, normalize):
    torch.manual_seed(0)
    model = ConvBN()
    model.train()
    gen = half_batches(shape=(2, 3, 3))
    batch_s = cat_batches(next(gen), next(gen))
    batch_t = cat_batches(next(gen), next(gen))
    theta = dict(model.named_parameters())
    loss = ce_loss(model(batch_s[0]), batch_s)
    grads = dict(zip(theta, torch.autograd.grad(loss, list(theta.values()))))
    eta = 0.1
    stepped = simulated_step(theta, grads, variant=variant, eta=eta, normalize_grad=normalize)
    ours = ce_loss(functional_call(model, stepped, (batch_t[0],)), batch_t)

    by_hand = copy.deepcopy(model)
    norm = math.sqrt(sum((g * g).sum().item() for g in grads.values()))
    with torch.no_grad():
        for name, p in by_hand.named_parameters():
            g = grads[name]
            if variant == "adam":
                p -= eta * torch.sign(g)
            elif normalize:
                p -= eta * g / norm
            else:
                p -= eta * g
    expected = ce_loss(by_hand(batch_t[0]), batch_t)
    torch.testing.assert_close(ours, expected, rtol=1e-6, atol=1e-7)
    # the module's own parameters were not touched
    for name, p in model.named_parameters():
        assert p is theta[name]


# 6. batches -------------------------------------------------------------------------------------


class Recorder(nn.Module):
    """Records the batch id column (x[:, 0]) of every forward."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 3)
        self.calls = []

    def forward(self, x):
        self.calls.append(sorted(set(x[:, 0].tolist())))
        return self.fc(x)


def id_halves(n=4):
    i = 0
    while True:
        x = torch.randn(n, 3)
        x[:, 0] = i
        yield (x, torch.randint(0, 3, (n,)))
        i += 1


@pytest.mark.parametrize("no_overlap, expected", [
    (False, [[0, 1], [0, 2], [3, 4], [3, 5]]),
    (True, [[0, 1], [2, 3], [4, 5], [6, 7]]),
])
def test_s_tilde_shares_exactly_the_first_half_of_s(no_overlap, expected):
    model = Recorder()
    gradinit(model, id_halves(), ce_loss, gamma=math.inf, iters=2, batch_no_overlap=no_overlap)
    assert model.calls == expected


def test_batches_as_callable_iterable_and_dict():
    model = MLP()
    data = [next(half_batches(seed=s)) for s in range(3)]  # a re-iterable list is cycled
    gradinit(model, data, ce_loss, gamma=math.inf, iters=3)
    dict_halves = ({"inputs": (x,), "y": y} for x, y in half_batches())
    gradinit(model, dict_halves, lambda out, b: F.cross_entropy(out, b["y"]), gamma=math.inf, iters=2)
    assert default_inputs_of({"inputs": torch.ones(1)})[0].shape == (1,)
    with pytest.raises(ValueError, match="ran out"):
        gradinit(model, iter(data), ce_loss, gamma=math.inf, iters=3)


# 7. constraint ----------------------------------------------------------------------------------


def test_constraint_branch_takes_no_objective_step_and_reduces_grad_norm():
    torch.manual_seed(0)
    model = MLP()
    forwards = []
    model.register_forward_hook(lambda m, i, o: forwards.append(i[0].shape[0]))
    drawn = []
    half = next(half_batches(n=8))

    def next_half():
        drawn.append(1)
        return half

    log = []
    gradinit(model, next_half, ce_loss, gamma=1e-6, lr=0.05, iters=40, on_step=log.append)
    assert {r["branch"] for r in log} == {"constraint"}
    assert all(r["objective"] is None for r in log)
    assert len(drawn) == 2 * 40  # S only: no S̃ was drawn
    assert forwards == [16] * 40  # one forward per iteration, on S
    norms = [r["grad_norm"] for r in log]
    assert norms[-1] < 0.5 * norms[0]
    assert all(b < a for a, b in zip(norms[:15], norms[1:16]))  # strictly while scales move freely
    assert all(b <= a * (1 + 1e-4) for a, b in zip(norms, norms[1:]))  # then flat at the floors


def test_branch_follows_the_gradient_norm():
    torch.manual_seed(0)
    log = []
    gradinit(MLP(), fixed_batch(), ce_loss, gamma=math.inf, iters=3, on_step=log.append)
    assert [r["branch"] for r in log] == ["objective"] * 3
    assert all(r["objective"] is not None for r in log)


# 8. adam variant --------------------------------------------------------------------------------


def test_adam_variant_uses_l1_norm_and_sign_step():
    grads = [torch.tensor([3.0, -4.0]), torch.tensor([[0.5, 0.0]])]
    assert grad_norm(grads, "adam").item() == pytest.approx(7.5)
    assert grad_norm(grads, "sgd").item() == pytest.approx(math.sqrt(25.25))
    theta = {"a": torch.tensor([1.0, 1.0]), "b": torch.tensor([[1.0, 1.0]])}
    step = simulated_step(theta, dict(zip("ab", grads)), variant="adam", eta=0.1)
    torch.testing.assert_close(step["a"], torch.tensor([0.9, 1.1]))
    torch.testing.assert_close(step["b"], torch.tensor([[0.9, 1.0]]))

    torch.manual_seed(0)
    model = MLP()
    batch = fixed_batch()
    x, y = batch()
    loss = ce_loss(model(torch.cat([x, x])), (None, torch.cat([y, y])))
    l1 = sum(g.abs().sum() for g in torch.autograd.grad(loss, list(model.parameters()))).item()
    log = []
    gradinit(model, batch, ce_loss, variant="adam", gamma=math.inf, iters=1, on_step=log.append)
    assert log[0]["grad_norm"] == pytest.approx(l1, rel=1e-5)
    log.clear()
    gradinit(model, batch, ce_loss, variant="adam", gamma=0.5 * l1, iters=1, on_step=log.append)
    assert log[0]["branch"] == "constraint"


# exclusion, dtype, output -----------------------------------------------------------------------


def test_excluded_tensors_are_not_scaled_but_take_the_simulated_step():
    torch.manual_seed(0)
    model = MLP()
    before = params_of(model)
    scales = gradinit(model, half_batches(), ce_loss, gamma=math.inf, lr=0.1, iters=3,
                      exclude=["net.0.weight"], param_filter=lambda n, p: n != "net.2.bias")
    assert set(scales) == {"net.0.bias", "net.2.weight"}
    torch.testing.assert_close(model.net[0].weight, before["net.0.weight"], rtol=0, atol=0)
    torch.testing.assert_close(model.net[2].bias, before["net.2.bias"], rtol=0, atol=0)
    with pytest.raises(ValueError, match="unknown parameters"):
        gradinit(model, half_batches(), ce_loss, exclude=["nope"], iters=1)
    with pytest.raises(ValueError, match="fp32"):
        gradinit(MLP().half(), half_batches(), ce_loss, iters=1)


def test_write_scales(tmp_path):
    paths = write_scales({"a.weight": 0.5, "b.bias": 1.25}, tmp_path / "s.csv", tmp_path / "s.png")
    assert (tmp_path / "s.csv").read_text().splitlines() == ["parameter,scale", "a.weight,0.5", "b.bias,1.25"]
    pytest.importorskip("matplotlib")
    assert (tmp_path / "s.png").stat().st_size > 1000 and len(paths) == 2


def test_shogi_batch_structure_with_the_real_loss():
    """The documented interface: batch = ((x1, x2), (label, result, eval, has_eval)), dlshogi's loss."""
    from shogitrain.train.loss import policy_value_loss

    class TwoHeads(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(6, 16), nn.Linear(5, 16)
            self.bn = nn.BatchNorm1d(16)
            self.policy = nn.Linear(16, 2187)
            self.value = nn.Linear(16, 1)

        def forward(self, x1, x2):
            h = torch.relu(self.bn(self.a(x1) + self.b(x2)))
            return self.policy(h), self.value(h)

    def halves():
        g = torch.Generator().manual_seed(1)
        while True:
            n = 8
            yield ((torch.randn(n, 6, generator=g), torch.randn(n, 5, generator=g)),
                   (torch.randint(0, 2187, (n,), generator=g), torch.randint(0, 3, (n,), generator=g) / 2,
                    torch.randn(n, generator=g) * 500, torch.rand(n, generator=g) > 0.3))

    torch.manual_seed(0)
    model = TwoHeads()
    log = []
    scales = gradinit(model, halves(), lambda out, b: policy_value_loss(*out, *b[1]).total,
                      gamma=10.0, lr=0.05, iters=4, on_step=log.append)
    assert len(log) == 4 and all(math.isfinite(r["loss"]) for r in log)
    assert set(scales) == {n for n, p in model.named_parameters() if p.norm() > 0}
