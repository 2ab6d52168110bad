"""Things done to a model outside the step loop: GradInit before training, BN statistics after SWA."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from shogitrain.names import FEATURES2_PLANES
from shogitrain.train.data import make_batch
from shogitrain.train.evaluation import input2_planes_of


@torch.no_grad()
def recompute_bn_statistics(model: nn.Module, dataset, device, batch_size: int, seed: int,
                            max_batches: int = 100) -> None:
    """torch.optim.swa_utils.update_bn for a two-input model: cumulative BN statistics over train batches."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    momenta = {}
    for bn in bns:
        bn.reset_running_stats()
        momenta[bn] = bn.momentum
        bn.momentum = None  # cumulative average
    was_training = model.training
    model.train()
    for i, indices in enumerate(dataset.batch_indices(batch_size, seed=seed, epoch=10**6)):
        if i >= max_batches:
            break
        batch = make_batch(dataset.rows(indices), device, input2_planes=input2_planes_of(model))
        model(batch.x1, batch.x2)
    for bn in bns:
        bn.momentum = momenta[bn]
    model.train(was_training)


def gradinit_batches(dataset, batch_size: int, seed: int, device, min_ratings=None,
                     input2_planes: int = FEATURES2_PLANES):
    """Endless half-batches of training data for GradInit, in a seeded order of their own."""
    epoch = 0
    while True:
        for indices in dataset.batch_indices(batch_size, seed=seed + 7919, epoch=epoch):
            yield make_batch(dataset.read(np.sort(indices)), device, min_ratings, input2_planes)
        epoch += 1


def scale_invariant_parameters(model: nn.Module) -> list[str]:
    """Raw weights of Scaled-WS convs: the output ignores their scale, so GradInit scales the gains."""
    from shogitrain.models import ScaledStdConv2d

    return [f"{name}.weight" for name, m in model.named_modules() if isinstance(m, ScaledStdConv2d)]


def run_gradinit(model: nn.Module, cfg, dataset, min_ratings, device, run_dir=None) -> dict[str, float]:
    """GradInit (init.method: gradinit) on training data with the real loss; the learned scales are
    folded into the weights and, with a run directory, written as gradinit_scales.csv (+ .png)."""
    from shogitrain.optim.gradinit import gradinit, write_scales
    from shogitrain.train.loss import policy_value_loss

    g = cfg.init.gradinit
    half = max((g.batch_size or cfg.train.batch_size) // 2, 1)
    variant = g.variant if g.variant != "auto" else ("adam" if cfg.optim.name in ("adam", "adamw") else "sgd")
    batches = (((b.x1, b.x2), (b.labels, b.result, b.eval, b.has_eval, b.policy))
               for b in gradinit_batches(dataset, half, cfg.train.seed, device, min_ratings,
                                         cfg.model.input2_planes))

    def loss_fn(outputs, batch):
        policy_logits, value_logit = outputs
        *targets, policy = batch[1]
        return policy_value_loss(policy_logits, value_logit, *targets, config=cfg.loss, policy_target=policy).total

    scales = gradinit(model, batches, loss_fn, variant=variant, eta=g.eta, gamma=g.gamma, lr=g.lr, iters=g.iters,
                      min_scale=g.min_scale, grad_clip=g.grad_clip, normalize_grad=g.normalize_grad,
                      exclude=scale_invariant_parameters(model))
    if run_dir is not None:
        from pathlib import Path

        Path(run_dir).mkdir(parents=True, exist_ok=True)
        write_scales(scales, Path(run_dir) / "gradinit_scales.csv", Path(run_dir) / "gradinit_scales.png")
    return scales
