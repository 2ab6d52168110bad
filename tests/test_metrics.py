"""MetricAccumulator: every metric against hand-computed values, stratification, batch invariance."""

import math

import pytest
import torch

from shogitrain.train.metrics import METRIC_NAMES, MetricAccumulator
from shogitrain.names import EVAL_SCALE


def sig(x):
    return 1 / (1 + math.exp(-x))


def bce(q, t):
    return -(t * math.log(q) + (1 - t) * math.log(1 - q))


def softmax(row):
    e = [math.exp(v) for v in row]
    s = sum(e)
    return [v / s for v in e]


LOGITS = [
    [5.0, 4.0, 3.0, 2.0, 1.0, 0.0],  # label 0: top-1 and top-5
    [5.0, 4.0, 3.0, 2.0, 1.0, 0.0],  # label 5: neither
    [0.0, 1.0, 2.0, 3.0, 4.0, 5.0],  # label 1: top-5 only
    [0.0, 0.0, 0.0, 1.0, 0.0, 0.0],  # label 3: top-1 and top-5
]
LABELS = [0, 5, 1, 3]
VLOGIT = [2.0, -1.0, 0.0, math.log(1 / 3)]
RESULT = [1.0, 1.0, 0.5, 0.0]
EVAL = [0.0, EVAL_SCALE * math.log(3), float("nan"), -EVAL_SCALE * math.log(3)]
HAS_EVAL = [True, True, False, True]
PLY = [10, 20, 100, 150]
RATING = [1999.0, 2000.0, 3500.0, float("nan")]


def batch(rows=slice(None)):
    t = dict(
        policy_logits=torch.tensor(LOGITS, dtype=torch.float64)[rows],
        value_logit=torch.tensor(VLOGIT, dtype=torch.float64)[rows].reshape(-1, 1),
        labels=torch.tensor(LABELS)[rows],
        result=torch.tensor(RESULT)[rows],
        eval_cp=torch.tensor(EVAL, dtype=torch.float64)[rows],
        has_eval=torch.tensor(HAS_EVAL)[rows],
        ply=torch.tensor(PLY)[rows],
        min_rating=torch.tensor(RATING)[rows],
    )
    return t


def hand_metrics(idx, lam=0.333):
    n = len(idx)
    q = [sig(VLOGIT[i]) for i in idx]
    r = [RESULT[i] for i in idx]
    target = [sig(EVAL[i] / EVAL_SCALE) if HAS_EVAL[i] else RESULT[i] for i in idx]
    ce = [-math.log(softmax(LOGITS[i])[LABELS[i]]) for i in idx]
    ent = [-sum(p * math.log(p) for p in softmax(LOGITS[i])) for i in idx]
    m = {
        "policy_loss": sum(ce) / n,
        "result_loss": sum(bce(a, b) for a, b in zip(q, r)) / n,
        "eval_loss": sum(bce(a, b) for a, b in zip(q, target)) / n,
        "policy_accuracy": sum(1 for i in idx if i in (0, 3)) / n,
        "policy_top5_accuracy": sum(1 for i in idx if i in (0, 2, 3)) / n,
        "value_accuracy": sum(1 for i in idx if i in (0, 2, 3)) / n,  # row 2: logit 0, draw → correct
        "policy_entropy": sum(ent) / n,
        "value_entropy": sum(-(a * math.log(a) + (1 - a) * math.log(1 - a)) for a in q) / n,
        "value_brier": sum((a - b) ** 2 for a, b in zip(q, r)) / n,
    }
    m["loss"] = m["policy_loss"] + (1 - lam) * m["result_loss"] + lam * m["eval_loss"]
    bins = {}
    for a, b in zip(q, r):
        bins.setdefault(min(int(a * 10), 9), []).append((a, b))
    m["value_ece"] = sum(
        len(v) / n * abs(sum(a for a, _ in v) / len(v) - sum(b for _, b in v) / len(v)) for v in bins.values()
    )
    with_eval = [i for i in idx if HAS_EVAL[i]]
    m["value_eval_mse"] = (
        sum((sig(VLOGIT[i]) - sig(EVAL[i] / EVAL_SCALE)) ** 2 for i in with_eval) / len(with_eval)
        if with_eval else math.nan
    )
    return m


def assert_metrics(got, expected):
    assert set(METRIC_NAMES) <= set(got)
    for name in METRIC_NAMES:
        if math.isnan(expected[name]):
            assert math.isnan(got[name]), name
        else:
            assert got[name] == pytest.approx(expected[name], rel=1e-9, abs=1e-12), name


