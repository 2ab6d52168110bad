"""dlshogi's bootstrap training loss (DeepLearningShogi, Feb 2021; docs/algorithms.md, "The dlshogi loss").

Per position, from the side to move: value = sigmoid(eval / 756.09); z = result − value + 0.5 (a
per-row weight, no gradient); policy = CE(logits, label)·z — or, with a soft target t (hcpe3 visit
distributions, averaged duplicates), −Σ t log p weighted by the same z; entropy H = −Σ p log p.
loss = policy_weight·policy − β·H + (1 − λ)·BCE(value_logit, result) + λ·BCE(value_logit, value),
β = 0.001, λ = 0.333. A row without an eval takes the result as its eval target (z = 0.5); the
missing value never enters the arithmetic. Every term is computed for logging; only the
switched-on ones (``LossConfig``) enter ``total``, not renormalised.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from shogitrain.config import LossConfig
from shogitrain.names import EVAL_SCALE

__all__ = ["LossTerms", "eval_to_value", "policy_value_loss", "value_targets"]



@dataclass
class LossTerms:
    """The total loss and its parts; all 0-d tensors (``total`` carries the graph)."""

    total: Tensor
    policy_loss: Tensor  # mean(CE · z) (mean CE when z weighting is off), before policy_weight
    result_loss: Tensor  # BCE_logits(value_logit, result)
    eval_loss: Tensor  # BCE_logits(value_logit, value target)
    entropy: Tensor  # mean policy entropy H ≥ 0 (nats); the total gets −β·H

    def as_dict(self) -> dict[str, float]:
        """Floats for a metrics row (one device sync per call)."""
        names = ("total", "policy_loss", "result_loss", "eval_loss", "entropy")
        values = torch.stack([getattr(self, n).detach().float() for n in names]).tolist()
        out = dict(zip(names, values))
        out["loss"] = out.pop("total")
        out["policy_entropy"] = out.pop("entropy")
        return out


def eval_to_value(eval_cp: Tensor, eval_scale: float = EVAL_SCALE) -> Tensor:
    """Engine eval in centipawns → win probability for the side to move."""
    return torch.sigmoid(eval_cp / eval_scale)


def value_targets(
    result: Tensor,
    eval_cp: Tensor,
    has_eval: Tensor | None = None,
    eval_scale: float = EVAL_SCALE,
) -> Tensor:
    """The eval-term target per row: sigmoid(eval/scale), or the result where the eval is missing."""
    result = result.to(torch.promote_types(result.dtype, torch.float32))
    value = eval_to_value(eval_cp.to(result.dtype), eval_scale)
    if has_eval is None:
        return value
    has_eval = has_eval.to(torch.bool).reshape(result.shape)
    return torch.where(has_eval, value, result)


def _flat_value(value_logit: Tensor, n: int) -> Tensor:
    if value_logit.shape not in ((n,), (n, 1)):
        raise ValueError(f"value_logit must have shape [N] or [N, 1] with N={n}, got {list(value_logit.shape)}")
    return value_logit.reshape(n)


def policy_value_loss(
    policy_logits: Tensor,
    value_logit: Tensor,
    move_label: Tensor,
    result: Tensor,
    eval_cp: Tensor,
    has_eval: Tensor | None = None,
    config: LossConfig | None = None,
    policy_target: Tensor | None = None,
) -> LossTerms:
    """dlshogi's loss on one batch.

    policy_logits [N, 2187]; value_logit [N, 1] or [N] (a logit); move_label int64 [N];
    result float [N] (1 win, 0.5 draw, 0 loss for the side to move); eval_cp float [N]
    (centipawns for the side to move); has_eval bool [N] or None (= every row has an eval);
    policy_target float [N, C] or None: a soft target distribution used instead of ``move_label``.
    Computed in at least fp32 whatever the logits' dtype (call it outside autocast or not: the
    upcast is explicit).
    """
    cfg = config if config is not None else LossConfig()
    n = policy_logits.shape[0]
    if policy_logits.ndim != 2:
        raise ValueError(f"policy_logits must be [N, C], got {list(policy_logits.shape)}")
    dtype = torch.promote_types(policy_logits.dtype, torch.float32)
    logits = policy_logits.to(dtype)
    v_logit = _flat_value(value_logit, n).to(dtype)
    result = result.reshape(n).to(dtype)
    value = value_targets(result, eval_cp.reshape(n), has_eval, cfg.eval_scale).to(dtype)

    log_p = F.log_softmax(logits, dim=1)
    if policy_target is None:
        ce = F.nll_loss(log_p, move_label.reshape(n), reduction="none")
    else:
        ce = -(policy_target.to(dtype) * log_p).sum(dim=1)
    if cfg.z_weighting:
        z = (result - value + 0.5).detach()
        policy_loss = (ce * z).mean()
    else:
        policy_loss = ce.mean()
    entropy = -(log_p.exp() * log_p).sum(dim=1).mean()
    result_loss = F.binary_cross_entropy_with_logits(v_logit, result)
    eval_loss = F.binary_cross_entropy_with_logits(v_logit, value)

    total = logits.new_zeros(())
    if cfg.policy:
        total = total + cfg.policy_weight * policy_loss
    if cfg.entropy and cfg.entropy_beta:
        total = total - cfg.entropy_beta * entropy
    if cfg.result:
        total = total + (1.0 - cfg.value_lambda) * result_loss
    if cfg.eval:
        total = total + cfg.value_lambda * eval_loss
    return LossTerms(total, policy_loss, result_loss, eval_loss, entropy)
