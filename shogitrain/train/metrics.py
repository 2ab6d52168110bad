"""Evaluation metrics: dlshogi's test losses and accuracies plus calibration, per position and per stratum.

:class:`MetricAccumulator` sums per-position statistics over batches (float64, on the batch's
device) and turns them into means — over all positions and per ply bucket and rating band — so the
answer does not depend on how a split is cut into batches. Pure tensor code, no data or model I/O.
docs/metrics.md defines every metric and stratum.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from shogitrain.names import EVAL_SCALE, VALUE_LAMBDA
from shogitrain.train.loss import value_targets

__all__ = ["METRIC_NAMES", "PLY_BUCKETS", "RATING_BANDS", "MetricAccumulator"]

METRIC_NAMES = (
    "loss", "policy_loss", "result_loss", "eval_loss", "policy_accuracy", "policy_top5_accuracy",
    "value_accuracy", "policy_entropy", "value_entropy", "value_brier", "value_ece", "value_eval_mse",
)

# (name, first ply); a position goes to the last bucket whose first ply is ≤ its ply.
PLY_BUCKETS = (("ply_1-30", 1), ("ply_31-60", 31), ("ply_61-100", 61), ("ply_101+", 101))
PLY_UNKNOWN = "ply_unknown"
# (name, lowest rating); NaN / negative → RATING_UNRATED.
RATING_BANDS = (
    ("rating_<2000", 0.0), ("rating_2000-2999", 2000.0), ("rating_3000-3499", 3000.0),
    ("rating_3500+", 3500.0),
)
RATING_UNRATED = "rating_unrated"

ECE_BINS = 10

# Columns of the per-row statistics summed per group (named by MetricAccumulator._row_statistics).
_COLS = (
    "positions", "policy_loss", "result_loss", "eval_loss", "policy_accuracy",
    "policy_top5_accuracy", "value_accuracy", "policy_entropy", "value_entropy", "value_brier",
    "eval_positions", "value_eval_sq",
)
_C = {name: i for i, name in enumerate(_COLS)}
# Metrics that are plain means over positions of one column.
_MEAN_COLS = [c for c in _COLS if c not in ("positions", "eval_positions", "value_eval_sq")]

# Groups: 0 = all positions, then the ply buckets (+ unknown), then the rating bands (+ unrated).
_GROUPS = (
    ("all",)
    + tuple(n for n, _ in PLY_BUCKETS) + (PLY_UNKNOWN,)
    + tuple(n for n, _ in RATING_BANDS) + (RATING_UNRATED,)
)
_PLY0 = 1
_RATING0 = _PLY0 + len(PLY_BUCKETS) + 1


class MetricAccumulator:
    """Sums per-position statistics over batches; ``result()`` / ``stratified()`` turn them into means.

    ``update`` takes tensors on any device; the sums stay on that device (float64) until
    ``result()`` / ``stratified()`` move them to the CPU once.
    """

    def __init__(self, value_lambda: float = VALUE_LAMBDA, eval_scale: float = EVAL_SCALE):
        self.value_lambda = float(value_lambda)
        self.eval_scale = float(eval_scale)
        self.reset()

    def reset(self) -> None:
        self._sums: Tensor | None = None  # [groups, columns]
        self._bins: Tensor | None = None  # [groups * ECE_BINS, 3]: count, Σq, Σresult

    @torch.no_grad()
    def update(
        self,
        policy_logits: Tensor,
        value_logit: Tensor,
        labels: Tensor,
        result: Tensor,
        eval_cp: Tensor,
        has_eval: Tensor | None = None,
        ply: Tensor | None = None,
        min_rating: Tensor | None = None,
        policy_target: Tensor | None = None,
    ) -> None:
        """Add one batch: policy_logits [N, C], value_logit [N] or [N, 1], labels int [N],
        result [N] in [0, 1], eval_cp [N] centipawns, has_eval bool [N] (None = all),
        ply int [N] (None = unknown), min_rating float [N] (None = unrated), policy_target [N, C]
        (None = one-hot on ``labels``): with a soft target the policy loss is the soft cross-entropy
        and the accuracies count the target's most likely move."""
        n = policy_logits.shape[0]
        if n == 0:
            return
        dev = policy_logits.device
        f64 = torch.float64
        logits = policy_logits.to(f64)
        if value_logit.shape not in ((n,), (n, 1)):
            raise ValueError(f"value_logit must be [N] or [N, 1] with N={n}, got {list(value_logit.shape)}")
        v_logit = value_logit.reshape(n).to(f64)
        labels = labels.reshape(n).to(device=dev, dtype=torch.long)
        result = result.reshape(n).to(device=dev, dtype=f64)
        eval_cp = eval_cp.reshape(n).to(device=dev, dtype=f64)
        if has_eval is None:
            has_eval = torch.ones(n, dtype=torch.bool, device=dev)
        has_eval = has_eval.reshape(n).to(device=dev, dtype=torch.bool)
        if policy_target is not None:
            policy_target = policy_target.to(device=dev, dtype=f64)
            labels = policy_target.argmax(dim=1)
        stats = self._row_statistics(logits, v_logit, labels, result, eval_cp, has_eval, policy_target)
        stats = torch.stack([stats[name] for name in _COLS], dim=1)  # [N, columns]
        q = torch.sigmoid(v_logit)

        groups = self._group_index(n, dev, ply, min_rating)  # [3, N]
        ece_bin = (q * ECE_BINS).floor().clamp_(0, ECE_BINS - 1).long()
        bin_stats = torch.stack([torch.ones_like(q), q, result], dim=1)  # [N, 3]

        if self._sums is None:
            self._sums = torch.zeros(len(_GROUPS), len(_COLS), dtype=f64, device=dev)
            self._bins = torch.zeros(len(_GROUPS) * ECE_BINS, 3, dtype=f64, device=dev)
        for g in groups:  # all / ply bucket / rating band: three vectorised index_adds each
            self._sums.index_add_(0, g, stats)
            self._bins.index_add_(0, g * ECE_BINS + ece_bin, bin_stats)

    def _row_statistics(self, logits: Tensor, v_logit: Tensor, labels: Tensor, result: Tensor, eval_cp: Tensor,
                        has_eval: Tensor, policy_target: Tensor | None = None) -> dict[str, Tensor]:
        """Each position's contribution to every summed column (float64 [N] each)."""
        f64 = torch.float64
        target = value_targets(result, eval_cp, has_eval, self.eval_scale)
        eval_value = torch.sigmoid(torch.where(has_eval, eval_cp, torch.zeros_like(eval_cp)) / self.eval_scale)
        log_p = F.log_softmax(logits, dim=1)
        q = torch.sigmoid(v_logit)
        top5 = logits.topk(min(5, logits.shape[1]), dim=1).indices
        return {
            "positions": torch.ones_like(q),
            "policy_loss": (-log_p.gather(1, labels[:, None]).squeeze(1) if policy_target is None
                            else -(policy_target * log_p).sum(dim=1)),
            "result_loss": F.binary_cross_entropy_with_logits(v_logit, result, reduction="none"),
            "eval_loss": F.binary_cross_entropy_with_logits(v_logit, target, reduction="none"),
            "policy_accuracy": (logits.argmax(dim=1) == labels).to(f64),
            "policy_top5_accuracy": (top5 == labels[:, None]).any(dim=1).to(f64),
            "value_accuracy": ((v_logit >= 0) == (result >= 0.5)).to(f64),
            "policy_entropy": -(log_p.exp() * log_p).sum(dim=1),
            # binary entropy from the logit: softplus(x) − x·q, exact for large |x|
            "value_entropy": F.softplus(v_logit) - v_logit * q,
            "value_brier": (q - result) ** 2,
            "eval_positions": has_eval.to(f64),
            "value_eval_sq": torch.where(has_eval, (q - eval_value) ** 2, torch.zeros_like(q)),
        }

    @staticmethod
    def _group_index(n: int, dev: torch.device, ply: Tensor | None, min_rating: Tensor | None) -> Tensor:
        everyone = torch.zeros(n, dtype=torch.long, device=dev)
        if ply is None:
            ply_group = torch.full((n,), _PLY0 + len(PLY_BUCKETS), dtype=torch.long, device=dev)
        else:
            edges = torch.tensor([start for _, start in PLY_BUCKETS[1:]], dtype=torch.long, device=dev)
            ply_group = _PLY0 + torch.bucketize(ply.reshape(n).to(device=dev, dtype=torch.long), edges, right=True)
        if min_rating is None:
            rating_group = torch.full((n,), _RATING0 + len(RATING_BANDS), dtype=torch.long, device=dev)
        else:
            r = min_rating.reshape(n).to(device=dev, dtype=torch.float64)
            edges = torch.tensor([low for _, low in RATING_BANDS[1:]], dtype=torch.float64, device=dev)
            band = torch.bucketize(r, edges, right=True)
            unrated = torch.isnan(r) | (r < 0)
            rating_group = _RATING0 + torch.where(unrated, torch.full_like(band, len(RATING_BANDS)), band)
        return torch.stack([everyone, ply_group, rating_group])

    # ----------------------------------------------------------------------------------------

    def _metrics(self, sums: list[float], bins: list[list[float]]) -> dict[str, float]:
        count = sums[_C["positions"]]
        if count == 0:
            return {name: math.nan for name in METRIC_NAMES}
        mean = {name: sums[_C[name]] / count for name in _MEAN_COLS}
        lam = self.value_lambda
        mean["loss"] = mean["policy_loss"] + (1 - lam) * mean["result_loss"] + lam * mean["eval_loss"]
        ece = 0.0
        for n_b, sum_q, sum_r in bins:
            if n_b > 0:
                ece += abs(sum_q - sum_r) / count  # (n_b/N)·|Σq/n_b − Σr/n_b|
        mean["value_ece"] = ece
        n_eval = sums[_C["eval_positions"]]
        mean["value_eval_mse"] = sums[_C["value_eval_sq"]] / n_eval if n_eval > 0 else math.nan
        return {name: float(mean[name]) for name in METRIC_NAMES}

    def _host(self) -> tuple[list[list[float]], list[list[list[float]]]]:
        if self._sums is None:
            return [[0.0] * len(_COLS) for _ in _GROUPS], [[[0.0] * 3] * ECE_BINS for _ in _GROUPS]
        sums = self._sums.cpu().tolist()
        bins = self._bins.cpu().reshape(len(_GROUPS), ECE_BINS, 3).tolist()
        return sums, bins

    @property
    def positions(self) -> int:
        return 0 if self._sums is None else int(self._sums[0, _C["positions"]].item())

    def result(self) -> dict[str, float]:
        """{metric: value} over every position added (NaN for all metrics when empty)."""
        sums, bins = self._host()
        return self._metrics(sums[0], bins[0])

    def stratified(self) -> dict[str, dict[str, float]]:
        """{bucket: {metric: value, 'positions': n}} for each ply bucket and rating band with positions."""
        sums, bins = self._host()
        out = {}
        for gi, name in enumerate(_GROUPS):
            if gi == 0 or sums[gi][_C["positions"]] == 0:
                continue
            row = self._metrics(sums[gi], bins[gi])
            row["positions"] = int(sums[gi][_C["positions"]])
            out[name] = row
        return out
