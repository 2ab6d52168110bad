"""dlshogi's bootstrap loss against values computed by hand (math, not torch) on two positions."""

import math

import pytest
import torch

from shogitrain.config import LossConfig
from shogitrain.names import EVAL_SCALE
from shogitrain.train.loss import policy_value_loss, value_targets

LN2, LN3 = math.log(2), math.log(3)


def bce(q, t):
    return -(t * math.log(q) + (1 - t) * math.log(1 - q))


def make_batch(dtype=torch.float64):
    # row 0: uniform policy over 3 moves, value logit 0 (q = 0.5), a win, eval 0 (v = 0.5)
    # row 1: softmax = [1/8, 3/8, 4/8], label 2 (CE = ln 2), logit ln 3 (q = 0.75), a draw, v = 0.75
    logits = torch.tensor([[0.0, 0.0, 0.0], [0.0, LN3, math.log(4)]], dtype=dtype)
    value_logit = torch.tensor([[0.0], [LN3]], dtype=dtype)
    label = torch.tensor([1, 2])
    result = torch.tensor([1.0, 0.5], dtype=dtype)
    eval_cp = torch.tensor([0.0, EVAL_SCALE * LN3], dtype=dtype)
    return logits, value_logit, label, result, eval_cp


# hand values
Z = [1 - 0.5 + 0.5, 0.5 - 0.75 + 0.5]  # z = result − value + 0.5 → [1, 0.25]
CE = [LN3, LN2]
H = [LN3, -(1 / 8 * math.log(1 / 8) + 3 / 8 * math.log(3 / 8) + 1 / 2 * math.log(1 / 2))]
POLICY = (CE[0] * Z[0] + CE[1] * Z[1]) / 2
RESULT = (bce(0.5, 1.0) + bce(0.75, 0.5)) / 2
EVAL = (bce(0.5, 0.5) + bce(0.75, 0.75)) / 2
ENTROPY = sum(H) / 2


def test_hand_computed_terms_and_total():
    t = policy_value_loss(*make_batch())
    assert t.policy_loss.item() == pytest.approx(POLICY, rel=1e-12)
    assert t.result_loss.item() == pytest.approx(RESULT, rel=1e-12)
    assert t.eval_loss.item() == pytest.approx(EVAL, rel=1e-12)
    assert t.entropy.item() == pytest.approx(ENTROPY, rel=1e-12)
    # dlshogi adds β·mean(Σ p log p) = −β·H: the regulariser rewards entropy
    expected = POLICY - 0.001 * ENTROPY + (1 - 0.333) * RESULT + 0.333 * EVAL
    assert t.total.item() == pytest.approx(expected, rel=1e-12)
    assert t.total.item() < POLICY + (1 - 0.333) * RESULT + 0.333 * EVAL


def test_draw_is_half_in_both_value_terms():
    logits, value_logit, label, _, eval_cp = make_batch()
    result = torch.tensor([0.5, 0.5], dtype=torch.float64)
    t = policy_value_loss(logits, value_logit, label, result, eval_cp)
    assert t.result_loss.item() == pytest.approx((bce(0.5, 0.5) + bce(0.75, 0.5)) / 2, rel=1e-12)
    z = [0.5 - 0.5 + 0.5, 0.5 - 0.75 + 0.5]
    assert t.policy_loss.item() == pytest.approx((CE[0] * z[0] + CE[1] * z[1]) / 2, rel=1e-12)


def test_value_logit_shapes_n_and_n1_agree():
    logits, value_logit, label, result, eval_cp = make_batch()
    a = policy_value_loss(logits, value_logit, label, result, eval_cp)
    b = policy_value_loss(logits, value_logit.reshape(2), label, result, eval_cp)
    assert a.total.item() == b.total.item()
    with pytest.raises(ValueError):
        policy_value_loss(logits, value_logit.reshape(1, 2), label, result, eval_cp)


