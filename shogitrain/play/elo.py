"""Match statistics: logistic Elo from game pairs (pentanomial), LOS, the GSPRT, Bradley–Terry ratings.

Scores are per game (win 1, draw ½, loss 0). A *game pair* is the two games of one opening with the
colours swapped; its average score is one of 0, ¼, ½, ¾, 1, and the pentanomial counts are how many
pairs fell in each. The pair, not the game, is the independent sample: the opening's bias cancels in
it, so the interval from pair variances is the honest one (and usually narrower than the game-based
one). The formulas and their derivation are in docs/play.md ("Reading the statistics").
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np

PAIR_SCORES = (0.0, 0.25, 0.5, 0.75, 1.0)
Z95 = NormalDist().inv_cdf(0.975)  # 1.959963984540054
ELO_PER_NATURAL = 400.0 / math.log(10.0)  # Elo units per unit of the logistic's natural argument


def expected_score(elo: float) -> float:
    """The logistic model: the score of a player ``elo`` points stronger."""
    return 1.0 / (1.0 + 10.0 ** (-elo / 400.0))


def elo_of_score(score: float) -> float:
    """Inverse of :func:`expected_score`; ±inf for a score of 1 or 0."""
    if score <= 0.0:
        return -math.inf
    if score >= 1.0:
        return math.inf
    return -400.0 * math.log10(1.0 / score - 1.0)


def pentanomial_mean_var(counts) -> tuple[int, float, float]:
    """(pairs, mean pair score, variance of one pair's score) from the five counts."""
    if len(counts) != 5 or any(c < 0 for c in counts):
        raise ValueError(f"pentanomial counts need five non-negative numbers, got {counts!r}")
    pairs = int(sum(counts))
    if pairs == 0:
        return 0, math.nan, math.nan
    mean = sum(c * s for c, s in zip(counts, PAIR_SCORES)) / pairs
    var = sum(c * (s - mean) ** 2 for c, s in zip(counts, PAIR_SCORES)) / pairs
    return pairs, mean, var


def pentanomial_elo(counts, z: float = Z95) -> dict:
    """Elo, its interval (mean ± z standard errors, mapped through the logistic) and LOS.

    Keys: pairs, score, elo, elo_low, elo_high, los, stderr (of the mean score). Values are None
    where undefined: no pairs; the interval and LOS also when every pair scored the same.
    """
    pairs, mean, var = pentanomial_mean_var(counts)
    out = {"pairs": pairs, "score": None, "elo": None, "elo_low": None, "elo_high": None, "los": None,
           "stderr": None}
    if pairs == 0:
        return out
    out["score"] = mean
    out["elo"] = _finite(elo_of_score(mean))
    stderr = math.sqrt(var / pairs)
    if stderr > 0.0:
        out["stderr"] = stderr
        out["elo_low"] = _finite(elo_of_score(mean - z * stderr))
        out["elo_high"] = _finite(elo_of_score(mean + z * stderr))
        out["los"] = NormalDist().cdf((mean - 0.5) / stderr)
    return out


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


# ---------------------------------------------------------------------------------------------- SPRT


def sprt_bounds(alpha: float, beta: float) -> tuple[float, float]:
    """Wald's stopping bounds on the log-likelihood ratio: (accept H0 below, accept H1 above)."""
    return math.log(beta / (1.0 - alpha)), math.log((1.0 - beta) / alpha)


def sprt_llr(counts, elo0: float, elo1: float) -> float:
    """Generalised log-likelihood ratio of H1 (Elo = elo1) against H0 (Elo = elo0), logistic Elo.

    The pentanomial GSPRT: under each hypothesis the pair-score distribution is the maximum-likelihood
    one with mean s_i = expected_score(elo_i) (:func:`_constrained_mle`), and the LLR is
    N Σ p̂_k log(p1_k / p0_k). When s_i is not strictly inside the observed pair scores (e.g. every
    pair won), the empty bins get 0.001 of a pair each so that such a distribution exists.
    """
    pairs = sum(counts)
    if pairs == 0:
        return 0.0
    s0, s1 = expected_score(elo0), expected_score(elo1)
    seen = [a for a, c in zip(PAIR_SCORES, counts) if c > 0]
    if not all(min(seen) < s < max(seen) for s in (s0, s1)):
        counts = [c if c > 0 else 1e-3 for c in counts]
    total = sum(counts)
    observed = [c / total for c in counts]
    p0, p1 = (_constrained_mle(observed, s) for s in (s0, s1))
    return pairs * sum(q * math.log(b / a) for q, a, b in zip(observed, p0, p1) if q > 0)


def sprt_llr_brownian(counts, elo0: float, elo1: float) -> float:
    """The Brownian approximation of :func:`sprt_llr`: N (s1 − s0)(2m − s0 − s1) / (2v), m and v the
    mean and variance of the pair score; close to the exact value once there are many pairs."""
    pairs, mean, var = pentanomial_mean_var(counts)
    if pairs == 0 or var <= 0.0:
        return 0.0
    s0, s1 = expected_score(elo0), expected_score(elo1)
    return pairs * (s1 - s0) * (2.0 * mean - s0 - s1) / (2.0 * var)


def _constrained_mle(observed: list[float], s: float) -> list[float]:
    """The distribution on PAIR_SCORES closest in likelihood to ``observed`` with mean ``s``.

    Lagrange multipliers give p_k = q_k / (1 + x (a_k − s)) with x the root of
    Σ q_k (a_k − s) / (1 + x (a_k − s)) = 0, which is decreasing in x on the interval where every
    denominator is positive; the root is found by bisection.
    """
    d = [a - s for a, q in zip(PAIR_SCORES, observed) if q > 0]
    lo, hi = -1.0 / max(d), -1.0 / min(d)

    def f(x):
        return sum(q * (a - s) / (1.0 + x * (a - s)) for a, q in zip(PAIR_SCORES, observed) if q > 0)

    for _ in range(80):
        mid = 0.5 * (lo + hi)
        if f(mid) > 0.0:
            lo = mid
        else:
            hi = mid
    x = 0.5 * (lo + hi)
    return [q / (1.0 + x * (a - s)) if q > 0 else 0.0 for a, q in zip(PAIR_SCORES, observed)]


def sprt_state(counts, elo0: float, elo1: float, alpha: float = 0.05, beta: float = 0.05) -> dict:
    """LLR, bounds and the decision: 'H1' (Elo ≥ elo1 accepted), 'H0' (Elo ≤ elo0 accepted) or None."""
    lower, upper = sprt_bounds(alpha, beta)
    llr = sprt_llr(counts, elo0, elo1)
    decision = "H1" if llr >= upper else "H0" if llr <= lower else None
    return {"elo0": elo0, "elo1": elo1, "alpha": alpha, "beta": beta, "llr": llr, "lower": lower,
            "upper": upper, "decision": decision}


# ---------------------------------------------------------------------------------------------- ratings


def bradley_terry(n_players: int, results, anchor: int = 0, z: float = Z95) -> dict:
    """Maximum-likelihood Bradley–Terry ratings (logistic Elo), ``anchor`` fixed at 0.

    ``results`` is a list of ``(i, j, score_i, games)``: player i scored ``score_i`` (draws as ½)
    in ``games`` games against j. Returns ``{"ratings": [...], "low": [...], "high": [...],
    "stderr": [...], "prior": bool}``; intervals are ± z standard errors from the observed
    information, relative to the anchor. When the maximum does not exist (some group of players
    won or lost every game against the rest), one virtual draw is added to each played pairing
    and ``prior`` is True.
    """
    games = np.zeros((n_players, n_players))
    scores = np.zeros((n_players, n_players))
    for i, j, score, n in results:
        games[i, j] += n
        games[j, i] += n
        scores[i, j] += score
        scores[j, i] += n - score
    prior = not _mle_exists(scores, games)
    if prior:
        played = games > 0
        games = games + 1.0 * played
        scores = scores + 0.5 * played
    free = [k for k in range(n_players) if k != anchor]
    theta = np.zeros(n_players)
    for _ in range(100):
        p = 1.0 / (1.0 + np.exp(theta[None, :] - theta[:, None]))  # p[i, j] = P(i beats j)
        grad = (scores - games * p).sum(axis=1)
        w = games * p * (1.0 - p)
        hess = np.diag(w.sum(axis=1)) - w  # the negative Hessian of the log-likelihood
        step = np.linalg.solve(hess[np.ix_(free, free)], grad[free])
        theta[free] += step
        if np.max(np.abs(step)) < 1e-12:
            break
    p = 1.0 / (1.0 + np.exp(theta[None, :] - theta[:, None]))
    w = games * p * (1.0 - p)
    hess = np.diag(w.sum(axis=1)) - w
    cov = np.zeros((n_players, n_players))
    cov[np.ix_(free, free)] = np.linalg.inv(hess[np.ix_(free, free)])
    ratings = theta * ELO_PER_NATURAL
    stderr = np.sqrt(np.diag(cov)) * ELO_PER_NATURAL
    return {"ratings": ratings.tolist(), "stderr": stderr.tolist(), "low": (ratings - z * stderr).tolist(),
            "high": (ratings + z * stderr).tolist(), "prior": prior}


def _mle_exists(scores: np.ndarray, games: np.ndarray) -> bool:
    """True when every player can reach every other along 'scored something against' edges.

    That (strong connectivity) is the condition for a finite maximum-likelihood solution.
    """
    n = len(scores)
    beats = (scores > 0) & (games > 0)
    for graph in (beats, beats.T):
        reached = {0}
        frontier = [0]
        while frontier:
            k = frontier.pop()
            for m in np.nonzero(graph[k])[0]:
                if int(m) not in reached:
                    reached.add(int(m))
                    frontier.append(int(m))
        if len(reached) < n:
            return False
    return True
