"""GradInit (Zhu et al., NeurIPS 2021): learn one scale per parameter tensor before training.

Each selected tensor gets a scale α_j (start 1) chosen so that the first step of the training
optimizer from θ = α·θ0 lowers the loss most while the gradient norm stays ≤ γ: per iteration a
*constraint* step on the gradient norm, or an *objective* step on L(S̃; θ − η·A[g]) differentiated
through the simulated step (``torch.func.functional_call``; parameters are never swapped). The
scales follow GI's RescaleAdam and are folded into the weights at every step, so when
:func:`gradinit` returns the model *is* the new initialisation. Scale-invariant tensors (the raw
weights of WS convs) must be excluded by the caller; zero-norm tensors cannot be scaled. The
objective, defaults and caveats are in docs/algorithms.md, "GradInit"; :func:`gradinit` documents
the batch format.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = [
    "cat_batches",
    "default_inputs_of",
    "grad_norm",
    "gradinit",
    "gradinit_modes",
    "scale_gradient",
    "ScaleAdam",
    "simulated_step",
    "write_scales",
]

Batch = Any


# --------------------------------------------------------------------------------------------
# Batches
# --------------------------------------------------------------------------------------------


def default_inputs_of(batch: Batch) -> tuple:
    """Model inputs of a batch: ``batch["inputs"]`` for a mapping, ``batch[0]`` otherwise."""
    inputs = batch["inputs"] if isinstance(batch, Mapping) else batch[0]
    if isinstance(inputs, Tensor):
        return (inputs,)
    return tuple(inputs)


def cat_batches(a: Batch, b: Batch) -> Batch:
    """Join two batches of the same structure along dim 0 (non-tensor leaves must be equal)."""
    if isinstance(a, Tensor):
        return torch.cat([a, b], dim=0)
    if isinstance(a, Mapping):
        if set(a) != set(b):
            raise ValueError(f"batches have different keys: {sorted(a)} vs {sorted(b)}")
        return {k: cat_batches(a[k], b[k]) for k in a}
    if isinstance(a, (tuple, list)):
        if len(a) != len(b):
            raise ValueError(f"batches have different lengths: {len(a)} vs {len(b)}")
        joined = [cat_batches(x, y) for x, y in zip(a, b)]
        return type(a)(joined) if not hasattr(a, "_fields") else type(a)(*joined)
    if a != b:
        raise ValueError(f"cannot join non-tensor batch entries {a!r} and {b!r}")
    return a


def _half_batch_source(batches: Iterable[Batch] | Callable[[], Batch]) -> Callable[[], Batch]:
    if callable(batches) and not isinstance(batches, Iterable):
        return batches
    state = {"it": iter(batches)}
    restartable = iter(batches) is not batches  # a re-iterable (list, DataLoader), not an iterator

    def next_half() -> Batch:
        try:
            return next(state["it"])
        except StopIteration:
            if not restartable:
                raise ValueError("gradinit: the half-batch iterator ran out") from None
            state["it"] = iter(batches)
            try:
                return next(state["it"])
            except StopIteration:
                raise ValueError("gradinit: no half-batches to draw from") from None

    return next_half


# --------------------------------------------------------------------------------------------
# The pieces of one iteration
# --------------------------------------------------------------------------------------------


def grad_norm(grads: Sequence[Tensor], variant: str = "sgd") -> Tensor:
    """‖g‖₂ over all tensors for the SGD variant, ‖g‖₁ for Adam (the norm of A's dual)."""
    if variant == "adam":
        return sum(g.abs().sum() for g in grads)
    return torch.sqrt(sum((g * g).sum() for g in grads))


def simulated_step(
    params: Mapping[str, Tensor],
    grads: Mapping[str, Tensor],
    *,
    variant: str = "sgd",
    eta: float = 0.1,
    normalize_grad: bool = True,
) -> dict[str, Tensor]:
    """θ' = θ − η·A[g]: A = g/‖g‖₂ (``normalize_grad``) or g for SGD, sign(g) for Adam.

    Differentiable in θ and (for SGD) in g, so a loss at θ' backpropagates into both."""
    if variant == "adam":
        return {n: p - eta * torch.sign(grads[n]).detach() for n, p in params.items()}
    if normalize_grad:
        norm = grad_norm(list(grads.values()), "sgd")
        return {n: p - eta * grads[n] / norm for n, p in params.items()}
    return {n: p - eta * grads[n] for n, p in params.items()}


def scale_gradient(grad: Tensor, param: Tensor, init_norm: Tensor | float) -> Tensor:
    """∂L/∂α for θ = α·θ0: ⟨∇_θ L, θ⟩·‖θ0‖/‖θ‖ (= ⟨∇_θ L, θ0⟩ since θ stays parallel to θ0)."""
    return (grad * param).sum() * init_norm / param.norm()


class ScaleAdam:
    """Adam on one scalar per tensor, folding the scale into the tensor in place (RescaleAdam).

    Constraint and objective steps keep separate first moments and step counts; the second
    moment is shared and bias-corrected with the total number of steps.
    """

    def __init__(
        self,
        params: Sequence[Tensor],
        min_scales: Sequence[float],
        *,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        grad_clip: float = 1.0,
    ):
        if not params:
            raise ValueError("ScaleAdam: no tensors to scale")
        self.params = list(params)
        dev = self.params[0].device
        f64 = torch.float64
        with torch.no_grad():
            self.init_norm = torch.stack([p.detach().norm() for p in self.params]).to(f64)
        self.alpha = torch.ones(len(self.params), dtype=f64, device=dev)
        self.min_scale = torch.tensor(list(min_scales), dtype=f64, device=dev)
        self.lr, self.betas, self.eps, self.grad_clip = lr, betas, eps, grad_clip
        self.exp_avg = {True: torch.zeros_like(self.alpha), False: torch.zeros_like(self.alpha)}
        self.exp_avg_sq = torch.zeros_like(self.alpha)
        self.steps = {True: 0, False: 0}

    @torch.no_grad()
    def step(self, grads: Sequence[Tensor | None], constraint: bool) -> None:
        """One update from ∇_θ of the objective (or of ‖g‖ when ``constraint``); None = no gradient."""
        f64 = torch.float64
        cur_norm = torch.stack([p.norm() for p in self.params]).to(f64)
        dots = torch.stack(
            [(g * p).sum() if g is not None else p.new_zeros(()) for g, p in zip(grads, self.params)]
        ).to(f64)
        active = (self.init_norm > 0) & (cur_norm > 0)
        safe_norm = torch.where(active, cur_norm, torch.ones_like(cur_norm))
        g_alpha = torch.where(active, dots * self.init_norm / safe_norm, torch.zeros_like(dots))
        g_alpha = g_alpha.clamp(-self.grad_clip, self.grad_clip)

        beta1, beta2 = self.betas
        self.steps[constraint] += 1
        self.exp_avg[constraint].mul_(beta1).add_(g_alpha, alpha=1 - beta1)
        self.exp_avg_sq.mul_(beta2).addcmul_(g_alpha, g_alpha, value=1 - beta2)
        bias1 = 1 - beta1 ** self.steps[constraint]
        bias2 = 1 - beta2 ** (self.steps[True] + self.steps[False])
        denom = (self.exp_avg_sq / bias2).sqrt() + self.eps
        update = (self.lr / bias1) * self.exp_avg[constraint] / denom
        new_alpha = torch.maximum(self.alpha - update, self.min_scale)
        self.alpha = torch.where(active, new_alpha, self.alpha)
        factor = torch.where(active, self.alpha * self.init_norm / safe_norm, torch.ones_like(self.alpha))
        for p, f in zip(self.params, factor.unbind()):
            p.mul_(f.to(p.dtype))


@contextmanager
def gradinit_modes(model: nn.Module):
    """Dropout off, BatchNorm on batch statistics without updating running stats; restored on exit."""
    saved = [(m, m.training) for m in model.modules()]
    bns = [(m, m.track_running_stats) for m in model.modules() if isinstance(m, _BatchNorm)]
    try:
        model.eval()
        for m, _ in bns:
            m.train()
            m.track_running_stats = False
        yield model
    finally:
        for m, flag in saved:
            m.training = flag
        for m, flag in bns:
            m.track_running_stats = flag


# --------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------


def _trainable_parameters(model: nn.Module, exclude: set[str]) -> list[tuple[str, Tensor]]:
    """The model's trainable ``(name, parameter)`` pairs, checked: some exist, all fp32/fp64, and
    every excluded name is one of them."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not named:
        raise ValueError("gradinit: the model has no trainable parameters")
    unknown = exclude - {n for n, _ in named}
    if unknown:
        raise ValueError(f"gradinit: exclude names unknown parameters: {sorted(unknown)}")
    for n, p in named:
        if p.dtype not in (torch.float32, torch.float64):
            raise ValueError(f"gradinit runs in fp32; parameter {n} is {p.dtype}")
    return named


def gradinit(
    model: nn.Module,
    batches: Iterable[Batch] | Callable[[], Batch],
    loss_fn: Callable[[Any, Batch], Tensor],
    *,
    inputs_of: Callable[[Batch], Sequence[Any]] = default_inputs_of,
    variant: str = "sgd",
    eta: float = 0.1,
    gamma: float = 1.0,
    lr: float = 1e-3,
    iters: int = 390,
    min_scale: float = 0.01,
    grad_clip: float = 1.0,
    normalize_grad: bool = True,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    exclude: Iterable[str] = (),
    param_filter: Callable[[str, Tensor], bool] | None = None,
    batch_no_overlap: bool = False,
    on_step: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, float]:
    """Run GradInit on ``model`` in place; return the learned scale α per selected tensor name.

    ``batches``: half-batches (B/2 positions each): an iterable (re-iterated when exhausted) or a
    zero-argument callable; a half-batch is a tensor or a tuple / list / dict of tensors cut along
    dim 0 (two halves are joined by :func:`cat_batches`). ``loss_fn(outputs, batch)`` → scalar
    training loss; ``model(*inputs_of(batch))`` → outputs (``batch["inputs"]`` of a mapping, else
    ``batch[0]``). For shogi: ``batch = ((x1, x2), (move_label, result, eval_cp, has_eval))`` and
    ``loss_fn = lambda out, b: policy_value_loss(*out, *b[1]).total``. Runs in fp32, autocast off,
    dropout off, BatchNorm on batch statistics (running buffers untouched). ``variant``: 'sgd' (L2 constraint,
    step g/‖g‖₂ or g) or 'adam' (L1 constraint, sign step). ``gamma``: gradient-norm bound
    (``math.inf`` = none). ``lr``: τ of the scale Adam. ``exclude`` / ``param_filter``: tensors
    not to scale (they still take the simulated step). ``on_step`` receives per iteration
    ``{"iter", "branch": "constraint"|"objective", "grad_norm", "loss", "objective"}`` (floats;
    ``objective`` None on constraint steps). Its length is mostly this signature and docstring; the
    loop body is one GradInit iteration, kept whole to read against the algorithm in docs/algorithms.md.
    """
    if variant not in ("sgd", "adam"):
        raise ValueError(f"gradinit: variant must be 'sgd' or 'adam', got {variant!r}")
    named = _trainable_parameters(model, set(exclude))
    names = [n for n, _ in named]
    params = [p for _, p in named]
    selected = [(n, p) for n, p in named if n not in exclude and (param_filter is None or param_filter(n, p))
                and bool(p.detach().norm() > 0)]
    if not selected:
        return {}
    sel_names = [n for n, _ in selected]
    sel_params = [p for _, p in selected]
    floors = [0.0 if "bias" in n.rsplit(".", 1)[-1] else min_scale for n in sel_names]
    scaler = ScaleAdam(sel_params, floors, lr=lr, betas=betas, eps=eps, grad_clip=grad_clip)
    next_half = _half_batch_source(batches)
    device_type = params[0].device.type

    def loss_at(theta: Mapping[str, Tensor] | None, batch: Batch) -> Tensor:
        inputs = tuple(inputs_of(batch))
        out = model(*inputs) if theta is None else functional_call(model, dict(theta), inputs)
        return loss_fn(out, batch)

    with gradinit_modes(model), torch.autocast(device_type, enabled=False):
        for it in range(iters):
            first, second = next_half(), next_half()
            batch_s = cat_batches(first, second)
            loss = loss_at(None, batch_s)
            grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
            grads = [g if g is not None else torch.zeros_like(p) for g, p in zip(grads, params)]
            gnorm = grad_norm(grads, variant)
            objective = None
            if bool(gnorm > gamma):  # one host sync per iteration: the branch decision
                scale_grads = torch.autograd.grad(gnorm, sel_params, allow_unused=True)
                scaler.step(scale_grads, constraint=True)
            else:
                fresh = next_half()
                batch_t = cat_batches(fresh, next_half()) if batch_no_overlap else cat_batches(first, fresh)
                theta = dict(zip(names, params))
                stepped = simulated_step(
                    theta, dict(zip(names, grads)), variant=variant, eta=eta, normalize_grad=normalize_grad
                )
                objective = loss_at(stepped, batch_t) / eta
                scale_grads = torch.autograd.grad(objective, sel_params, allow_unused=True)
                scaler.step(scale_grads, constraint=False)
            if on_step is not None:
                on_step({
                    "iter": it,
                    "branch": "constraint" if objective is None else "objective",
                    "grad_norm": float(gnorm.detach()),
                    "loss": float(loss.detach()),
                    "objective": None if objective is None else float(objective.detach()),
                })
            del loss, grads, gnorm, scale_grads, objective
    return dict(zip(sel_names, scaler.alpha.tolist()))


# --------------------------------------------------------------------------------------------
# Run-directory output
# --------------------------------------------------------------------------------------------


def write_scales(scales: Mapping[str, float], path_csv: str | Path, path_png: str | Path | None = None) -> list[Path]:
    """Write ``parameter,scale`` rows to a CSV and, when matplotlib is importable and ``path_png``
    is given, a horizontal bar chart (log-scaled x axis, a line at 1). Returns the paths written."""
    written = []
    path_csv = Path(path_csv)
    with path_csv.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["parameter", "scale"])
        for name, value in scales.items():
            w.writerow([name, repr(float(value))])
    written.append(path_csv)
    if path_png is None or not scales:
        return written
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return written
    labels = list(scales)
    values = [max(float(v), 1e-6) for v in scales.values()]
    fig = Figure(figsize=(8, max(2.5, 0.22 * len(labels) + 1)))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.barh(range(len(labels)), values, color="tab:blue")
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xlabel("GradInit scale α (log)")
    ax.set_title("GradInit scales per parameter tensor")
    fig.tight_layout()
    fig.savefig(Path(path_png), dpi=120)
    written.append(Path(path_png))
    return written
