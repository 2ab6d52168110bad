"""Stochastic preconditioned nonlinear conjugate gradient (NLCG), after apple/ml-ncg.

Adya, Palakkode, Tuzel, arXiv 1812.02886; the reference is the official TF1 code ``apple/ml-ncg``
(``ncg_core_tfop.py``). One step: gradient (+ L2) → diagonal BFGS preconditioner M (clamped) →
preconditioned residual z = M⊙(−g) → β (FR or PR+, divided once by ρ_old, clamped to [0, 1]) →
direction d = z + β·d_old → a loss-driven line search on a global ``base_lr`` that may take back
part of the previous step → θ ← θ + Δθ. Every inner product is global: the parameters live in one
flat vector per buffer (six of them, the size of the model), identical on every replica. The
formulas, the reference's semantics where its code is ambiguous, and the line-search table are in
docs/algorithms.md, "NLCG"; :class:`NLCG` documents the calling convention (the step needs the
all-reduced loss).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.optim import Optimizer

__all__ = [
    "NLCG",
    "LineSearchRule",
    "REFERENCE_BANDS",
    "LINE_SEARCH_RULES",
    "bfgs_diag_update",
    "cg_beta",
    "line_search_decision",
    "revert_step",
]

EPS = 1e-8  # the reference's ε in BFGS, β and M

# (threshold on ratio − 1 in units of T, base_lr factor, fraction of the previous step removed),
# checked top-down with "ratio − 1 > threshold·T" (ncg_core_tfop.py online_line_search).
REFERENCE_BANDS: tuple[tuple[float, float, float], ...] = (
    (0.15, 0.5, 0.9),
    (0.125, 0.7, 0.7),
    (0.10, 0.8, 0.5),
    (0.075, 0.9, 0.3),
    (0.05, 0.95, 0.2),
    (0.025, 0.975, 0.1),
    (0.01, 1.0, 0.1),
)


@dataclass(frozen=True)
class LineSearchRule:
    """A banded line-search rule.

    ``bands``: ``(threshold, factor, removal)`` rows, highest threshold first; the first row with
    ``ratio − 1 > threshold·T`` applies. ``ratio − 1 < increase_below·T`` multiplies base_lr by
    ``increase_factor`` (None: 1.05 in 'step' mode, 1.02 in 'online' mode, as the reference).
    Anything else leaves base_lr unchanged and removes nothing.
    """

    bands: tuple[tuple[float, float, float], ...]
    increase_below: float = 0.01
    increase_factor: float | None = None

    def __post_init__(self):
        thresholds = [b[0] for b in self.bands]
        if thresholds != sorted(thresholds, reverse=True):
            raise ValueError(f"line-search bands must be sorted by decreasing threshold, got {thresholds}")
        for thr, factor, removal in self.bands:
            if not (0.0 < factor <= 1.0) or not (0.0 <= removal < 1.0):
                raise ValueError(f"band ({thr}, {factor}, {removal}): need 0 < factor <= 1 and 0 <= removal < 1")


LINE_SEARCH_RULES: dict[str, LineSearchRule] = {
    "reference": LineSearchRule(REFERENCE_BANDS),
    # "loss up > 2 % → −2.5 %; up < 1 % → +2.5 %, capped at 1.0" (secondary descriptions of the paper).
    "simple": LineSearchRule(((0.02, 0.975, 0.0),), increase_below=0.01, increase_factor=1.025),
}


# --------------------------------------------------------------------------------------------------
# Pure pieces (used by NLCG.step and tested on their own)


def cg_beta(rz_new: Tensor, rz_mid: Tensor | None, rho_old: Tensor,
            bounds: tuple[float, float] = (0.0, 1.0)) -> Tensor:
    """β of the reference: ``clamp((rᵀz − [rᵀz_old]) / (ρ_old + 1e-8), *bounds)``.

    ``rz_mid`` = rᵀz_old for Polak–Ribière, None for Fletcher–Reeves. One division (see module doc).
    """
    num = rz_new if rz_mid is None else rz_new - rz_mid
    return (num / (rho_old + EPS)).clamp(bounds[0], bounds[1])


def bfgs_diag_update(h: Tensor, y: Tensor, s: Tensor) -> Tensor:
    """One diagonal BFGS update of h ≈ diag(Hessian) (reference ``compute_bfgs_preconditioner_cond2``).

    Returns ``|h − ((h⊙s)² + ε)/(sᵀhs + ε) + (y² + ε)/(yᵀs + ε)|``, or ``h`` unchanged when
    ``yᵀs < 1e-8`` or ``sᵀhs < 1e-8``. Decided on the device (no host sync). Global dots over the
    flat vectors.
    """
    hs = h * s
    ys = torch.dot(y, s)
    shs = torch.dot(s, hs)
    new = h - (hs.square_().add_(EPS)).div_(shs + EPS) + (y.square().add_(EPS)).div_(ys + EPS)
    new.abs_()
    keep = (ys < EPS) | (shs < EPS)
    return torch.where(keep, h, new)


def line_search_decision(ratio: float, rule: LineSearchRule = LINE_SEARCH_RULES["reference"],
                         mode: str = "step", threshold: float = 1.0) -> tuple[float, float, str]:
    """``(base_lr factor, removal fraction, kind)`` for a loss ratio; kind is 'increase', 'band' or 'hold'."""
    excess = ratio - 1.0
    if excess < rule.increase_below * threshold:
        inc = rule.increase_factor
        if inc is None:
            inc = 1.02 if mode == "online" else 1.05
        return inc, 0.0, "increase"
    for thr, factor, removal in rule.bands:
        if excess > thr * threshold:
            return factor, removal, "band"
    return 1.0, 0.0, "hold"


def revert_step(d: Tensor, t_new: float, prev_step: Tensor, removal: float, out: Tensor | None = None) -> Tensor:
    """The step applied after a band hit: ``(1 − ρ)·t_new·d − ρ·Δθ_prev`` (Δθ_prev = t_old·d_prev)."""
    if out is None:
        out = torch.empty_like(d)
    torch.mul(prev_step, -removal, out=out)
    return out.add_(d, alpha=(1.0 - removal) * t_new)


# --------------------------------------------------------------------------------------------------


class NLCG(Optimizer):
    """Stochastic preconditioned nonlinear CG (apple/ml-ncg semantics; see the module docstring).

    Calling convention: ``loss.backward(); opt.step(loss)`` — the line search needs the loss (a
    float or a 0-d tensor; under DDP all-reduce it first, so every rank computes the same
    ``base_lr``). Under AMP ``scaler.step(opt, loss=loss)`` (GradScaler forwards the keyword and
    skips the call on inf gradients); ``opt.step(loss, skip=True)`` is an explicit no-op. A
    non-finite loss skips the step without changing any state and counts it in
    ``stats()['skipped']``. Buffers: h, g_old, z, d, Δθ_prev and a gradient workspace, each the
    size of the model, float32 (float64 when a parameter is).

    Args:
        params: parameters or param groups (each group may set ``lr`` and ``weight_decay``).
        lr: scheduled learning rate; the step is ``lr · base_lr · d``. The reference's README uses
            0.8–1.6 at batch 1024 with warmup.
        weight_decay: L2 coefficient added to the gradient (``g + wd·θ``), per group.
        update_rule: ``'FR'`` (default) or ``'PR'``.
        restart_every: β = 0 every K steps (0 = never).
        precond: ``'bfgs'`` (default), ``'none'``, or a sequence of tensors — a fixed diagonal M,
            one per parameter in param-group order.
        precond_clamp: ``(min, max)`` of M = 1/(h + 1e-8) for 'bfgs'; None disables the clamp.
        precond_reset_every: reset h to 1 every K steps (0 = only at step 0).
        line_search: ``'step'`` (default), ``'online'`` or ``'none'``.
        line_search_period: comparison period of 'step' mode (5).
        line_search_threshold: T, the scale of the bands (1.0).
        line_search_bands: ``'reference'``, ``'simple'``, or a :class:`LineSearchRule`.
        base_lr_bounds: floor and cap of base_lr (1e-4, 1.0).
        loss_ema_beta: 0.7.
        beta_bounds: clamp of β (0, 1); ``(0, inf)`` gives plain PR+/FR.
        decoupled_weight_decay: shrink θ by ``1 − lr·wd`` instead of adding ``wd·θ`` to g.
        step_size_hook: ``hook(optimizer, direction) -> float`` overriding ``t = lr·base_lr`` for all
            groups; ``direction`` is the list of per-parameter views of d (e.g. an exact line search
            in tests). The line search still updates base_lr.
    """

    def __init__(
        self,
        params,
        lr: float = 0.1,
        weight_decay: float = 0.0,
        *,
        update_rule: str = "FR",
        restart_every: int = 0,
        precond: str | Sequence[Tensor] = "bfgs",
        precond_clamp: tuple[float, float] | None = (1e-2, 1e2),
        precond_reset_every: int = 0,
        line_search: str = "step",
        line_search_period: int = 5,
        line_search_threshold: float = 1.0,
        line_search_bands: str | LineSearchRule = "reference",
        base_lr_bounds: tuple[float, float] = (1e-4, 1.0),
        loss_ema_beta: float = 0.7,
        beta_bounds: tuple[float, float] = (0.0, 1.0),
        decoupled_weight_decay: bool = False,
        step_size_hook: Callable[[NLCG, list[Tensor]], float] | None = None,
    ):
        if lr < 0:
            raise ValueError(f"lr must be >= 0, got {lr}")
        if weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
        rule = update_rule.upper()
        if rule not in ("FR", "PR"):
            raise ValueError(f"update_rule must be 'FR' or 'PR', got {update_rule!r}")
        mode = line_search.lower()
        if mode not in ("step", "online", "none"):
            raise ValueError(f"line_search must be 'step', 'online' or 'none', got {line_search!r}")
        if isinstance(line_search_bands, str):
            if line_search_bands not in LINE_SEARCH_RULES:
                raise ValueError(f"line_search_bands must be one of {sorted(LINE_SEARCH_RULES)} "
                                 f"or a LineSearchRule, got {line_search_bands!r}")
            line_search_bands = LINE_SEARCH_RULES[line_search_bands]
        if line_search_period < 1:
            raise ValueError(f"line_search_period must be >= 1, got {line_search_period}")
        fixed_m = None
        if isinstance(precond, str):
            if precond.lower() not in ("bfgs", "none"):
                raise ValueError(f"precond must be 'bfgs', 'none' or a list of tensors, got {precond!r}")
            precond = precond.lower()
        else:
            fixed_m = [torch.as_tensor(m) for m in precond]
            precond = "fixed"
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay))
        self.update_rule = rule
        self.restart_every = int(restart_every)
        self.precond = precond
        self.precond_clamp = precond_clamp
        self.precond_reset_every = int(precond_reset_every)
        self.line_search = mode
        self.line_search_period = int(line_search_period)
        self.line_search_threshold = float(line_search_threshold)
        self.line_search_rule = line_search_bands
        self.base_lr_bounds = (float(base_lr_bounds[0]), float(base_lr_bounds[1]))
        self.loss_ema_beta = float(loss_ema_beta)
        self.beta_bounds = (float(beta_bounds[0]), float(beta_bounds[1]))
        self.decoupled_weight_decay = bool(decoupled_weight_decay)
        self.step_size_hook = step_size_hook
        self._fixed_m_list = fixed_m
        self._layout_built = False
        self._g: dict = self._fresh_global()

    # ---------------------------------------------------------------- layout and state

    def _fresh_global(self) -> dict:
        return {"step": 0, "base_lr": 1.0, "loss_ema": None, "loss_ema_old": None, "skipped": 0,
                "rho": None, "beta": None, "ratio": None, "removal": 0.0, "buffers": {}}

    def add_param_group(self, param_group: dict) -> None:
        if getattr(self, "_layout_built", False):
            raise RuntimeError("NLCG keeps global flat buffers; add all param groups before the first step")
        super().add_param_group(param_group)

    def _build_layout(self) -> None:
        params = [p for group in self.param_groups for p in group["params"]]
        if not params:
            raise ValueError("NLCG got no parameters")
        devices = {p.device for p in params}
        if len(devices) > 1:
            raise ValueError(f"NLCG needs all parameters on one device, got {sorted(map(str, devices))}")
        self._params = params
        self._device = params[0].device
        self._dtype = torch.float64 if any(p.dtype == torch.float64 for p in params) else torch.float32
        self._sizes = [p.numel() for p in params]
        self._numel = sum(self._sizes)
        self._group_slices = []
        offset = 0
        for group in self.param_groups:
            n = sum(p.numel() for p in group["params"])
            self._group_slices.append((offset, offset + n, len(group["params"])))
            offset += n
        self._fixed_m = None
        if self._fixed_m_list is not None:
            if [tuple(m.shape) for m in self._fixed_m_list] != [tuple(p.shape) for p in params]:
                raise ValueError("precond tensors must match the parameters' shapes, in param-group order")
            self._fixed_m = torch.cat([m.reshape(-1) for m in self._fixed_m_list]).to(self._device, self._dtype)
        self._layout_built = True

    def _views(self, flat: Tensor) -> list[Tensor]:
        return [v.view(p.shape) for v, p in zip(flat.split(self._sizes), self._params)]

    def _buffer(self, name: str, fill: float | None = 0.0) -> Tensor:
        bufs = self._g["buffers"]
        if name not in bufs:
            bufs[name] = torch.full((self._numel,), fill, dtype=self._dtype, device=self._device)
        return bufs[name]

    # ---------------------------------------------------------------- step

    @torch.no_grad()
    def step(self, loss=None, *, skip: bool = False):
        """One NLCG step. ``loss``: the (all-reduced) scalar loss of this step's gradient, or a closure.

        ``skip=True`` is a no-op (nothing in the state changes) — e.g. when AMP found inf gradients and
        the caller drives the step itself. Returns ``loss``.
        """
        if callable(loss):
            with torch.enable_grad():
                loss = loss()
        if skip:
            return loss
        if loss is None and self.line_search != "none":
            raise ValueError("NLCG.step needs the loss for its line search: opt.step(loss) or "
                             "scaler.step(opt, loss=loss); or build it with line_search='none'")
        loss_value = None if loss is None else float(loss)
        if loss_value is not None and not math.isfinite(loss_value):
            self._g["skipped"] += 1
            return loss
        if not self._layout_built:
            self._build_layout()
        st = self._g
        k = st["step"]
        params = self._params

        g = self._gradient()  # 0. gradient (+ L2) into the flat workspace g
        z = self._preconditioner(g, k)  # 1. preconditioner M, written into the workspace z

        # 2.–4. residual, β and direction
        z.mul_(g).neg_()  # z = M⊙r with r = −g
        rz = torch.dot(g, z).neg_()  # ρ = rᵀz
        d = self._buffer("d")
        restart = k == 0 or (self.restart_every > 0 and k % self.restart_every == 0)
        if restart:
            beta = torch.zeros((), dtype=self._dtype, device=self._device)
            d.copy_(z)
        else:
            rz_mid = None
            if self.update_rule == "PR":
                rz_mid = torch.dot(g, self._buffer("z_old")).neg_()  # rᵀz_old
            beta = cg_beta(rz, rz_mid, st["rho"], self.beta_bounds)
            d.mul_(beta).add_(z)
        if self.update_rule == "PR":
            self._buffer("z_old").copy_(z)
        st["rho"], st["beta"] = rz, beta

        # 5. line search on base_lr
        removal = self._line_search(loss_value, k)

        # 6. step Δθ (stored) and update
        step = self._buffer("step")
        t_override = None
        if self.step_size_hook is not None:
            t_override = float(self.step_size_hook(self, self._views(d)))
        for group, (a, b, n) in zip(self.param_groups, self._group_slices):
            t = group["lr"] * st["base_lr"] if t_override is None else t_override
            if removal > 0.0 and k > 0:
                revert_step(d[a:b], t, step[a:b], removal, out=step[a:b])
            else:
                torch.mul(d[a:b], t, out=step[a:b])
        if self.decoupled_weight_decay:
            for group in self.param_groups:
                if group["weight_decay"] != 0:
                    torch._foreach_mul_(group["params"], 1.0 - group["lr"] * group["weight_decay"])
        torch._foreach_add_(params, self._views(step))
        st["step"] = k + 1
        return loss

    def _gradient(self) -> Tensor:
        """The flat gradient workspace, filled with every parameter's gradient (zeros where it has
        none) plus the L2 term when weight decay is not decoupled."""
        g = self._buffer("grad")
        g_views = self._views(g)
        grads = [p.grad for p in self._params]
        if any(x is None for x in grads):
            for view, x in zip(g_views, grads):
                if x is None:
                    view.zero_()
                else:
                    view.copy_(x)
        else:
            torch._foreach_copy_(g_views, grads)
        if not self.decoupled_weight_decay:
            i = 0
            for group in self.param_groups:
                n = len(group["params"])
                if group["weight_decay"] != 0:
                    torch._foreach_add_(g_views[i:i + n], group["params"], alpha=group["weight_decay"])
                i += n
        return g

    def _preconditioner(self, g: Tensor, k: int) -> Tensor:
        """The diagonal preconditioner M of step ``k`` in the workspace z (BFGS-diagonal, fixed or none)."""
        z = self._buffer("z")
        if self.precond == "bfgs":
            h = self._buffer("h", 1.0)
            g_old = self._buffer("g_old")
            reset = k == 0 or (self.precond_reset_every > 0 and k % self.precond_reset_every == 0)
            if reset:
                h.fill_(1.0)
            else:
                y = g_old.neg_().add_(g)  # y = g − g_old, in g_old's storage
                h.copy_(bfgs_diag_update(h, y, self._buffer("step")))
            torch.add(h, EPS, out=z).reciprocal_()
            if self.precond_clamp is not None:
                z.clamp_(self.precond_clamp[0], self.precond_clamp[1])
            # keep g for the next y: swap the workspaces instead of copying
            self._g["buffers"]["grad"], self._g["buffers"]["g_old"] = g_old, g
        elif self.precond == "fixed":
            z.copy_(self._fixed_m)
        else:
            z.fill_(1.0)
        return z

    def _line_search(self, loss: float | None, k: int) -> float:
        """Update the loss EMA and base_lr; return the fraction of the previous step to remove."""
        st = self._g
        st["ratio"], st["removal"] = None, 0.0
        if self.line_search == "none":
            return 0.0
        if k == 0 or st["loss_ema"] is None:
            st["loss_ema"] = st["loss_ema_old"] = loss
            return 0.0
        st["loss_ema"] = self.loss_ema_beta * st["loss_ema"] + (1.0 - self.loss_ema_beta) * loss
        if self.line_search == "online":
            num, den = loss, st["loss_ema"]
        else:
            if k % self.line_search_period != 0:
                return 0.0
            num, den = st["loss_ema"], st["loss_ema_old"]
            st["loss_ema_old"] = st["loss_ema"]
        if not (den > 0.0 and math.isfinite(den)):  # the rule assumes a positive loss
            return 0.0
        ratio = num / den
        factor, removal, _ = line_search_decision(ratio, self.line_search_rule, self.line_search,
                                                  self.line_search_threshold)
        lo, hi = self.base_lr_bounds
        base = st["base_lr"] * factor
        st["base_lr"] = min(base, hi) if factor > 1.0 else max(base, lo)
        st["ratio"], st["removal"] = ratio, removal
        return removal

    # ---------------------------------------------------------------- introspection and state

    @property
    def base_lr(self) -> float:
        """The line search's multiplier of the scheduled lr (starts at 1)."""
        return self._g["base_lr"]

    def stats(self) -> dict:
        """Scalars for logging: step, base_lr, beta, rho, last ratio and removal, skipped steps (β and ρ sync)."""
        st = self._g
        return {
            "step": st["step"], "base_lr": st["base_lr"], "skipped": st["skipped"],
            "beta": None if st["beta"] is None else float(st["beta"]),
            "rho": None if st["rho"] is None else float(st["rho"]),
            "ratio": st["ratio"], "removal": st["removal"],
        }

    def state_dict(self) -> dict:
        """torch's state dict (param groups; per-parameter ``state`` stays empty) plus ``"nlcg"``: the
        global scalars and the flat buffers (one tensor each, all parameters in param-group order)."""
        sd = super().state_dict()
        st = self._g
        sd["nlcg"] = {key: value for key, value in st.items() if key != "buffers"}
        sd["nlcg"]["buffers"] = {name: buf.clone() for name, buf in st["buffers"].items() if name not in ("grad", "z")}
        return sd

    def load_state_dict(self, state_dict: dict) -> None:
        state_dict = dict(state_dict)
        saved = state_dict.pop("nlcg", None)
        if saved is None:
            raise ValueError("not an NLCG state dict (no 'nlcg' entry)")
        super().load_state_dict(state_dict)
        if not self._layout_built:
            self._build_layout()
        st = self._fresh_global()
        st.update({key: value for key, value in saved.items() if key != "buffers"})
        for key in ("rho", "beta"):
            if st[key] is not None:
                st[key] = torch.as_tensor(st[key]).to(self._device, self._dtype)
        for name, buf in saved["buffers"].items():
            if buf.numel() != self._numel:
                raise ValueError(f"NLCG buffer {name!r} has {buf.numel()} elements, the parameters {self._numel}")
            st["buffers"][name] = buf.to(self._device, self._dtype, copy=True)
        self._g = st
