"""The search in-process: PUCT by hand, labels and features against cshogi, proofs, repetitions,
entering-king wins, tree reuse, time management."""

from __future__ import annotations

import math
from array import array
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch

cshogi = pytest.importorskip("cshogi")
from cshogi.dlshogi import make_input_features, make_move_label  # noqa: E402

from play_nets import tiny_model  # noqa: E402
from shogitrain.features import encode_board, label_table  # noqa: E402
from shogitrain.play import PlayError  # noqa: E402
from shogitrain.play.evaluator import NetProcess, TorchEvaluator  # noqa: E402
from shogitrain.play.search import Search, SearchSettings, policy_move, win_rate_to_cp  # noqa: E402
from shogitrain.play.timeman import Clock, Limits, TimeBudget, plan_time  # noqa: E402
from shogitrain.play.tree import DRAW, LOSE, WIN, Exploration, Node, select_child  # noqa: E402
from shogitrain.records import read_csa  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / "data"
NYUGYOKU_SFEN = "1+R+B+SG+SGG1/1PPPKPPP1/9/9/9/9/9/9/4k4 b RB3P 1"
MATE3_SFEN = "3sks3/9/4+P4/9/9/9/9/9/4K4 b 2G 1"       # mate in 3 (G*5b first), no mate in 1
PERPETUAL_START = "8k/9/9/9/9/9/9/9/K6R1 b - 1"         # black's rook checks the king on 1a/2a


def game_boards(limit: int = 400):
    """cshogi boards along the bundled floodgate games, every 3rd position."""
    boards = []
    for path in sorted((DATA / "floodgate").glob("*.csa")):
        for game in read_csa(path):
            board = cshogi.Board(game.sfen)
            for ply, move in enumerate(game.moves):
                board.push_usi(move)
                if ply % 3 == 0:
                    boards.append(board.copy())
                if len(boards) >= limit:
                    return boards
    return boards


def tiny_net_process(batch_size: int, model=None) -> NetProcess:
    return NetProcess(partial(TorchEvaluator, model or tiny_model(), "cpu", description="tiny"), batch_size)


@pytest.fixture(scope="module", params=["in-line", "net-process"])
def evaluator(request):
    """The tiny net; every search test runs with it in line and in a process of its own (the
    search then overlaps it)."""
    if request.param == "in-line":
        yield TorchEvaluator(tiny_model(), "cpu", 32, "tiny")
        return
    net = tiny_net_process(32)
    yield net
    net.close()


def new_search(evaluator, **settings) -> Search:
    return Search(evaluator, SearchSettings(**settings))


def run(search: Search, playouts: int, batch: int = 16) -> None:
    """``playouts`` playouts (fewer when the tree is exhausted), then the batch in flight taken in."""
    search.prepare_root()
    idle = 0
    while search.stats.playouts < playouts and search.root.moves is not None and idle < 3:
        done = search.run_batch(min(batch, playouts - search.stats.playouts))
        idle = 0 if done else idle + 1      # an overlapped batch may find every leaf still waiting
    search.finish()


def test_labels_of_cshogi_moves_match_make_move_label():
    table = label_table()
    checked = 0
    for board in game_boards(150):
        moves = np.fromiter(board.legal_moves, np.int64)
        ours = table[(moves & 0x7FFF) | (board.turn << 15)]
        theirs = [make_move_label(int(m), board.turn) for m in moves]
        assert ours.tolist() == theirs
        checked += len(moves)
    assert checked > 5000


def test_board_rows_of_cshogi_encode_to_cshogi_features():
    """cshogi's ``pieces`` / ``pieces_in_hand`` use shogitrain's piece codes and hand order: the
    batched encoder on them gives make_input_features exactly."""
    boards = game_boards(64)
    pieces = torch.tensor([b.pieces for b in boards], dtype=torch.uint8)
    hands = torch.tensor([b.pieces_in_hand for b in boards], dtype=torch.uint8)
    turns = torch.tensor([b.turn for b in boards], dtype=torch.uint8)
    x1, x2 = encode_board(pieces, hands, turns)
    f1 = np.full((len(boards), 62, 9, 9), 7, np.float32)     # dirty rows: the call must overwrite them
    f2 = np.full((len(boards), 57, 9, 9), 7, np.float32)
    for i, b in enumerate(boards):
        make_input_features(b, f1[i], f2[i])
    assert np.array_equal(x1.numpy(), f1) and np.array_equal(x2.numpy(), f2)


