"""The search tree: PUCT selection, value backup with virtual loss, proven wins and losses.

A node holds its legal moves sorted by the net's prior (highest first) once it is evaluated.
Unvisited children all score ``parent_q + c·u·prior`` in the PUCT formula, so the best of them is
the unvisited one with the highest prior: the visited children are always a prefix of the sorted
moves, and only that prefix (``n``, ``w``, ``children``) is stored and scanned. Values are win
probabilities; ``w[i]`` sums the results of move ``i`` for the side to move at the node. The
exploration schedule, first-play urgency and proof handling follow dlshogi (docs/play.md).
"""

from __future__ import annotations

from math import log, sqrt

# status of a node for the side to move there
UNKNOWN, WIN, LOSE, DRAW = 0, 1, 2, 3


class Node:
    """A position in the tree. ``moves``/``priors`` are None until the net has evaluated it."""

    __slots__ = ("moves", "priors", "n", "w", "children", "visits", "wins", "prior_sum",
                 "status", "lost", "winning_child", "value")

    def __init__(self):
        self.moves = None           # array('i') of cshogi moves, by prior (highest first)
        self.priors = None          # array('f'), same order
        self.n = []                 # visits of the visited prefix of the moves (with virtual losses)
        self.w = []                 # their summed results, for the side to move here
        self.children = []          # their nodes
        self.visits = 0             # sum of n
        self.wins = 0.0             # sum of w
        self.prior_sum = 0.0        # priors of the selected children, summed at every selection (FPU)
        self.status = UNKNOWN
        self.lost = 0               # children proven won by the opponent (moves that lose)
        self.winning_child = -1     # a child proven lost by the opponent (a move that wins), if any
        self.value = None           # the net's value of this position


class Exploration:
    """PUCT constants: c(N) = c_init + ln((N + c_base + 1) / c_base); FPU: the parent's value less
    ``fpu_reduction``·√(summed priors of the selections), never below 0."""

    __slots__ = ("c_init", "c_base", "fpu_reduction")

    def __init__(self, c_init: float, c_base: float, fpu_reduction: float):
        self.c_init, self.c_base, self.fpu_reduction = c_init, c_base, fpu_reduction


def select_child(node: Node, ex: Exploration) -> int:
    """Index of the move with the highest PUCT value (see the module docstring)."""
    if node.lost or node.winning_child >= 0:
        return _select_with_proofs(node, ex)
    n, p = node.n, node.priors
    total = node.visits
    c_base = ex.c_base
    c = log((total + c_base + 1.0) / c_base) + ex.c_init
    sqrt_total = sqrt(total)
    best_i, best = 0, -1.0
    if n:
        cs = c * sqrt_total
        i = 0
        for ni, wi, pi in zip(n, node.w, p):     # the hot loop of the search: kept plain
            value = wi / ni + cs * pi / (1 + ni)
            if value > best:
                best_i, best = i, value
            i += 1
    k = len(n)
    if k < len(p):
        wins = node.wins
        q = wins / total - ex.fpu_reduction * sqrt(node.prior_sum) if wins > 0 else 0.0
        if (q if q > 0.0 else 0.0) + c * (sqrt_total if total else 1.0) * p[k] > best:
            return k
    return best_i


def _select_with_proofs(node: Node, ex: Exploration) -> int:
    """select_child when some children are proven: a winning move is taken at once, losing moves
    are skipped (all of them losing: the most visited)."""
    if node.winning_child >= 0:
        return node.winning_child
    children, n, w, p = node.children, node.n, node.w, node.priors
    total = node.visits
    c = log((total + ex.c_base + 1.0) / ex.c_base) + ex.c_init
    sqrt_total = sqrt(total)
    best_i, best = -1, -1.0
    for i in range(len(n)):
        if children[i].status == WIN:
            continue
        value = w[i] / n[i] + c * sqrt_total * p[i] / (1 + n[i])
        if value > best:
            best_i, best = i, value
    k = len(n)
    if k < len(p):
        q = node.wins / total - ex.fpu_reduction * sqrt(node.prior_sum) if node.wins > 0 else 0.0
        if (q if q > 0.0 else 0.0) + c * sqrt_total * p[k] > best:
            best_i = k
    return best_i if best_i >= 0 else max(range(len(n)), key=n.__getitem__)


def backup(path, result: float) -> None:
    """Add ``result`` (for the side that made the last move of ``path``) along the path, flipping
    it at every ply. The visits were counted when the path was selected (virtual loss 1)."""
    for node, i in reversed(path):
        node.w[i] += result
        node.wins += result
        result = 1.0 - result


def backup_proven(path, result: float) -> None:
    """backup() for a path ending in a node just proven won or lost: the proof also climbs as far
    as it goes (a move to a lost node wins; a node whose every move loses is lost)."""
    proven = True
    for node, i in reversed(path):
        node.w[i] += result
        node.wins += result
        result = 1.0 - result
        if proven:
            proven = _take_proof(node, i)


def _take_proof(node: Node, i: int) -> bool:
    """Record in ``node`` that child ``i`` was just proven; True when that proves ``node``."""
    status = node.children[i].status
    if status == LOSE:
        node.winning_child = i
        if node.status == UNKNOWN:
            node.status = WIN
            return True
    elif status == WIN:
        node.lost += 1
        if node.lost == len(node.moves) and node.status == UNKNOWN:
            node.status = LOSE
            return True
    return False


def remove_virtual_loss(path) -> None:
    """Undo the visits of a path that was not evaluated (it reached a node still waiting for the net)."""
    for node, i in path:
        node.visits -= 1
        node.n[i] -= 1


def best_child(node: Node) -> int:
    """The move to play: a proven win, else the most visited move that is not proven lost (ties: the
    higher prior), else the most visited; -1 when nothing was visited."""
    if node.winning_child >= 0:
        return node.winning_child
    n, children = node.n, node.children
    if not n:
        return -1
    candidates = [i for i in range(len(n)) if children[i].status != WIN] or range(len(n))
    return max(candidates, key=lambda i: (n[i], -i))


def child_value(node: Node, i: int) -> float:
    """Win probability of move ``i`` for the side to move at ``node`` (1 or 0 when proven)."""
    status = node.children[i].status
    if status == LOSE:
        return 1.0
    if status == WIN:
        return 0.0
    return node.w[i] / node.n[i] if node.n[i] else 0.5


def principal_variation(node: Node, first: int, limit: int = 64) -> list[int]:
    """Moves from ``node`` along ``first`` then the most visited children."""
    pv, i = [], first
    while i >= 0 and len(pv) < limit:
        pv.append(node.moves[i])
        if i >= len(node.children):
            break
        node = node.children[i]
        if node.moves is None:      # a terminal position, or one still waiting for the net
            break
        i = best_child(node)
    return pv


def find_child(node: Node, move: int) -> Node | None:
    """The visited, evaluated child of ``node`` reached by ``move``, else None (tree reuse)."""
    if node.moves is None:
        return None
    for i, m in enumerate(node.moves[:len(node.children)]):
        if m == move:
            child = node.children[i]
            return child if child.moves is not None else None
    return None
