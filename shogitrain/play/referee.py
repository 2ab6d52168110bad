"""The referee: plays one game between two USI engines on a cshogi board and adjudicates it.

``play_game(black, white, opening, rules)`` sends each engine the position and its ``go`` command,
checks every answer and ends the game the way floodgate would: resignation (``bestmove resign``,
or the side to move has no legal move, or the optional score adjudication), entering-king
declaration (``bestmove win``, checked with cshogi's ``is_nyugyoku``; a false one loses),
sennichite (the fourth occurrence of a position: a draw, or a loss for the side that gave check
with every move since the first occurrence), the move limit (a draw), an illegal or unreadable
move (a loss), time (a loss), and an engine that crashes or hangs (a loss). The result is a
:class:`PlayedGame`: the moves with their times and evals (Black's view) and an :class:`Ending`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from shogitrain.play import INSTALL_HINT
from shogitrain.play.usi_client import EngineError, EngineTimeout, SearchResult, UsiEngine

try:
    import cshogi
except ImportError:  # pragma: no cover - the message is raised where a board is needed
    cshogi = None

BLACK, WHITE = 0, 1
SIGNS = "+-"
REPETITIONS = 4  # sennichite: the same position for the fourth time


def require_cshogi():
    if cshogi is None:
        raise ImportError(f"playing needs cshogi: {INSTALL_HINT}")
    return cshogi


@dataclass(frozen=True)
class Limit:
    """One engine's search limit: nodes per move, byoyomi (ms), or main time + increment (ms)."""

    nodes: int | None = None
    byoyomi: int | None = None
    time: int | None = None
    inc: int = 0

    @classmethod
    def parse(cls, spec: str) -> "Limit":
        """``nodes=800``, ``byoyomi=100`` or ``time=60000,inc=1000``."""
        values = {}
        for item in spec.split(","):
            key, sep, value = item.partition("=")
            if not sep or key.strip() not in ("nodes", "byoyomi", "time", "inc") or not value.strip().isdigit():
                raise ValueError(f"limit {spec!r}: expected nodes=N, byoyomi=MS or time=MS,inc=MS")
            values[key.strip()] = int(value)
        limit = cls(**values)
        kinds = [k for k in ("nodes", "byoyomi", "time") if getattr(limit, k) is not None]
        if len(kinds) != 1 or (limit.inc and limit.time is None):
            raise ValueError(f"limit {spec!r}: give exactly one of nodes, byoyomi, time (inc goes with time)")
        return limit

    def describe(self) -> str:
        if self.nodes is not None:
            return f"nodes={self.nodes}"
        if self.byoyomi is not None:
            return f"byoyomi={self.byoyomi}"
        return f"time={self.time},inc={self.inc}"


@dataclass(frozen=True)
class Rules:
    max_moves: int = 320  # plies from the start position, opening included; reaching it is a draw
    resign_cp: int | None = None  # adjudicate a loss when the mover's own score stays ≤ −resign_cp ...
    resign_moves: int = 3  # ... for this many of its moves in a row
    move_timeout: float = 60.0  # s; a nodes-limited move slower than this is a hang
    time_margin: float = 1.0  # s over the byoyomi / clock before a time loss


@dataclass(frozen=True)
class Opening:
    index: int  # line number in the openings file
    sfen: str  # start position
    moves: tuple[str, ...]  # USI moves played before the engines take over


@dataclass
class Player:
    engine: UsiEngine
    name: str
    limit: Limit


@dataclass
class Move:
    usi: str
    csa: str  # with the colour sign, e.g. "+7776FU"
    seconds: float | None = None  # None for opening moves
    score: int | None = None  # Black's view (floodgate's '** convention); mate ±100000
    pv_csa: list[str] = field(default_factory=list)  # the expected continuation after this move


