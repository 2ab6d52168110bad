"""Soft policy targets: the loss and the metrics against values computed by hand, the dense target a
batch builds from (move, weight) pairs against cshogi's move labels."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from shogitrain.names import EVAL_SCALE
from shogitrain.shards.format import rows_from_sfens
from shogitrain.shards.targets import PAIR_DTYPE, SoftRows
from shogitrain.train.data import make_batch
from shogitrain.train.loss import policy_value_loss
from shogitrain.train.metrics import MetricAccumulator

LN2, LN3 = math.log(2), math.log(3)


def _batch():
    # row 0: uniform softmax over 3 moves, a win, eval 0; row 1: softmax [1/8, 3/8, 4/8], a draw, v = 0.75
    logits = torch.tensor([[0.0, 0.0, 0.0], [0.0, LN3, math.log(4)]], dtype=torch.float64)
    value_logit = torch.tensor([[0.0], [LN3]], dtype=torch.float64)
    result = torch.tensor([1.0, 0.5], dtype=torch.float64)
    eval_cp = torch.tensor([0.0, EVAL_SCALE * LN3], dtype=torch.float64)
    target = torch.tensor([[0.5, 0.5, 0.0], [0.0, 0.25, 0.75]], dtype=torch.float64)
    return logits, value_logit, result, eval_cp, target


def test_soft_cross_entropy_with_dlshogi_z_weighting_by_hand():
    logits, value_logit, result, eval_cp, target = _batch()
    terms = policy_value_loss(logits, value_logit, torch.tensor([0, 2]), result, eval_cp, policy_target=target)
    ce0 = LN3                                                      # −(½ ln ⅓ + ½ ln ⅓)
    ce1 = -(0.25 * math.log(3 / 8) + 0.75 * math.log(1 / 2))
    z = [1 - 0.5 + 0.5, 0.5 - 0.75 + 0.5]
    assert terms.policy_loss.item() == pytest.approx((ce0 * z[0] + ce1 * z[1]) / 2, rel=1e-12)


def test_a_one_hot_soft_target_is_the_hard_cross_entropy():
    logits, value_logit, result, eval_cp, _ = _batch()
    labels = torch.tensor([1, 2])
    hard = policy_value_loss(logits, value_logit, labels, result, eval_cp)
    soft = policy_value_loss(logits, value_logit, labels, result, eval_cp,
                             policy_target=torch.nn.functional.one_hot(labels, 3).double())
    assert soft.total.item() == pytest.approx(hard.total.item(), rel=1e-12)


def test_metrics_score_the_soft_cross_entropy_and_the_targets_best_move():
    logits, value_logit, result, eval_cp, target = _batch()
    acc = MetricAccumulator()
    acc.update(logits, value_logit, torch.tensor([2, 0]), result, eval_cp, policy_target=target)
    m = acc.result()
    ce1 = -(0.25 * math.log(3 / 8) + 0.75 * math.log(1 / 2))
    assert m["policy_loss"] == pytest.approx((LN3 + ce1) / 2, rel=1e-12)
    # targets' best moves: 0 (first of the tie) and 2; the logits' argmax: 0 (first of three) and 2
    assert m["policy_accuracy"] == 1.0


def test_make_batch_builds_dense_targets_at_dlshogi_labels():
    cshogi = pytest.importorskip("cshogi")
    from cshogi import dlshogi

    sfens = ["lnsgkgsnl/1r5b1/ppppppppp/9/9/9/PPPPPPPPP/1B5R1/LNSGKGSNL b - 1",
             "lnsgkgsnl/1r5b1/pppppp1pp/6p2/9/2P6/PP1PPPPPP/1B5R1/LNSGKGSNL w - 3",
             "lnsgkgsnl/1r5b1/pppppp1pp/6p2/9/2P6/PP1PPPPPP/1B5R1/LNSGKGSNL b - 3"]
    rows = rows_from_sfens(sfens, ["7g7f", "8c8d", "2g2f"])
    moves = [[("7g7f", 0.5), ("2g2f", 0.3), ("5i6h", 0.2)], [("8c8d", 0.9), ("4a3b", 0.1)], []]
    pairs = np.zeros(5, PAIR_DTYPE)
    labels = []
    for (sfen, row_moves) in zip(sfens, moves):
        board = cshogi.Board(sfen)
        for usi, _ in row_moves:
            labels.append(dlshogi.make_move_label(board.move_from_usi(usi), board.turn))
    pairs["move16"] = [cshogi.move16(cshogi.Board(s).move_from_usi(u)) for s, m in zip(sfens, moves) for u, _ in m]
    pairs["weight"] = [w for m in moves for _, w in m]
    soft = SoftRows(rows, np.array([3, 2, 0]), pairs, np.array([1.0, 0.0, 0.5], np.float32))
    batch = make_batch(soft, torch.device("cpu"))
    want = torch.zeros(3, 2187)
    want[0, labels[0:3]] = torch.tensor([0.5, 0.3, 0.2])
    want[1, labels[3:5]] = torch.tensor([0.9, 0.1])
    board = cshogi.Board(sfens[2])
    want[2, dlshogi.make_move_label(board.move_from_usi("2g2f"), board.turn)] = 1.0    # no pairs: one-hot
    assert torch.equal(batch.policy, want)
    assert batch.result.tolist() == [1.0, 0.0, 0.5]