def test_every_metric_against_hand_values():
    acc = MetricAccumulator()
    acc.update(**batch())
    got = acc.result()
    assert_metrics(got, hand_metrics([0, 1, 2, 3]))
    # spot checks of the hand bookkeeping itself
    assert got["policy_accuracy"] == 0.5
    assert got["policy_top5_accuracy"] == 0.75
    assert got["value_accuracy"] == 0.75
    # ECE: bins 2 {q=σ(−1), 0.25 | r=1, 0}, 5 {0.5 | 0.5}, 8 {σ(2) | 1}
    ece = 2 / 4 * abs((sig(-1) + 0.25) / 2 - 0.5) + 1 / 4 * abs(sig(2) - 1)
    assert got["value_ece"] == pytest.approx(ece, rel=1e-9)
    # value_eval_mse only over the three rows with an eval; row 3 is exact
    assert got["value_eval_mse"] == pytest.approx(((sig(2) - 0.5) ** 2 + (sig(-1) - 0.75) ** 2) / 3, rel=1e-9)
    assert acc.positions == 4


def test_lambda_is_a_parameter():
    acc = MetricAccumulator(value_lambda=0.5)
    acc.update(**batch())
    assert acc.result()["loss"] == pytest.approx(hand_metrics([0, 1, 2, 3], lam=0.5)["loss"], rel=1e-9)


def test_value_eval_mse_is_nan_without_evals():
    b = batch()
    b["has_eval"] = torch.zeros(4, dtype=torch.bool)
    acc = MetricAccumulator()
    acc.update(**b)
    got = acc.result()
    assert math.isnan(got["value_eval_mse"])
    assert math.isfinite(got["eval_loss"])  # the eval target falls back to the result


def test_stratified_buckets_hold_the_right_rows():
    acc = MetricAccumulator()
    acc.update(**batch())
    strat = acc.stratified()
    expected_rows = {
        "ply_1-30": [0, 1], "ply_61-100": [2], "ply_101+": [3],
        "rating_<2000": [0], "rating_2000-2999": [1], "rating_3500+": [2], "rating_unrated": [3],
    }
    assert set(strat) == set(expected_rows)  # empty buckets (ply_31-60, rating_3000-3499) are left out
    for name, rows in expected_rows.items():
        assert strat[name]["positions"] == len(rows)
        assert_metrics(strat[name], hand_metrics(rows))
    assert strat["ply_1-30"]["policy_accuracy"] == 0.5
    assert strat["ply_101+"]["value_ece"] == pytest.approx(0.25, rel=1e-9)  # |σ(ln 1/3) − 0|


def test_bucket_edges_and_missing_strata():
    acc = MetricAccumulator()
    b = batch()
    b["ply"] = torch.tensor([0, 30, 31, 101])
    b["min_rating"] = torch.tensor([-1.0, 2999.5, 3499.0, 3500.0])
    acc.update(**b)
    counts = {k: v["positions"] for k, v in acc.stratified().items()}
    assert counts == {
        "ply_1-30": 2, "ply_31-60": 1, "ply_101+": 1,
        "rating_unrated": 1, "rating_2000-2999": 1, "rating_3000-3499": 1, "rating_3500+": 1,
    }
    acc = MetricAccumulator()
    b = batch()
    b["ply"] = None
    b["min_rating"] = None
    acc.update(**b)
    counts = {k: v["positions"] for k, v in acc.stratified().items()}
    assert counts == {"ply_unknown": 4, "rating_unrated": 4}


def test_batch_size_does_not_change_the_answer():
    g = torch.Generator().manual_seed(0)
    n = 50
    data = dict(
        policy_logits=torch.randn(n, 2187, generator=g) * 3,
        value_logit=torch.randn(n, 1, generator=g) * 2,
        labels=torch.randint(0, 2187, (n,), generator=g),
        result=torch.randint(0, 3, (n,), generator=g).float() / 2,
        eval_cp=torch.randn(n, generator=g) * 800,
        has_eval=torch.rand(n, generator=g) > 0.2,
        ply=torch.randint(1, 200, (n,), generator=g),
        min_rating=torch.rand(n, generator=g) * 4500,
    )
    data["labels"][:10] = data["policy_logits"][:10].argmax(dim=1)  # some hits
    whole = MetricAccumulator()
    whole.update(**data)
    chunked = MetricAccumulator()
    for start in range(0, n, 7):
        chunked.update(**{k: v[start:start + 7] for k, v in data.items()})
    a, b = whole.result(), chunked.result()
    for name in METRIC_NAMES:
        assert b[name] == pytest.approx(a[name], rel=1e-12, abs=1e-15), name
    sa, sb = whole.stratified(), chunked.stratified()
    assert sa.keys() == sb.keys()
    for bucket in sa:
        for name, value in sa[bucket].items():
            assert sb[bucket][name] == pytest.approx(value, rel=1e-12, abs=1e-15), (bucket, name)
    assert a["policy_accuracy"] >= 10 / n


def test_empty_and_reset():
    acc = MetricAccumulator()
    assert all(math.isnan(v) for v in acc.result().values())
    assert acc.stratified() == {}
    acc.update(**batch())
    acc.reset()
    assert acc.positions == 0
