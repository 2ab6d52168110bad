"""Match statistics against hand-computed cases and against simulated matches with a known Elo."""

from __future__ import annotations

import math

import numpy as np
import pytest

from shogitrain.play.elo import (bradley_terry, elo_of_score, expected_score, pentanomial_elo, sprt_bounds, sprt_llr,
                                 sprt_llr_brownian, sprt_state)
from shogitrain.play.results import pair_tally, tally


def test_logistic_elo_round_trip():
    assert expected_score(0) == 0.5
    assert expected_score(400) == pytest.approx(10 / 11)  # 1 / (1 + 10^-1)
    assert elo_of_score(0.75) == pytest.approx(400 * math.log10(3))  # 190.85
    assert elo_of_score(1.0) == math.inf and elo_of_score(0.0) == -math.inf


def test_pentanomial_elo_hand_computed():
    # Pairs scoring 0, ¼, ½, ¾, 1: counts 1, 1, 3, 3, 2 (N = 10).
    # mean = (0 + .25 + 1.5 + 2.25 + 2) / 10 = 0.6
    # var  = .1·.36 + .1·.1225 + .3·.01 + .3·.0225 + .2·.16 = 0.09 → stderr = √(0.09 / 10) = 0.0948683
    # Elo  = −400 log10(1/0.6 − 1) = 400 log10 1.5 = 70.437
    # 95 %: 0.6 ∓ 1.959964 · 0.0948683 = 0.414061 / 0.785939 → −400 log10(1/s − 1) = −60.315 / +225.940
    # LOS  = Φ(0.1 / 0.0948683) = Φ(1.05409) = 0.85408
    r = pentanomial_elo([1, 1, 3, 3, 2])
    assert r["pairs"] == 10
    assert r["score"] == pytest.approx(0.6)
    assert r["stderr"] == pytest.approx(0.0948683, abs=1e-7)
    assert r["elo"] == pytest.approx(70.437, abs=1e-3)
    assert r["elo_low"] == pytest.approx(-60.315, abs=1e-3)
    assert r["elo_high"] == pytest.approx(225.940, abs=1e-3)
    assert r["los"] == pytest.approx(0.85408, abs=1e-5)


def test_pentanomial_elo_symmetric_and_degenerate():
    r = pentanomial_elo([2, 3, 4, 3, 2])
    assert r["elo"] == pytest.approx(0.0, abs=1e-9) and r["los"] == pytest.approx(0.5)
    assert r["elo_low"] == pytest.approx(-r["elo_high"])
    # Every pair 1½–½: the point estimate exists, the spread does not.
    r = pentanomial_elo([0, 0, 0, 4, 0])
    assert r["elo"] == pytest.approx(400 * math.log10(3)) and r["elo_low"] is None and r["los"] is None
    # Every pair won: no finite Elo.
    assert pentanomial_elo([0, 0, 0, 0, 3])["elo"] is None
    assert pentanomial_elo([0, 0, 0, 0, 0])["pairs"] == 0


def test_sprt_bounds_and_llr_hand_computed():
    lower, upper = sprt_bounds(0.05, 0.05)
    assert lower == pytest.approx(math.log(0.05 / 0.95)) and upper == pytest.approx(math.log(19))  # ∓2.944
    s1 = expected_score(50)  # 0.571463
    # Only pair scores 0 and 1 occur: the constrained maximum puts mass s on 1, so the GLR is binomial:
    # 7 log(s1 / ½) + 3 log((1 − s1) / ½) = 7·0.133590 + 3·(−0.153857) = 0.472449
    assert sprt_llr([3, 0, 0, 0, 7], 0, 50) == pytest.approx(0.472449, abs=1e-6)
    # Brownian approximation, mean .6, var .09, s1 = expected_score(10) = 0.514387:
    # 10 · 0.014387 · (1.2 − 0.5 − 0.514387) / (2 · 0.09) = 0.148358
    assert sprt_llr_brownian([1, 1, 3, 3, 2], 0, 10) == pytest.approx(0.148358, abs=1e-6)