@dataclass
class Ending:
    summary: str  # floodgate's summary kind: toryo, kachi, sennichite, oute_sennichite, max_moves, ...
    token: str  # the CSA ending line
    winner: int | None  # BLACK, WHITE or None (draw)
    reason: str  # for people: "resigned", "mated", "engine crashed (exit status 1): ..."
    faulty: tuple[int, ...] = ()  # sides whose engine must be restarted before its next game


@dataclass
class PlayedGame:
    start_sfen: str
    opening: Opening
    names: tuple[str, str]
    moves: list[Move]
    ending: Ending
    started: datetime
    finished: datetime


def _loss(side: int, summary: str, token: str, reason: str, faulty: bool = False) -> Ending:
    return Ending(summary, token, side ^ 1, reason, (side,) if faulty else ())


def position_command(start_sfen: str, moves: list[Move]) -> str:
    start = "startpos" if start_sfen == cshogi.STARTING_SFEN else f"sfen {start_sfen}"
    return f"position {start}" + (" moves " + " ".join(m.usi for m in moves) if moves else "")


def go_command(limit: Limit, clocks: list[float]) -> str:
    if limit.nodes is not None:
        return f"go nodes {limit.nodes}"
    if limit.byoyomi is not None:
        return f"go btime 0 wtime 0 byoyomi {limit.byoyomi}"
    btime, wtime = (max(0, int(c)) for c in clocks)  # a clock overdrawn within the time margin shows 0
    return f"go btime {btime} wtime {wtime} binc {limit.inc} winc {limit.inc}"


def _deadline(limit: Limit, clock: float, rules: Rules) -> float:
    if limit.nodes is not None:
        return rules.move_timeout
    budget = limit.byoyomi if limit.byoyomi is not None else clock
    return budget / 1000.0 + rules.time_margin


def play_game(black: Player, white: Player, opening: Opening, rules: Rules) -> PlayedGame:
    """Play one game from ``opening``; never raises for an engine's fault (it loses instead)."""
    board = require_cshogi().Board(opening.sfen)
    players = (black, white)
    started = datetime.now()
    moves = [_push(board, usi) for usi in opening.moves]
    history = _History(board)
    clocks = [float(p.limit.time or 0) for p in players]
    ending = _start_engines(players)
    while ending is None:
        side = board.turn
        ending = _before_move(board, side, moves, rules)
        if ending is not None:
            break
        player = players[side]
        deadline = _deadline(player.limit, clocks[side], rules)
        try:
            result = player.engine.search(position_command(opening.sfen, moves), go_command(player.limit, clocks),
                                          deadline, grace=min(2.0, max(1.0, deadline)))
        except EngineTimeout as e:
            what = "hung" if player.limit.nodes is not None else "lost on time"
            ending = _loss(side, "time up", "%TIME_UP", f"{what}: {e.reason}", faulty=not e.responsive)
            break
        except EngineError as e:
            ending = _loss(side, "abnormal", "%CHUDAN", e.reason, faulty=True)
            break
        if player.limit.time is not None:
            clocks[side] += player.limit.inc - 1000.0 * result.elapsed
        ending = _answer(board, side, result, moves) or history.after_move(board)
    _send_gameover(players, ending)
    return PlayedGame(opening.sfen, opening, (black.name, white.name), moves, ending, started, datetime.now())


def _start_engines(players) -> Ending | None:
    for side, player in enumerate(players):
        try:
            if not player.engine.alive:
                player.engine.start()
            player.engine.new_game()
        except EngineError as e:
            return _loss(side, "abnormal", "%CHUDAN", f"not ready: {e.reason}", faulty=True)
    return None