def test_puct_selection_by_hand():
    node = Node()
    node.priors = array("f", [0.5, 0.3, 0.2])
    node.moves = array("i", [1, 2, 3])
    node.n, node.w = [3, 1], [1.5, 0.9]
    node.children = [Node(), Node()]
    node.visits, node.wins, node.prior_sum = 4, 2.4, 1.1
    ex = Exploration(1.44, 28288.0, 0.27)
    c = 1.44 + math.log((4 + 28288 + 1) / 28288)
    ucb0 = 1.5 / 3 + c * 2 * 0.5 / 4                  # 0.5 + 0.3600…  = 0.860
    ucb1 = 0.9 / 1 + c * 2 * 0.3 / 2                  # 0.9 + 0.4320…  = 1.332
    fpu = max(0.0, 2.4 / 4 - 0.27 * math.sqrt(1.1))   # 0.6 − 0.2832 = 0.3168
    ucb2 = fpu + c * 2 * 0.2                           # 0.3168 + 0.5760 = 0.893
    assert max(ucb0, ucb1, ucb2) == ucb1 and select_child(node, ex) == 1
    node.w = [1.5, 0.1]                                # move 1 now looks bad: 0.1 + 0.432 = 0.532
    assert select_child(node, ex) == 2                 # the unvisited move (0.893) beats move 0 (0.860)
    node.priors = array("f", [0.5, 0.3, 0.05])         # 0.3168 + 0.144 = 0.461
    assert select_child(node, ex) == 0
    fresh = Node()
    fresh.priors, fresh.moves = array("f", [0.6, 0.4]), array("i", [5, 6])
    assert select_child(fresh, ex) == 0                # no visits: the highest prior


def test_win_rate_to_cp_uses_dlshogi_scale():
    assert win_rate_to_cp(0.5) == 0
    assert win_rate_to_cp(0.75) == int(-756.0864962951762 * math.log(1 / 0.75 - 1)) == 830
    assert win_rate_to_cp(0.1) == int(-756.0864962951762 * math.log(9)) == -1661
    assert win_rate_to_cp(1.0) == 30000 and win_rate_to_cp(0.0) == -30000


def test_search_counts_every_playout_once(evaluator):
    search = new_search(evaluator)
    search.set_position(None, ["7g7f", "3c3d"])
    run(search, 300)
    root = search.root
    assert search.stats.playouts == 300 == root.visits == sum(root.n)
    assert abs(root.wins - sum(root.w)) < 1e-6 and 0 <= root.wins <= root.visits
    # every visit of a node below the root was counted in it: n of an edge = visits of its child + 1
    # (the visit that created the child), and no virtual loss is left behind
    for i, child in enumerate(root.children):
        assert root.n[i] == child.visits + (1 if child.moves is not None else root.n[i] - child.visits)
    assert sorted(root.priors, reverse=True) == list(root.priors)
    assert math.isclose(sum(root.priors), 1.0, rel_tol=1e-5)
    move, value, pv = search.best()
    assert pv[0] == move and root.moves.index(move) == int(np.argmax(root.n)) and 0 < value < 1


class Recorded:
    """An evaluator's submit calls, recorded on the way through."""

    def __init__(self, net):
        self.calls = []
        submit = net.submit
        net.submit = lambda n, start=0: self.calls.append((start, n)) or submit(n, start)


def count_evaluated(node) -> int:
    return (node.moves is not None) + sum(count_evaluated(child) for child in node.children)


def test_a_net_process_scores_alternate_halves_and_every_batch_is_taken_in():
    net = tiny_net_process(16)
    try:
        calls = Recorded(net).calls
        search = new_search(net)
        search.set_position(None, ["7g7f", "3c3d"])
        search.prepare_root()
        search.run_batch(16)
        assert search._in_flight is not None       # submitted, the search went on
        while search.stats.playouts < 300:
            search.run_batch(min(16, 300 - search.stats.playouts))
        search.finish()
        root = search.root
        assert search.stats.playouts == 300 == root.visits == sum(root.n)       # no virtual loss left
        assert search.stats.evaluated == count_evaluated(root) == sum(n for _, n in calls)
        starts = [start for start, _ in calls[1:]]                              # after the root's
        assert starts[::2] == [0] * len(starts[::2]) and set(starts[1::2]) == {16}
    finally:
        net.close()


