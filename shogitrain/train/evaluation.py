"""One pass of a model over (part of) a split: batches from the shards, metrics accumulated.

Used by `shogitrain eval` and by the training loop's periodic and end-of-epoch evaluations.
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm import tqdm

from shogitrain.device import autocast_context
from shogitrain.names import EVAL_SCALE, FEATURES2_PLANES, VALUE_LAMBDA
from shogitrain.train.data import RowPrefetcher, make_batch
from shogitrain.train.metrics import MetricAccumulator

__all__ = ["evaluate_dataset", "input2_planes_of"]


def input2_planes_of(model) -> int:
    """The features2 planes a model reads (57, or 119 with the entering-king features)."""
    return getattr(model, "config", {}).get("input2_planes", FEATURES2_PLANES)


@torch.no_grad()
def evaluate_dataset(model, dataset, device, *, batch_size: int = 1024, amp: str = "off", loss_cfg=None,
                     indices=None, min_ratings=None, progress: bool = True) -> tuple[dict, dict]:
    """Metrics of ``model`` over ``dataset`` rows (all, or ``indices``): (overall, stratified).

    Used by `shogitrain eval` and by the training loop's periodic and end-of-epoch evaluation.
    """
    acc = MetricAccumulator(value_lambda=loss_cfg.value_lambda if loss_cfg else VALUE_LAMBDA,
                            eval_scale=loss_cfg.eval_scale if loss_cfg else EVAL_SCALE)
    n = len(dataset) if indices is None else len(indices)
    starts = range(0, n, batch_size)
    chunks = (np.arange(i, min(i + batch_size, n)) if indices is None
              else np.asarray(indices[i : i + batch_size], dtype=np.int64) for i in starts)
    was_training = model.training
    model.eval()
    try:
        for rows in tqdm(RowPrefetcher(dataset, chunks), total=len(starts), disable=not progress, unit="batch",
                         desc=f"eval {dataset.split}", dynamic_ncols=True):
            batch = make_batch(rows, device, min_ratings, input2_planes_of(model))
            with autocast_context(amp, device):
                policy_logits, value_logit = model(batch.x1, batch.x2)
            acc.update(policy_logits.float(), value_logit.float(), batch.labels, batch.result, batch.eval,
                       batch.has_eval, batch.ply, batch.min_rating, policy_target=batch.policy)
    finally:
        model.train(was_training)
    return acc.result(), acc.stratified()
