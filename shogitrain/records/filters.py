"""Game filters with the semantics of dlshogi's floodgate converter (csa_to_hcpe).

A game is kept when its ending is allowed, it has enough moves, both players are rated at least
``min_rating`` (0 = off), and — for records that carry engine evals — it has at least one eval
comment. Positions are cut at the first mate score (|score| ≥ ``mate_score``) and, optionally, at the
first |score| above ``max_eval``: what follows is decided and teaches nothing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from shogitrain.records.game import GameRecord
from shogitrain.names import DEFAULT_MAX_MOVES

DECISIVE_ENDINGS = ("%TORYO", "%KACHI")
DRAW_ENDINGS = ("%SENNICHITE", "%JISHOGI", "%MAX_MOVES", "%HIKIWAKE")
# Endings whose loser is the side that made an error rather than the side that was outplayed;
# dlshogi keeps only resignations and declarations by default, and so do we.
ALL_ENDINGS = DECISIVE_ENDINGS + DRAW_ENDINGS + (
    "%TIME_UP", "%ILLEGAL_MOVE", "%+ILLEGAL_ACTION", "%-ILLEGAL_ACTION", "%TSUMI", "%FUZUMI", "%CHUDAN",
)


@dataclass(frozen=True)
class GameFilter:
    endings: tuple[str, ...] = DECISIVE_ENDINGS
    draws: bool = False  # add DRAW_ENDINGS, scored 0.5
    min_moves: int = 50
    min_rating: float = 0.0
    require_eval: bool = True
    mate_score: int = 100000  # 0 = keep positions after mate scores
    max_eval: int | None = None
    max_moves: int = DEFAULT_MAX_MOVES  # a game ends here (a draw) when its record states no Max_Moves
    # hcpe3 (whose games the filters above do not touch): dlshogi's --temperature on visit counts
    temperature: float = 1.0

    def allowed_endings(self) -> set[str]:
        allowed = set(self.endings)
        if self.draws:
            allowed.update(DRAW_ENDINGS)
        return allowed

    def as_dict(self) -> dict:
        d = asdict(self)
        d["endings"] = sorted(self.allowed_endings(), key=str)
        return d

    def rejection(self, game: GameRecord, has_evals_format: bool) -> str | None:
        """Why the game is dropped, or None when it is kept."""
        ending = game.endgame
        if ending not in self.allowed_endings():
            return f"ending {ending or 'missing'} not allowed"
        if len(game.moves) < self.min_moves:
            return f"fewer than {self.min_moves} moves"
        if self.min_rating > 0:
            black, white = game.ratings
            if black is None or white is None or min(black, white) < self.min_rating:
                return f"a player rated below {self.min_rating:g} (or unrated)"
        if self.require_eval and has_evals_format and not any(s is not None for s in game.scores):
            return "no eval comments"
        return None

    def positions_kept(self, game: GameRecord) -> int:
        """Number of leading positions kept after the mate-score / max-eval cut."""
        for i, score in enumerate(game.scores):
            if score is None:
                continue
            if self.mate_score and abs(score) >= self.mate_score:
                return i
            if self.max_eval is not None and abs(score) > self.max_eval:
                return i
        return len(game.moves)
