"""Monte Carlo tree search in the manner of dlshogi: batched leaf evaluation with virtual loss.

A batch runs up to ``batch_size`` playouts from the root. Each descends by PUCT (``tree``),
adding a virtual loss (one visit, no win) to every edge it takes, until it reaches
* a new position: terminal (repetition: draw, or a win for the side being checked perpetually;
  the move limit; a mate found by a short mate search; an entering-king declaration; no legal move)
  → its fixed result is backed up at once; else its features go into the next free input row;
* a position still waiting for the net → the playout is discarded (its virtual losses undone
  after the batch);
* a terminal or proven position → its result is backed up.
Then the net scores the queued rows in one call, every new node gets its legal moves' priors (a
softmax over the policy logits at their dlshogi move labels, with a temperature; labels, softmax
and sorting done for the whole batch with numpy) and its value is backed up along its path.

With an asynchronous evaluator (``NetProcess``: the net in a process of its own) the search
overlaps the net, as dlshogi's search threads keep its GPU busy: batch k is scored while batch k+1
is selected into the other half of the input rows, and taken into the tree once k+1 has gone to
the net (so the net goes from one batch to the next without waiting). The cost: batch k+1's
playouts find batch k's leaves still waiting (more are discarded), and the net takes a second
core. ``finish()`` takes in the batch in flight.
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass, field
from itertools import chain

import numpy as np

from shogitrain.play import PlayError, import_cshogi
from shogitrain.names import EVAL_SCALE
from shogitrain.shards import format as fmt
from shogitrain.shogi import vocabulary as vocab
from shogitrain.play.tree import (DRAW, LOSE, UNKNOWN, WIN, Exploration, Node, backup, backup_proven,
                                  best_child, child_value, find_child, principal_variation,
                                  remove_virtual_loss, select_child)

QUEUED, DISCARDED, DONE = 0, 1, 2
# cshogi's repetition results (NOT_REPETITION … REPETITION_INFERIOR) as node statuses
REPETITION_STATUS = (UNKNOWN, DRAW, WIN, LOSE, WIN, LOSE)
# the result a move into a terminal node brings to the side that made it
TERMINAL_RESULT = {WIN: 0.0, LOSE: 1.0}


@dataclass
class SearchSettings:
    """The search's constants (dlshogi's defaults; the USI options in ``options`` set them)."""

    c_init: float = 1.44
    c_base: float = 28288.0
    fpu_reduction: float = 0.27
    c_init_root: float = 1.16
    c_base_root: float = 25617.0
    fpu_reduction_root: float = 0.0
    softmax_temperature: float = 1.74
    draw_value_black: float = 0.5
    draw_value_white: float = 0.5
    draw_ply: int = 0            # positions past this game ply are draws (0: no limit)
    leaf_mate_ply: int = 3       # mate search at new leaves: 0 (off), 1, 3, 5 or 7 plies
    reuse_tree: bool = True


@dataclass
class SearchStats:
    playouts: int = 0            # playouts finished in this search (the USI "nodes")
    evaluated: int = 0           # positions sent to the net
    max_depth: int = 0


@dataclass
class LeafBatch:
    """Leaves queued for the net; their input rows start at row ``start`` of the evaluator."""

    start: int
    nodes: list = field(default_factory=list)
    paths: list = field(default_factory=list)
    moves: list = field(default_factory=list)     # each leaf's legal moves
    turns: list = field(default_factory=list)


class Search:
    """The root position (a cshogi board with its history) and the tree below it."""

    def __init__(self, evaluator, settings: SearchSettings | None = None):
        from shogitrain.features import label_table

        cshogi = import_cshogi()
        self.evaluator = evaluator
        self.settings = settings or SearchSettings()
        self.board = cshogi.Board()
        self.root = Node()
        self._position_key = None         # (start sfen, moves) of the root
        self._labels = label_table()
        self._building = LeafBatch(0)
        self._in_flight: LeafBatch | None = None      # submitted to an asynchronous evaluator
        self.stats = SearchStats()

    # -------------------------------------------------------------------------------- position

    def set_position(self, sfen: str | None, moves: list[str]) -> None:
        """Set the root to ``sfen`` (None: the start position) plus USI ``moves``; keep the subtree
        when the new position follows the old one. PlayError for a bad SFEN or an illegal move
        (the position then stops before it)."""
        board = self.board
        try:
            board.set_sfen(checked_sfen(sfen)) if sfen else board.reset()
        except ValueError as e:
            board.reset()
            self._new_tree(None)
            raise PlayError(f"{e}; using the start position") from None
        played = []
        error = None
        for usi in moves:
            move = board.move_from_usi(usi)
            if not move or move not in board.legal_moves:    # (cshogi's is_legal takes 7g7f+)
                before = " ".join(moves[:len(played)]) or "the start"
                error = PlayError(f"illegal move {usi!r} after {before}; position set before it")
                break
            board.push(move)
            played.append(move)
        self._reuse_or_new_tree(sfen, played)
        if error:
            raise error

    def _reuse_or_new_tree(self, sfen, played: list[int]) -> None:
        old = self._position_key
        node = None
        if self.settings.reuse_tree and old is not None and old[0] == sfen and tuple(played[:len(old[1])]) == old[1]:
            node = self.root
            for move in played[len(old[1]):]:
                node = find_child(node, move)
                if node is None:
                    break
        self._new_tree((sfen, tuple(played)), node)

    def _new_tree(self, key, root: Node | None = None) -> None:
        self.finish()
        self._position_key = key
        self.root = root if root is not None and root.moves is not None else Node()

    def clear_tree(self) -> None:
        self._new_tree(None)

    # -------------------------------------------------------------------------------- search

    def prepare_root(self) -> None:
        """Evaluate the root if it is new (its moves and priors are needed to select)."""
        self.finish()
        self.stats = SearchStats()
        s = self.settings
        self._root_exploration = Exploration(s.c_init_root, s.c_base_root, s.fpu_reduction_root)
        self._exploration = Exploration(s.c_init, s.c_base, s.fpu_reduction)
        if self.root.moves is None:
            legal = list(self.board.legal_moves)
            if not legal:
                return
            self._queue(self.root, [], legal)
            self._score_now()

    def run_batch(self, playouts: int) -> int:
        """Up to ``playouts`` playouts and one evaluation of the net; returns the playouts finished."""
        board, root = self.board, self.root
        if root.moves is None:
            return 0
        done = 0
        discarded = []
        max_depth = self.stats.max_depth
        for _ in range(playouts):
            path = []
            outcome = self._playout(board, root, path)
            depth = len(path)
            for _ in range(depth):
                board.pop()
            if depth > max_depth:
                max_depth = depth
            if outcome == DISCARDED:
                discarded.append(path)
                if len(discarded) > max(playouts // 2, 4):    # the tree is too small for this batch
                    break
            else:
                done += 1
        if self.evaluator.asynchronous:
            # this batch goes to the net before the one it is scoring is taken in: the net never waits
            previous, self._in_flight = self._in_flight, None
            if self._building.nodes:
                self._send()
            if previous is not None:
                self._take_in(previous, *self.evaluator.collect())
        elif self._building.nodes:
            self._score_now()
        for path in discarded:
            remove_virtual_loss(path)
        self.stats.playouts += done
        self.stats.max_depth = max_depth
        return done

    def _playout(self, board, node: Node, path: list) -> int:
        ex = self._root_exploration
        while True:
            i = select_child(node, ex)
            ex = self._exploration
            board.push(node.moves[i])
            node.visits += 1
            node.prior_sum += node.priors[i]
            path.append((node, i))
            if i == len(node.n):               # first visit: a new leaf
                node.n.append(1)
                node.w.append(0.0)
                leaf = Node()
                node.children.append(leaf)
                return self._open_leaf(board, leaf, path)
            node.n[i] += 1
            node = node.children[i]
            if node.status:
                result = TERMINAL_RESULT.get(node.status)
                backup(path, self._draw_value(board) if result is None else result)
                return DONE
            if node.moves is None:             # waiting for the net
                return DISCARDED

    def _open_leaf(self, board, leaf: Node, path: list) -> int:
        status = self._terminal_status(board)
        legal = None
        if not status:
            legal = list(board.legal_moves)
            if not legal:
                status = LOSE
        if status:
            leaf.status = status
            if status == DRAW:
                backup(path, self._draw_value(board))
            else:
                backup_proven(path, TERMINAL_RESULT[status])
            return DONE
        self._queue(leaf, path, legal)
        return QUEUED

    def _terminal_status(self, board) -> int:
        s = self.settings
        if s.draw_ply and board.move_number > s.draw_ply:
            return DRAW
        repetition = board.is_draw()
        if repetition:
            return REPETITION_STATUS[repetition]
        ply = s.leaf_mate_ply
        if ply >= 3 and board.mate_move(ply):
            return WIN
        if ply == 1 and not board.is_check() and board.mate_move_in_1ply():
            return WIN
        if board.is_nyugyoku():
            return WIN
        return UNKNOWN

    def _draw_value(self, board) -> float:
        """A draw's value for the side that moved into it (the side not to move on ``board``)."""
        s = self.settings
        return s.draw_value_white if board.turn == 0 else s.draw_value_black

    def finish(self) -> None:
        """Wait for the batch the net is scoring (if any) and take it into the tree."""
        batch, self._in_flight = self._in_flight, None
        if batch is not None:
            self._take_in(batch, *self.evaluator.collect())

    def _queue(self, node: Node, path: list, legal: list) -> None:
        batch = self._building
        self.evaluator.write(batch.start + len(batch.nodes), self.board)
        batch.nodes.append(node)
        batch.paths.append(path)
        batch.moves.append(legal)
        batch.turns.append(self.board.turn)

    def _score_now(self) -> None:
        batch = self._building
        self._building = LeafBatch(batch.start)
        self._take_in(batch, *self.evaluator.evaluate(len(batch.nodes), batch.start))

    def _send(self) -> None:
        """Submit the batch just built; the next one fills the other half of the rows."""
        batch = self._in_flight = self._building
        self.evaluator.submit(len(batch.nodes), batch.start)
        self._building = LeafBatch(self.evaluator.batch_size - batch.start)

    def _take_in(self, batch: LeafBatch, logits: np.ndarray, values: np.ndarray) -> None:
        nodes, paths = batch.nodes, batch.paths
        count = len(nodes)
        moves, priors, bounds = self._sorted_priors(logits, batch.moves, batch.turns)
        moves, priors = memoryview(moves).cast("B"), memoryview(priors).cast("B")   # 4 bytes an item
        for node, path, value, start, end in zip(nodes, paths, values.tolist(), bounds[:-1], bounds[1:]):
            node.moves = array("i")
            node.moves.frombytes(moves[4 * start:4 * end])
            node.priors = array("f")
            node.priors.frombytes(priors[4 * start:4 * end])
            node.value = value
            backup(path, 1.0 - value)
        self.stats.evaluated += count

    def _sorted_priors(self, logits: np.ndarray, legal: list, turns: list):
        """(moves int32, priors float32, bounds): every queued node's legal moves and their priors,
        each node's run sorted by prior (highest first); node j's run is ``bounds[j]:bounds[j + 1]``."""
        count = len(legal)
        counts = np.fromiter(map(len, legal), np.int64, count)
        bounds = np.zeros(count + 1, np.int64)
        np.cumsum(counts, out=bounds[1:])
        moves = np.fromiter(chain.from_iterable(legal), np.int64, int(bounds[-1]))
        node_of = np.repeat(np.arange(count), counts)
        turn = np.repeat(np.array(turns, np.int64), counts)
        labels = self._labels[(moves & 0x7FFF) | (turn << 15)]
        x = logits[node_of, labels].astype(np.float32)
        x *= 1.0 / self.settings.softmax_temperature
        starts = bounds[:-1]
        x -= np.repeat(np.maximum.reduceat(x, starts), counts)
        np.exp(x, out=x)
        x /= np.repeat(np.add.reduceat(x, starts), counts)
        # one sort by node, then by prior (highest first): priors are in (0, 1]
        order = np.argsort(node_of + (1.0 - x.astype(np.float64)) * 0.5)
        return moves[order].astype(np.int32), x[order], bounds.tolist()

    # -------------------------------------------------------------------------------- results

    def best(self) -> tuple[int, float, list[int]]:
        """(best move or 0, its win probability for the side to move, principal variation)."""
        root = self.root
        i = best_child(root)
        if i < 0:
            if root.moves is None:
                return 0, 0.0, []
            return root.moves[0], root.value if root.value is not None else 0.5, [root.moves[0]]
        return root.moves[i], child_value(root, i), principal_variation(root, i)

    def root_visits(self) -> tuple[int, int, float, float]:
        """(visits of the most visited move, of the second, their values) for time management."""
        n, root = self.root.n, self.root
        if not n:
            return 0, 0, 0.0, 0.0
        order = sorted(range(len(n)), key=n.__getitem__, reverse=True)
        first = order[0]
        second = order[1] if len(order) > 1 else first
        return n[first], n[second] if second != first else 0, child_value(root, first), child_value(root, second)

    def proven(self) -> int:
        """The root's status: WIN when a move is proven to win, LOSE when every move loses."""
        return self.root.status


