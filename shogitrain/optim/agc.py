"""Adaptive Gradient Clipping (AGC, Brock et al. 2021, arXiv 2102.06171), vectorised.

For every unit i (an output row or filter of a weight, or a whole small tensor):
``max_norm_i = λ·max(‖W_i‖, ε)``; if ``‖G_i‖ > max_norm_i``, ``G_i ← G_i·max_norm_i / max(‖G_i‖, 1e-6)``
(λ = ``clipping`` 0.01, ε = ``eps`` 1e-3; DeepMind's rule). Trailing singleton dimensions are
squeezed before the rank decides the unit, so a WS-conv gain of shape (O,1,1,1) is clipped as one
vector unit, as DeepMind clips its (O,) gain — not element by element, which is what a plain
``ndim`` rule (timm) does to it. Norms are taken in at least float32, a few batched calls per
step. Call it on the final gradients: after ``scaler.unscale_`` under AMP and after DDP's all-
reduce, before ``optimizer.step()``. Which parameters: :func:`select_parameters`, by the model's
declared groups. docs/algorithms.md ("Adaptive gradient clipping") has the derivation and traps.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor, nn

__all__ = ["AGC", "select_parameters", "unit_shape"]

_GRAD_NORM_FLOOR = 1e-6  # max(‖G‖, 1e-6) in the denominator (DM and timm)


def unit_shape(shape: Sequence[int]) -> tuple[int, int]:
    """``(rows, cols)`` of the unit layout of a tensor of ``shape``: ``rows`` units of ``cols`` elements.

    Trailing singleton dims are squeezed first; ≤ 1 remaining dim → ``(1, numel)`` (one unit),
    otherwise ``(shape[0], numel // shape[0])`` (one unit per output row / filter).
    """
    dims = list(shape)
    while dims and dims[-1] == 1:
        dims.pop()
    numel = 1
    for d in shape:
        numel *= d
    if len(dims) <= 1:
        return 1, numel
    return dims[0], numel // dims[0]


class AGC:
    """Adaptive gradient clipping of a fixed list of parameters; ``agc()`` clips their ``.grad`` in place.

    Build it once, when the model and the parameters to clip are fixed
    (``AGC([p for _, p in select_parameters(model)])``). Parameters whose ``.grad`` is None at call
    time are skipped (nf-blog's conv1 never gets one). Parameters must keep their shapes.
    """

    def __init__(self, parameters, clipping: float = 0.01, eps: float = 1e-3):
        if clipping <= 0:
            raise ValueError(f"clipping must be > 0, got {clipping}")
        if eps < 0:
            raise ValueError(f"eps must be >= 0, got {eps}")
        self.clipping = float(clipping)
        self.eps = float(eps)
        self.params: list[Tensor] = list({id(p): p for p in parameters}.values())  # each clipped once
        devices = {p.device for p in self.params}
        if len(devices) > 1:
            raise ValueError(f"AGC needs all parameters on one device, got {sorted(map(str, devices))}")
        # Norms in float64 if any parameter is float64, else float32 (also for fp16/bf16 tensors).
        self._norm_dtype = torch.float64 if any(p.dtype == torch.float64 for p in self.params) else torch.float32
        # Whole-tensor units get their norms from one _foreach_norm; row units are grouped by shape
        # and dtype, each group stacked into one (N, *shape) tensor with one batched norm.
        self._whole = [p for p in self.params if unit_shape(p.shape)[0] == 1]
        groups: dict[tuple, list[Tensor]] = {}
        for p in self.params:
            if unit_shape(p.shape)[0] > 1:
                groups.setdefault((tuple(p.shape), p.dtype), []).append(p)
        self._row_groups = list(groups.values())

    def __repr__(self) -> str:
        return (f"AGC(params={len(self.params)}, clipping={self.clipping}, eps={self.eps}, "
                f"whole_units={len(self._whole)}, row_groups={len(self._row_groups)})")

    @torch.no_grad()
    def __call__(self) -> None:
        dtype = self._norm_dtype
        whole = [p for p in self._whole if p.grad is not None]
        groups = [ps for ps in ([p for p in group if p.grad is not None] for group in self._row_groups) if ps]
        order = whole + [p for ps in groups for p in ps]
        if not order:
            return
        g_norms: list[Tensor] = []
        w_norms: list[Tensor] = []
        if whole:
            g_norms.append(torch.stack(torch._foreach_norm([p.grad for p in whole], 2, dtype=dtype)))
            w_norms.append(torch.stack(torch._foreach_norm(whole, 2, dtype=dtype)))
        for ps in groups:
            dims = tuple(range(2, ps[0].dim() + 1))
            g_norms.append(torch.linalg.vector_norm(torch.stack([p.grad for p in ps]), dim=dims, dtype=dtype).flatten())
            w_norms.append(torch.linalg.vector_norm(torch.stack(ps), dim=dims, dtype=dtype).flatten())
        g_norm = torch.cat(g_norms)
        max_norm = torch.cat(w_norms).clamp_(min=self.eps).mul_(self.clipping)  # λ·max(‖W‖, ε)
        clipped = max_norm / g_norm.clamp(min=_GRAD_NORM_FLOOR)
        factor = torch.where(g_norm > max_norm, clipped, torch.ones_like(clipped))
        units = [unit_shape(p.shape)[0] for p in order]
        views = [f.view((1,) * p.dim() if n == 1 else (n,) + (1,) * (p.dim() - 1))
                 for f, n, p in zip(factor.split(units), units, order)]
        torch._foreach_mul_([p.grad for p in order], views)


def select_parameters(model: nn.Module, exclude_groups: Iterable[str] = ("policy_final", "value_final"),
                      ) -> list[tuple[str, nn.Parameter]]:
    """The ``(name, parameter)`` pairs of ``model`` that AGC clips, in ``named_parameters()`` order.

    ``exclude_groups``: parameter-group names from ``model.parameter_groups()`` whose parameters are
    *not* clipped — by default the final layers of both heads. An unknown group name raises
    ValueError naming it. Parameters with ``requires_grad=False`` are left out.
    """
    exclude_groups = list(exclude_groups)
    groups_fn = getattr(model, "parameter_groups", None)
    if groups_fn is None:
        if exclude_groups:
            raise ValueError(f"{type(model).__name__} has no parameter_groups(); cannot exclude {exclude_groups}")
        groups: dict[str, list[str]] = {}
    else:
        groups = groups_fn()
    unknown = [g for g in exclude_groups if g not in groups]
    if unknown:
        raise ValueError(f"unknown parameter group(s) {unknown}; the model declares {sorted(groups)}")
    excluded = {name for g in exclude_groups for name in groups[g]}
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad and n not in excluded]