def test_sprt_llr_exact_and_brownian_agree_on_many_pairs():
    counts = [100, 400, 800, 500, 200]
    exact, approx = sprt_llr(counts, 0, 10), sprt_llr_brownian(counts, 0, 10)
    assert exact == pytest.approx(approx, rel=0.02)
    assert sprt_llr(counts, 0, 10) == pytest.approx(-sprt_llr(counts, 10, 0))


def test_sprt_state_decisions():
    assert sprt_state([0, 0, 1, 0, 0], 0, 10)["decision"] is None
    strong = sprt_state([2, 10, 30, 60, 40], 0, 10)
    assert strong["llr"] > strong["upper"] and strong["decision"] == "H1"
    weak = sprt_state([40, 60, 30, 10, 2], 0, 10)
    assert weak["llr"] < weak["lower"] and weak["decision"] == "H0"
    # A dominating engine: every pair won. The zero bins get 0.001 pairs, the LLR grows ~log(s1/s0) per pair.
    assert sprt_llr([0, 0, 0, 0, 1], 0, 10) == pytest.approx(math.log(expected_score(10) / 0.5), rel=0.05)


def test_bradley_terry_hand_computed():
    # Two players, A scores 6 of 8: rating = 400 log10(6/2) = 190.849; var of θ = 1 / (n p (1−p)) = 1 / 1.5,
    # stderr = √(2/3) · 400 / ln 10 = 141.840.
    r = bradley_terry(2, [(0, 1, 6, 8)])
    assert r["ratings"][0] == 0 and r["ratings"][1] == pytest.approx(-190.849, abs=1e-3)
    assert r["stderr"][1] == pytest.approx(141.840, abs=1e-3) and not r["prior"]
    # A chain A–B, B–C (no A–C games), 6/8 each: C is two steps down; its variance is the sum of both links.
    r = bradley_terry(3, [(0, 1, 6, 8), (1, 2, 6, 8)])
    assert r["ratings"][2] == pytest.approx(-381.697, abs=1e-3)
    assert r["stderr"][2] == pytest.approx(math.sqrt(4 / 3) * 400 / math.log(10), abs=1e-3)  # 200.592
    assert r["low"][2] == pytest.approx(-381.697 - 1.959964 * 200.592, abs=1e-2)
    # All games won: no maximum; one virtual draw per pairing → 8.5 of 9: 400 log10(8.5 / 0.5) = 492.180.
    r = bradley_terry(2, [(0, 1, 8, 8)])
    assert r["prior"] and r["ratings"][1] == pytest.approx(-492.180, abs=1e-3)


def test_bradley_terry_likelihood_equations():
    """At the maximum each player's expected score over its games equals its actual score."""
    results = [(0, 1, 7, 10), (0, 2, 4.5, 10), (0, 3, 8, 10), (1, 2, 3, 10), (1, 3, 6.5, 10), (2, 3, 7, 10)]
    r = bradley_terry(4, results, anchor=2)
    assert r["ratings"][2] == 0.0
    for k in range(4):
        expected = actual = 0.0
        for i, j, score, n in results:
            if k in (i, j):
                other = j if k == i else i
                expected += n * expected_score(r["ratings"][k] - r["ratings"][other])
                actual += score if k == i else n - score
        assert expected == pytest.approx(actual, abs=1e-9)


def _simulated_pairs(rng, pairs: int, p_black: tuple[float, float], p_white: tuple[float, float]) -> list[int]:
    """Pentanomial counts for engine A: (win, draw) probabilities as Black and as White."""
    def games(p_win, p_draw):
        u = rng.random(pairs)
        return np.where(u < p_win, 1.0, np.where(u < p_win + p_draw, 0.5, 0.0))
    total = games(*p_black) + games(*p_white)
    return np.bincount((2 * total).astype(int), minlength=5).tolist()