def _before_move(board, side: int, moves: list[Move], rules: Rules) -> Ending | None:
    """Endings decided before the side to move is asked: mate, the move limit, score adjudication."""
    if len(board.legal_moves) == 0:
        return _loss(side, "toryo", "%TORYO", "mated (no legal move)")
    if len(moves) >= rules.max_moves:
        return Ending("max_moves", "%JISHOGI", None, f"move limit ({rules.max_moves}) reached")
    if rules.resign_cp is not None:
        own = [m.score for m in moves if m.csa[0] == SIGNS[side] and m.seconds is not None]
        recent = own[-rules.resign_moves:]
        sign = 1 if side == BLACK else -1
        if len(recent) == rules.resign_moves and all(s is not None and sign * s <= -rules.resign_cp for s in recent):
            return _loss(side, "toryo", "%TORYO",
                         f"adjudicated: own score <= -{rules.resign_cp} for {rules.resign_moves} moves")
    return None


def _answer(board, side: int, result: SearchResult, moves: list[Move]) -> Ending | None:
    """Apply the engine's bestmove to the board (and ``moves``), or end the game on it."""
    best = result.bestmove
    if best == "resign":
        return _loss(side, "toryo", "%TORYO", "resigned")
    if best == "win":
        if board.is_nyugyoku():
            return Ending("kachi", "%KACHI", side, "entering-king declaration")
        return _loss(side, "illegal move", f"%{SIGNS[side]}ILLEGAL_ACTION", "false entering-king declaration")
    move = board.move_from_usi(best) if best.isascii() and 4 <= len(best) <= 5 else 0
    if not move or move not in set(board.legal_moves):
        return _loss(side, "illegal move", "%ILLEGAL_MOVE", f"illegal move {best[:40]!r}")
    score = None if result.score is None else (result.score if side == BLACK else -result.score)
    pv = _pv_csa(board, move, result.pv[1:] if result.pv[:1] == [best] else [])
    moves.append(_push(board, best, move, result.elapsed, score, pv))
    return None


def _push(board, usi: str, move: int = 0, seconds=None, score=None, pv=()) -> Move:
    move = move or board.move_from_usi(usi)
    entry = Move(usi, SIGNS[board.turn] + cshogi.move_to_csa(move), seconds, score, list(pv))
    board.push(move)
    return entry


def _pv_csa(board, move: int, continuation: list[str]) -> list[str]:
    """The expected continuation after ``move`` in CSA notation, up to its first illegal move."""
    copy = board.copy()
    copy.push(move)
    out = []
    for usi in continuation[:16]:
        m = copy.move_from_usi(usi) if usi.isascii() and 4 <= len(usi) <= 5 else 0
        if not m or not copy.is_legal(m):
            break
        out.append(SIGNS[copy.turn] + cshogi.move_to_csa(m))
        copy.push(m)
    return out


class _History:
    """Positions seen so far (from the start position) for sennichite and perpetual check."""

    def __init__(self, board):
        self.seen: dict[str, list[int]] = {}
        self.checks: list[bool] = []  # per ply: was the side to move in check
        self._add(board)

    def _add(self, board) -> list[int]:
        key = board.sfen().rsplit(" ", 1)[0]  # without the move number
        self.checks.append(board.is_check())
        plies = self.seen.setdefault(key, [])
        plies.append(len(self.checks) - 1)
        return plies

    def after_move(self, board) -> Ending | None:
        plies = self._add(board)
        if len(plies) < REPETITIONS:
            return None
        first, now = plies[0], plies[-1]
        mover_now = board.turn ^ 1
        for checker in (mover_now, mover_now ^ 1):
            # positions reached by the checker's moves since the first occurrence
            by_checker = range(now if checker == mover_now else now - 1, first, -2)
            if by_checker and all(self.checks[p] for p in by_checker):
                return _loss(checker, "oute_sennichite", f"%{SIGNS[checker]}ILLEGAL_ACTION",
                             "perpetual check (sennichite with continuous checks)")
        return Ending("sennichite", "%SENNICHITE", None, "sennichite (fourfold repetition)")


def _send_gameover(players, ending: Ending) -> None:
    for side, player in enumerate(players):
        if side in ending.faulty:
            continue
        result = "draw" if ending.winner is None else "win" if ending.winner == side else "lose"
        player.engine.game_over(result)