@pytest.mark.parametrize(
    "switch, expected",
    [
        ({"policy": False}, -0.001 * ENTROPY + 0.667 * RESULT + 0.333 * EVAL),
        ({"entropy": False}, POLICY + 0.667 * RESULT + 0.333 * EVAL),
        ({"entropy_beta": 0.0}, POLICY + 0.667 * RESULT + 0.333 * EVAL),
        ({"result": False}, POLICY - 0.001 * ENTROPY + 0.333 * EVAL),
        ({"eval": False}, POLICY - 0.001 * ENTROPY + 0.667 * RESULT),
        ({"z_weighting": False}, (CE[0] + CE[1]) / 2 - 0.001 * ENTROPY + 0.667 * RESULT + 0.333 * EVAL),
        ({"policy_weight": 2.0}, 2 * POLICY - 0.001 * ENTROPY + 0.667 * RESULT + 0.333 * EVAL),
        ({"value_lambda": 1.0}, POLICY - 0.001 * ENTROPY + EVAL),
    ],
)
def test_switching_terms(switch, expected):
    t = policy_value_loss(*make_batch(), config=LossConfig(**switch))
    assert t.total.item() == pytest.approx(expected, rel=1e-12)
    # the parts are still reported for logging
    assert t.result_loss.item() == pytest.approx(RESULT, rel=1e-12)


def test_switched_off_terms_send_no_gradient():
    logits, value_logit, label, result, eval_cp = make_batch()
    logits.requires_grad_(True)
    value_logit.requires_grad_(True)
    t = policy_value_loss(logits, value_logit, label, result, eval_cp,
                          config=LossConfig(result=False, eval=False))
    t.total.backward()
    assert value_logit.grad is None or torch.count_nonzero(value_logit.grad) == 0
    assert torch.count_nonzero(logits.grad) > 0


def test_z_is_a_constant_weight():
    # d(total)/d(logits) of the policy term equals z·(softmax − onehot)/N: no gradient through z
    logits, value_logit, label, result, eval_cp = make_batch()
    logits.requires_grad_(True)
    t = policy_value_loss(logits, value_logit, label, result, eval_cp,
                          config=LossConfig(entropy=False, result=False, eval=False))
    t.total.backward()
    p = torch.softmax(logits.detach(), dim=1)
    onehot = torch.nn.functional.one_hot(label, 3).double()
    expected = torch.tensor(Z, dtype=torch.float64)[:, None] * (p - onehot) / 2
    torch.testing.assert_close(logits.grad, expected, rtol=1e-12, atol=1e-12)


def test_missing_eval_falls_back_to_result():
    logits, value_logit, label, result, eval_cp = make_batch()
    eval_cp[1] = float("nan")  # whatever the missing value is, it is never read
    has_eval = torch.tensor([True, False])
    t = policy_value_loss(logits, value_logit, label, result, eval_cp, has_eval)
    # row 1: value := result = 0.5, so z = 0.5 and the eval target is the result
    assert t.policy_loss.item() == pytest.approx((CE[0] * 1.0 + CE[1] * 0.5) / 2, rel=1e-12)
    assert t.eval_loss.item() == pytest.approx((bce(0.5, 0.5) + bce(0.75, 0.5)) / 2, rel=1e-12)
    assert torch.isfinite(t.total)
    torch.testing.assert_close(value_targets(result, eval_cp, has_eval), torch.tensor([0.5, 0.5], dtype=torch.float64))


def test_low_precision_logits_are_upcast():
    logits, value_logit, label, result, eval_cp = make_batch(torch.float32)
    t = policy_value_loss(logits.bfloat16(), value_logit.bfloat16(), label, result, eval_cp)
    assert t.total.dtype == torch.float32
    assert t.total.item() == pytest.approx(POLICY - 0.001 * ENTROPY + 0.667 * RESULT + 0.333 * EVAL, rel=1e-2)


def test_as_dict_uses_metric_names():
    d = policy_value_loss(*make_batch()).as_dict()
    assert set(d) == {"loss", "policy_loss", "result_loss", "eval_loss", "policy_entropy"}
    assert d["policy_entropy"] == pytest.approx(ENTROPY, rel=1e-6)