def test_pentanomial_interval_covers_a_known_elo_at_95_percent():
    """Games from a known model (A +60 Elo, Black's edge, draws); the 95 % interval covers the truth ~95 %."""
    rng = np.random.default_rng(12345)
    p_black, p_white = (0.55, 0.20), (0.42, 0.22)  # A's win/draw probabilities with each colour
    true_score = ((p_black[0] + p_black[1] / 2) + (p_white[0] + p_white[1] / 2)) / 2
    true_elo = elo_of_score(true_score)
    runs, covered, estimates = 400, 0, []
    for _ in range(runs):
        r = pentanomial_elo(_simulated_pairs(rng, 100, p_black, p_white))
        covered += r["elo_low"] <= true_elo <= r["elo_high"]
        estimates.append(r["elo"])
    assert 0.92 <= covered / runs <= 0.98  # ±2.7 standard errors of a 95 % rate over 400 runs
    assert abs(np.mean(estimates) - true_elo) < 5.0


def test_sprt_error_rates_on_simulated_matches():
    """H0 true → H1 accepted rarely (α = 5 %); H1 true → accepted usually (1 − β = 95 %)."""
    rng = np.random.default_rng(7)

    def run(elo):
        s = expected_score(elo)
        p = (s - 0.15, 0.3)  # draws 30 %, same for both colours
        counts = [0] * 5
        for _ in range(2000):
            counts = [a + b for a, b in zip(counts, _simulated_pairs(rng, 4, p, p))]
            decision = sprt_state(counts, 0, 60)["decision"]
            if decision:
                return decision
        return None

    under_h0 = [run(0) for _ in range(60)]
    under_h1 = [run(60) for _ in range(60)]
    assert under_h0.count("H1") <= 8 and under_h0.count("H0") >= 50
    assert under_h1.count("H1") >= 50


def test_pair_tally_and_ratings_from_games():
    # A (0) and B (1): opening pairs 0..2; C (2) only against A.
    games = [
        {"pair": 0, "black": 0, "white": 1, "score_black": 1.0, "ending": "toryo"},
        {"pair": 0, "black": 1, "white": 0, "score_black": 0.5, "ending": "sennichite"},  # pair score 1.5 → bin 3
        {"pair": 1, "black": 0, "white": 1, "score_black": 0.0, "ending": "toryo"},
        {"pair": 1, "black": 1, "white": 0, "score_black": 0.0, "ending": "toryo"},  # 1 → bin 2
        {"pair": 2, "black": 0, "white": 1, "score_black": 1.0, "ending": "kachi"},  # unpaired
        {"pair": 3, "black": 0, "white": 2, "score_black": 1.0, "ending": "toryo"},
        {"pair": 3, "black": 2, "white": 0, "score_black": 1.0, "ending": "toryo"},
    ]
    p = pair_tally(games, 0, 1)
    assert (p["wins"], p["draws"], p["losses"]) == (3, 1, 1)
    assert p["as_black"] == {"wins": 2, "draws": 0, "losses": 1}
    assert p["as_white"] == {"wins": 1, "draws": 1, "losses": 0}
    assert p["pentanomial"] == [0, 0, 1, 1, 0] and p["unpaired_games"] == 1
    assert p["draw_ratio"] == pytest.approx(0.2)
    assert p["score"] == pytest.approx(0.625)  # (0.5 + 0.75) / 2
    t = tally(games, ["A", "B", "C"])
    assert t["endings"] == {"toryo": 5, "sennichite": 1, "kachi": 1}
    ratings = {r["name"]: r for r in t["ratings"]["list"]}
    assert ratings["A"]["elo"] == 0.0 and ratings["B"]["elo"] < 0 and ratings["C"]["elo"] == pytest.approx(0.0, abs=1e-6)
