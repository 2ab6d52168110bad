"""GameRecord: one game as read from any record format (CSA, KIF, SFEN lines, hcpe)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class GameRecord:
    """One game.

    sfen      start position (SFEN, with side to move, hand and ply number)
    moves     the moves in USI notation, validated by replaying them from ``sfen``
    scores    one entry per move: the engine score written after that move (``'**`` comment),
              centipawns from Black's view, exactly as written; None where there is none
    ratings   (black, white) floodgate ratings, None when absent
    names     (black, white) player names, None when absent
    endgame   the ending token, e.g. '%TORYO', '%KACHI', '%SENNICHITE', '%MAX_MOVES'; from the
              ``'summary:`` line when present, else the ``%`` line; None when the record has none
    winner    0 black, 1 white, None for draws and unfinished games
    problems  (line, reason) for anything that made the record incomplete (e.g. an illegal move:
              the game is kept up to the move before it)
    positions the position before each move as the reader replayed it (``read_csa(...,
              positions=True)``): ``len(moves) * 96`` bytes, each a shard row's board, hands and
              side to move; None when not kept. Lets ``shards.convert`` skip a second replay.
    """

    sfen: str
    moves: list[str] = field(default_factory=list)
    scores: list[int | None] = field(default_factory=list)
    ratings: tuple[float | None, float | None] = (None, None)
    names: tuple[str | None, str | None] = (None, None)
    endgame: str | None = None
    winner: int | None = None
    event: str | None = None
    start_time: str | None = None
    source: str | None = None
    line: int | None = None  # line of the file where the game starts (1-based)
    problems: list[tuple[int | None, str]] = field(default_factory=list)
    positions: bytes | None = field(default=None, repr=False, compare=False)


class RecordError(Exception):
    """Nothing usable could be read from a record file (empty, binary, no start position, unknown type).

    ``file`` is the path (or ``'<text>'`` for in-memory input), ``line`` the 1-based line number where the
    problem was found (None when it concerns the whole file), ``reason`` a one-line explanation.
    """

    def __init__(self, file, line: int | None, reason: str):
        self.file = None if file is None else str(file)
        self.line = line
        self.reason = reason
        where = self.file or "<text>"
        if line is not None:
            where = f"{where}:{line}"
        super().__init__(f"{where}: {reason}")

    def __reduce__(self):  # picklable across multiprocessing workers
        return (type(self), (self.file, self.line, self.reason))
