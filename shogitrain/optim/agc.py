"""Adaptive Gradient Clipping (AGC, Brock et al. 2021, arXiv 2102.06171), vectorised.

Rule (DM ``optim.py`` / timm ``utils/agc.py``; docs/algorithms.md, "Adaptive gradient clipping
(AGC)"): for every *unit* i (one output row or filter of a weight, or a whole small tensor)

    max_norm_i = λ · max(‖W_i‖, ε)
    if ‖G_i‖ > max_norm_i:   G_i ← G_i · max_norm_i / max(‖G_i‖, 1e-6)

with λ = ``clipping`` (0.01) and ε = ``eps`` (1e-3). DM clips on ``>``, timm keeps on ``<``; they
differ only at exact equality. This module follows DM.

Units. Trailing singleton dimensions are squeezed *before* the rank decides the unit, then

* ≤ 1 dim (scalar, bias, gain vector): the whole tensor is one unit;
* ≥ 2 dims: one unit per index of dim 0 (a Linear row, a conv filter), norm over the rest.

So a WS-conv gain of shape ``(O,1,1,1)`` is clipped as **one vector unit**, as DM clips its ``(O,)``
gain — not element-wise, which is what timm's plain ``ndim`` rule does to ``ScaledStdConv2d.gain``
(docs/algorithms.md, "Units"). A side effect, shared with DM (which squeezes all singleton dims): a
weight whose every dim after the first is 1 (a Linear with ``in_features=1``, a 1×1 conv with one
input channel) is one unit as well.

Vectorisation. :class:`AGC` builds, once, the order of the parameters and their unit layout:
whole-tensor units get their norms from one ``torch._foreach_norm`` call; row units are grouped by
``(rows, cols)`` and each group's norms come from one batched ``vector_norm`` over the stacked
``(N, rows, cols)`` gradients. All norms are concatenated, the scale factors are computed in one go,
and one ``torch._foreach_mul_`` scales every gradient in place. The per-call Python work is
collecting ``p.grad``; there is no per-parameter arithmetic in Python. Norms are taken in (at least)
float32, so fp16/bf16 gradients are measured accurately.

Order of operations (docs/algorithms.md, "Order of operations"): call AGC on the final, unscaled,
all-reduced gradient — after ``scaler.unscale_(opt)`` under AMP, after gradient accumulation, after
DDP's all-reduce — and before ``optimizer.step()``. Weight decay applied inside ``torch.optim.SGD``/``AdamW`` is then
not clipped (as in DM); an L2 term written into the loss would be.

Which parameters: :func:`select_parameters` picks them by the model's declared parameter groups
(``model.parameter_groups()``, docs/internals.md), excluding by default the final layers of both
heads (``policy_final``, ``value_final``) — DM's choice transposed to two heads.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor, nn

__all__ = [
    "AGC",
    "AGC_EXCLUDE_PRESETS",
    "adaptive_clip_",
    "select_parameters",
    "unit_shape",
]

# Named exclusion presets for select_parameters.
AGC_EXCLUDE_PRESETS: dict[str, tuple[str, ...]] = {
    # DM: only the final classifier escapes clipping; here both heads' final layers (weight + bias).
    "final": ("policy_final", "value_final"),
    # The 'blog' variant: the whole policy and value heads are left unclipped.
    "blog": ("policy_head", "value_head"),
}

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


def _as_params(parameters) -> tuple[list[Tensor], list[Tensor] | None]:
    """``(weights, grads or None)`` from a tensor, tensors, ``(name, tensor)`` or ``(weight, grad)`` pairs."""
    if isinstance(parameters, Tensor):
        return [parameters], None
    weights, grads = [], []
    for item in parameters:
        if isinstance(item, Tensor):
            weights.append(item)
        elif isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], Tensor):
            if isinstance(item[0], Tensor):
                if item[0].shape != item[1].shape:
                    raise ValueError(f"weight {tuple(item[0].shape)} and grad {tuple(item[1].shape)} differ in shape")
                weights.append(item[0])
                grads.append(item[1])
            else:
                weights.append(item[1])
        else:
            raise TypeError(f"expected tensors, (name, tensor) or (weight, grad) pairs, got {type(item).__name__}")
    if grads and len(grads) != len(weights):
        raise TypeError("mixing (weight, grad) pairs with other items")
    return weights, (grads or None)


class AGC:
    """Adaptive gradient clipping for a fixed list of parameters; ``agc()`` clips their ``.grad`` in place.

    Build it once after the model (and the selection of parameters to clip) is fixed::

        agc = AGC(select_parameters(model), clipping=0.01, eps=1e-3)
        ...
        scaler.scale(loss).backward()
        scaler.unscale_(opt)          # AMP: measure norms on unscaled gradients
        agc()
        scaler.step(opt)

    Parameters whose ``.grad`` is None at call time are skipped. The unit layout is computed from the
    shapes at construction; parameters must keep their shapes.
    """

    def __init__(self, parameters, clipping: float = 0.01, eps: float = 1e-3):
        if clipping <= 0:
            raise ValueError(f"clipping must be > 0, got {clipping}")
        if eps < 0:
            raise ValueError(f"eps must be >= 0, got {eps}")
        self.clipping = float(clipping)
        self.eps = float(eps)
        params, _ = _as_params(parameters)
        seen: set[int] = set()
        unique = []
        for p in params:  # a parameter listed twice would be clipped twice
            if id(p) not in seen:
                seen.add(id(p))
                unique.append(p)
        self.params: list[Tensor] = unique

        devices = {p.device for p in unique}
        if len(devices) > 1:
            raise ValueError(f"AGC needs all parameters on one device, got {sorted(map(str, devices))}")
        # Norms in float64 if any parameter is float64, else float32 (also for fp16/bf16 tensors).
        self._norm_dtype = torch.float64 if any(p.dtype == torch.float64 for p in unique) else torch.float32

        # Whole-tensor units first (one _foreach_norm call), then row units grouped by full shape and
        # dtype so that each group stacks into one (N, *shape) tensor with one batched norm.
        whole: list[Tensor] = []
        row_groups: dict[tuple, list[Tensor]] = {}
        for p in unique:
            if unit_shape(p.shape)[0] == 1:
                whole.append(p)
            else:
                row_groups.setdefault((tuple(p.shape), p.dtype), []).append(p)
        self._whole = whole
        self._row_groups = [(tuple(range(2, len(shape) + 1)), ps) for (shape, _), ps in row_groups.items()]
        self._order: list[Tensor] = whole + [p for _, ps in self._row_groups for p in ps]
        position = {id(p): i for i, p in enumerate(unique)}
        self._perm = [position[id(p)] for p in self._order]  # self._order[j] is self.params[_perm[j]]

        # One flat buffer of per-unit factors; each parameter gets a fixed broadcastable view of it.
        units = [unit_shape(p.shape)[0] for p in self._order]
        device = unique[0].device if unique else torch.device("cpu")
        self._factor = torch.ones(sum(units), dtype=self._norm_dtype, device=device)
        self._factor_views = [
            f.view((1,) * p.dim() if n == 1 else (n,) + (1,) * (p.dim() - 1))
            for f, n, p in zip(self._factor.split(units), units, self._order)
        ]

    def __repr__(self) -> str:
        return (f"AGC(params={len(self.params)}, clipping={self.clipping}, eps={self.eps}, "
                f"whole_units={len(self._whole)}, row_groups={len(self._row_groups)})")

    @torch.no_grad()
    def __call__(self, grads: Sequence[Tensor] | None = None) -> None:
        """Clip every ``p.grad`` in place — or, given ``grads`` (one per parameter, in ``self.params``
        order), clip those tensors in place instead."""
        if not self._order:
            return
        if grads is None:
            grads = [p.grad for p in self._order]
        else:
            if len(grads) != len(self.params):
                raise ValueError(f"got {len(grads)} gradients for {len(self.params)} parameters")
            grads = [grads[i] for i in self._perm]
        if any(g is None for g in grads):
            present = [(p, g) for p, g in zip(self._order, grads) if g is not None]
            if present:  # slow path: rebuild the layout for the gradients that exist
                AGC([p for p, _ in present], self.clipping, self.eps)([g for _, g in present])
            return
        dtype = self._norm_dtype
        n_whole = len(self._whole)
        g_norms: list[Tensor] = []
        w_norms: list[Tensor] = []
        if n_whole:
            g_norms.append(torch.stack(torch._foreach_norm(grads[:n_whole], 2, dtype=dtype)))
            w_norms.append(torch.stack(torch._foreach_norm(self._whole, 2, dtype=dtype)))
        i = n_whole
        for dims, ps in self._row_groups:
            g = torch.stack(grads[i:i + len(ps)])
            w = torch.stack(ps)
            g_norms.append(torch.linalg.vector_norm(g, dim=dims, dtype=dtype).flatten())
            w_norms.append(torch.linalg.vector_norm(w, dim=dims, dtype=dtype).flatten())
            i += len(ps)
        g_norm = torch.cat(g_norms)
        w_norm = torch.cat(w_norms)
        max_norm = w_norm.clamp_(min=self.eps).mul_(self.clipping)  # λ·max(‖W‖, ε)
        clipped = max_norm / g_norm.clamp(min=_GRAD_NORM_FLOOR)
        torch.where(g_norm > max_norm, clipped, torch.ones_like(clipped), out=self._factor)
        torch._foreach_mul_(grads, self._factor_views)


def adaptive_clip_(parameters_or_grads, clipping: float = 0.01, eps: float = 1e-3) -> None:
    """Clip gradients in place by AGC (one-shot form of :class:`AGC`).

    ``parameters_or_grads``: a parameter, an iterable of parameters, or ``(name, parameter)`` pairs
    as returned by :func:`select_parameters` — their ``.grad`` is clipped; or ``(weight, grad)``
    pairs — each ``grad`` tensor is clipped against its ``weight``. Builds the unit layout on every
    call; in a training loop build an :class:`AGC` once instead.
    """
    weights, grads = _as_params(parameters_or_grads)
    AGC(weights, clipping=clipping, eps=eps)(grads)


def select_parameters(
    model: nn.Module,
    exclude_groups: str | Iterable[str] = AGC_EXCLUDE_PRESETS["final"],
) -> list[tuple[str, nn.Parameter]]:
    """The ``(name, parameter)`` pairs of ``model`` that AGC clips, in ``named_parameters()`` order.

    ``exclude_groups``: parameter-group names from ``model.parameter_groups()`` whose parameters are
    *not* clipped — by default the final layers of both heads (``policy_final``, ``value_final``),
    or a preset name from :data:`AGC_EXCLUDE_PRESETS` (``"final"``, ``"blog"`` = whole heads).
    An unknown group name raises ValueError naming it. Parameters with ``requires_grad=False`` are
    left out.
    """
    if isinstance(exclude_groups, str):
        if exclude_groups not in AGC_EXCLUDE_PRESETS:
            raise ValueError(
                f"unknown AGC exclusion preset {exclude_groups!r}; presets: {sorted(AGC_EXCLUDE_PRESETS)} "
                "(or pass a list of group names)")
        exclude_groups = AGC_EXCLUDE_PRESETS[exclude_groups]
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