def test_a_net_process_gives_the_outputs_of_the_net_in_line():
    model = tiny_model()
    in_line, remote = TorchEvaluator(model, "cpu", 8, "tiny"), tiny_net_process(8, model)
    try:
        for slot, board in enumerate(game_boards(8)):
            in_line.write(slot, board)
            remote.write(slot + 8, board)
        logits, values = in_line.evaluate(8)
        remote.submit(8, 8)
        remote_logits, remote_values = remote.collect()
        np.testing.assert_allclose(remote_logits, logits, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(remote_values, values, rtol=1e-5, atol=1e-6)
        assert remote.description == "tiny in its own process"
    finally:
        remote.close()
    assert remote.process is None


def test_a_net_process_that_dies_or_cannot_load_is_a_play_error():
    net = tiny_net_process(4)
    net.process.kill()
    with pytest.raises(PlayError, match=r"the net's process ended \(exit code -9\)"):
        net.evaluate(1)
    net.close()
    with pytest.raises(PlayError, match="could not load the net: ValueError: 7 rows"):
        NetProcess(partial(refuse_to_load, "7 rows"), 4)


def refuse_to_load(why: str, **_):
    raise ValueError(why)


def test_priors_are_softmax_of_legal_logits_with_temperature(evaluator):
    search = new_search(evaluator, softmax_temperature=1.74)
    search.set_position(None, ["2g2f"])
    search.prepare_root()
    board = search.board
    legal = list(board.legal_moves)
    evaluator.write(0, board)
    logits, _ = evaluator.evaluate(1)
    x = np.array([logits[0, make_move_label(m, board.turn)] for m in legal], np.float64) / 1.74
    p = np.exp(x - x.max())
    p /= p.sum()
    expected = dict(zip(legal, p))
    got = dict(zip(search.root.moves, search.root.priors))
    assert set(got) == set(expected)
    assert max(abs(got[m] - expected[m]) for m in legal) < 1e-6


def test_mate_in_one_is_proven_in_the_tree(evaluator):
    search = new_search(evaluator, leaf_mate_ply=0)
    search.set_position("4k4/9/4P4/9/9/9/9/9/4K4 b G 1", [])
    run(search, 200)
    move, value, _ = search.best()
    assert cshogi.move_to_usi(move) == "G*5b" and value == 1.0
    assert search.root.status == WIN


def test_leaf_mate_search_marks_the_positions_cshogi_mates(evaluator):
    """White to move; after each white move black may have a mate in 3: exactly those children
    are proven wins for black (cshogi's ``mate_move(3)`` as the oracle)."""
    sfen = MATE3_SFEN.replace(" b ", " w ")
    search = new_search(evaluator, leaf_mate_ply=3)
    search.set_position(sfen, [])
    run(search, 300)
    root = search.root
    board = cshogi.Board(sfen)
    assert len(root.children) == len(root.moves)
    mated = 0
    for move, child in zip(root.moves, root.children):
        board.push(move)
        expected = WIN if board.mate_move(3) else 0
        board.pop()
        assert child.status == expected, cshogi.move_to_usi(move)
        mated += expected == WIN
    assert 0 < mated < len(root.moves) and root.lost == mated


def test_repetition_is_a_draw_with_the_draw_value(evaluator):
    search = new_search(evaluator, draw_value_white=0.2, draw_value_black=0.9, leaf_mate_ply=0)
    search.set_position(None, "5i4h 5a4b 4h5i 4b5a 5i4h 5a4b 4h5i".split())
    run(search, 600)
    root = search.root
    i = list(root.moves).index(search.board.move_from_usi("4b5a"))
    assert i < len(root.children), "the repeating move was never tried"
    assert root.children[i].status == DRAW
    assert root.w[i] / root.n[i] == pytest.approx(0.2)      # white's draw value, every visit


def test_perpetual_check_loses_for_the_checker(evaluator):
    search = new_search(evaluator, leaf_mate_ply=0)
    # white to move, king on 2a checked by the rook on 2i; 2a1a repeats the start position, and
    # black has given check at every move since: black loses (cshogi REPETITION_LOSE)
    search.set_position(PERPETUAL_START, ["2i1i", "1a2a", "1i2i"])
    run(search, 300)
    root = search.root
    i = list(root.moves).index(search.board.move_from_usi("2a1a"))
    assert root.children[i].status == LOSE and root.status == WIN
    assert cshogi.move_to_usi(search.best()[0]) == "2a1a"


def test_entering_king_declaration_is_a_win_in_the_tree(evaluator):
    board = cshogi.Board(NYUGYOKU_SFEN)
    assert board.is_nyugyoku()
    # white to move first: every leaf where black may declare is a win for black
    search = new_search(evaluator, leaf_mate_ply=0)
    search.set_position(NYUGYOKU_SFEN.replace(" b ", " w "), [])
    run(search, 200)
    root = search.root
    assert root.status == LOSE and all(child.status == WIN for child in root.children)
    assert len(root.children) == len(root.moves)


def test_tree_is_reused_along_the_game(evaluator):
    search = new_search(evaluator)
    search.set_position(None, ["7g7f"])
    run(search, 400)
    _, _, pv = search.best()
    assert len(pv) >= 2
    first = list(search.root.moves).index(pv[0])
    child = search.root.children[first]
    second = list(child.moves).index(pv[1])
    carried = child.children[second].visits
    assert carried > 0
    usi = [cshogi.move_to_usi(m) for m in pv[:2]]
    search.set_position(None, ["7g7f"] + usi)
    assert search.root.visits == carried
    run(search, 100)
    assert search.root.visits == carried + 100
    search.set_position(None, ["2g2f"])               # not a continuation: a new tree
    assert search.root.visits == 0
    no_reuse = new_search(evaluator, reuse_tree=False)
    no_reuse.set_position(None, ["7g7f"])
    run(no_reuse, 50)
    no_reuse.set_position(None, ["7g7f", usi[0]])
    assert no_reuse.root.visits == 0


def test_illegal_move_stops_the_position_before_it(evaluator):
    from shogitrain.play import PlayError

    search = new_search(evaluator)
    with pytest.raises(PlayError, match="illegal move '7g7e'"):
        search.set_position(None, ["2g2f", "7g7e", "3c3d"])
    assert search.board.move_number == 2
    with pytest.raises(PlayError, match="illegal move '7g7f\\+'"):
        search.set_position(None, ["2g2f", "3c3d", "7g7f+"])
    assert search.board.move_number == 3
    with pytest.raises(PlayError, match="not exactly one king of each side; using the start position"):
        search.set_position("lnsgkgsnl/9/9/9/9/9/9/9/9 b - 1", [])
    assert search.board.move_number == 1 and search.root.visits == 0


def test_policy_move_is_the_best_legal_logit(evaluator):
    boards = game_boards(20)
    table = label_table()
    for board in boards:
        move, value = policy_move(evaluator, board)
        evaluator.write(0, board)
        logits, values = evaluator.evaluate(1)
        legal = list(board.legal_moves)
        best = max(legal, key=lambda m: logits[0, table[(m & 0x7FFF) | board.turn << 15]])
        assert move == best and value == pytest.approx(float(values[0]))
    sampled = {policy_move(evaluator, boards[0], 5.0, np.random.default_rng(s))[0] for s in range(30)}
    assert len(sampled) > 1                 # a high temperature spreads the choice


def test_time_plan_by_hand():
    # sudden death with increment, ply 10: (60000 − 1000) / (14 + 20) + 500
    budget = plan_time(Limits(btime=60000, wtime=1000, binc=500, winc=500), 0, 10, 100, 1000)
    assert budget.target == pytest.approx(59000 / 34 + 500) and budget.minimum == 0 and budget.hard == 59000
    # byoyomi only: the byoyomi less its margin, for target, minimum and hard limit
    budget = plan_time(Limits(byoyomi=3000), 1, 50, 100, 1000)
    assert budget.target == budget.minimum == budget.hard == 2900 and not budget.may_extend
    # main time and byoyomi: white's 30 s / 14 beats the byoyomi
    budget = plan_time(Limits(btime=0, wtime=30000, byoyomi=1000), 1, 40, 100, 1000)
    assert budget.target == pytest.approx(30000 / 14) and budget.minimum == 900 and budget.hard == 30900
    assert plan_time(Limits(btime=600000), 0, 300, 0, 0, draw_ply=320).target == pytest.approx(600000 / 14)
    assert plan_time(Limits(btime=600000), 0, 315, 0, 0, draw_ply=320).target == pytest.approx(600000 / 6)


def test_clock_stops_when_the_best_move_is_safe():
    clock = Clock(TimeBudget(target=1000, minimum=0, hard=5000, remaining=60000, may_extend=False), ply=30)
    clock.started -= 0.5                      # 500 ms spent: 200 playouts so far, 200 more to come
    assert not clock.should_stop(200, 100, 20, 0.6, 0.5, 10, False)      # 80 ≤ 200: could change
    assert clock.should_stop(200, 300, 20, 0.6, 0.5, 10, False)          # 280 > 200: settled
    assert clock.should_stop(200, 100, 20, 0.6, 0.5, 4600, False)        # the next batch would overrun
    assert clock.should_stop(200, 100, 20, 0.6, 0.5, 10, True)           # a proven win
    early = Clock(TimeBudget(target=10000, minimum=0, hard=50000, remaining=60000, may_extend=False), ply=30)
    early.started -= 0.5                      # before a tenth of the target: go on
    assert not early.should_stop(200, 300, 0, 0.6, 0.5, 10, False)
    extend = Clock(TimeBudget(target=1000, minimum=0, hard=50000, remaining=60000, may_extend=True), ply=30)
    extend.started -= 1.0
    assert not extend.should_stop(400, 300, 250, 0.6, 0.5, 10, False)   # unclear: the target doubles
    assert extend.target == 2000 and not extend.may_extend


def test_go_arguments():
    limits = Limits.parse("ponder btime 1000 wtime 2000 byoyomi 300 binc 0 winc 0 nodes 5".split())
    assert (limits.ponder, limits.btime, limits.wtime, limits.byoyomi, limits.nodes) == (True, 1000, 2000, 300, 5)
    assert Limits.parse(["infinite"]).infinite and Limits.parse(["movetime", "700"]).byoyomi == 700
    with pytest.raises(ValueError, match="byoyomi"):
        Limits.parse(["byoyomi", "x"])