def checked_sfen(sfen: str) -> str:
    """``sfen`` in normal form, after checking that it is a shogi position (one king a side, no more
    pieces than a set: the shard rows' checks); ValueError naming the problem. cshogi crashes on
    some impossible positions instead of refusing them."""
    try:
        rows = fmt.rows_from_sfens([sfen])
    except ValueError as e:
        raise ValueError(str(e) if "SFEN" in str(e) else f"bad SFEN {sfen!r}: {e}") from None
    rows["move16"] = 1                # a placeholder move (1b to 1a): only the position is checked
    problem = fmt.invalid_rows(rows, piece_totals=True)[0]
    if problem:
        raise ValueError(f"bad SFEN {sfen!r}: {fmt.ROW_PROBLEMS[problem]}")
    row = rows[0]
    return vocab.sfen_of(row["board"].tolist(), row["hand"].tolist(), int(row["turn"]), int(row["ply"]))


def win_rate_to_cp(value: float, scale: float = EVAL_SCALE) -> int:
    """dlshogi's conversion of a win probability to centipawns: −scale·ln(1/v − 1)."""
    if value >= 1.0:
        return 30000
    if value <= 0.0:
        return -30000
    return max(-30000, min(30000, int(-scale * math.log(1.0 / value - 1.0))))


def policy_move(evaluator, board, temperature: float = 0.0, rng=None) -> tuple[int, float]:
    """The net alone: (the legal move with the highest policy logit, or one sampled from the
    softmax of logits / ``temperature`` when it is > 0; the net's win probability of the position)."""
    from shogitrain.features import label_table

    legal = np.fromiter(board.legal_moves, np.int64)
    if not len(legal):
        raise PlayError("no legal move")
    evaluator.write(0, board)
    logits, values = evaluator.evaluate(1)
    x = logits[0, label_table()[(legal & 0x7FFF) | (board.turn << 15)]].astype(np.float64)
    if temperature > 0:
        p = np.exp((x - x.max()) / temperature)
        i = (rng or np.random.default_rng()).choice(len(legal), p=p / p.sum())
    else:
        i = int(np.argmax(x))
    return int(legal[i]), float(values[0])
