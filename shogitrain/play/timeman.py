"""Time management: what a ``go`` command allows, and when the search stops (dlshogi's rules).

The move's time target is ``remaining / (14 + max(0, 30 - ply)) + increment``, at least the
byoyomi (less ``Byoyomi_Margin``); the main time is reduced by ``Time_Margin`` first when there
is no byoyomi. The search never stops before the byoyomi is used, and stops early once the most
visited move cannot be overtaken in the time left at the current speed (checked from a tenth of
the target on). Past ply 20, with time to spare, an unclear choice (best < 1.5 × second in visits,
or a worse value) doubles the target once. The clock is never overrun: the search stops when the
next batch would end past ``remaining + byoyomi`` (less the margins).
"""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass
class Limits:
    """The fields of a USI ``go`` command (times in milliseconds; 0 = not given)."""

    btime: int = 0
    wtime: int = 0
    binc: int = 0
    winc: int = 0
    byoyomi: int = 0
    nodes: int = 0
    infinite: bool = False
    ponder: bool = False

    @classmethod
    def parse(cls, tokens: list[str]) -> "Limits":
        """``go`` arguments → Limits; ValueError for a number that is not one."""
        limits = cls()
        numbers = {"btime", "wtime", "binc", "winc", "byoyomi", "movetime", "nodes"}
        it = iter(tokens)
        for token in it:
            if token in ("infinite", "ponder"):
                setattr(limits, token, True)
            elif token in numbers:
                value = next(it, None)
                if value is None or not value.lstrip("-").isdigit():
                    raise ValueError(f"go {token}: expected a number, got {value!r}")
                setattr(limits, "byoyomi" if token == "movetime" else token, max(0, int(value)))
        return limits

    @property
    def timed(self) -> bool:
        return bool(self.btime or self.wtime or self.byoyomi or self.binc or self.winc)


@dataclass
class TimeBudget:
    """Milliseconds for one move: ``target`` (soft), ``minimum`` (byoyomi), ``hard`` (the clock)."""

    target: float
    minimum: float
    hard: float
    remaining: float
    may_extend: bool


def plan_time(limits: Limits, turn: int, ply: int, byoyomi_margin: int, time_margin: int,
              draw_ply: int = 0) -> TimeBudget:
    """The budget of the side to move (``turn`` 0 black, 1 white) at game ply ``ply``."""
    remaining = float(limits.btime if turn == 0 else limits.wtime)
    inc = float(limits.binc if turn == 0 else limits.winc)
    byoyomi = float(max(0, limits.byoyomi - byoyomi_margin)) if limits.byoyomi else 0.0
    if not limits.byoyomi:
        remaining = max(0.0, remaining - time_margin)
    divisor = 14 + max(0, 30 - ply)
    if draw_ply and draw_ply - ply >= 0:         # use the time up before the game is drawn
        divisor = min(divisor, draw_ply - ply + 1)
    target = max(remaining / divisor + inc, byoyomi)
    hard = remaining + byoyomi if limits.byoyomi else max(remaining, 0.0)
    target = min(target, hard)
    return TimeBudget(target, byoyomi, hard, remaining, may_extend=target > byoyomi)


class Clock:
    """When a timed search should stop; ``start()`` again at ponderhit."""

    def __init__(self, budget: TimeBudget, ply: int):
        self.budget = budget
        self.ply = ply
        self.start()

    def start(self) -> None:
        self.started = time.monotonic()
        self.target = self.budget.target
        self.may_extend = self.budget.may_extend

    def elapsed_ms(self) -> float:
        return (time.monotonic() - self.started) * 1000.0

    def should_stop(self, playouts: int, first: int, second: int, first_value: float, second_value: float,
                    batch_ms: float, proven: bool) -> bool:
        """dlshogi's stopping rule (module docstring), given this search's playouts, the visits and
        values of the two most visited root moves and the duration of the last batch."""
        spent = self.elapsed_ms()
        b = self.budget
        if spent + batch_ms > b.hard:
            return True
        if spent < b.minimum or spent * 10 < self.target:
            return False
        if proven:
            return True
        rest = playouts * (self.target - spent) / spent if spent > 0 else 0.0
        if first - second <= rest:
            return False
        if (self.may_extend and self.ply > 20 and b.remaining > self.target * 2
                and (first < second * 1.5 or first_value < second_value)):
            self.target = min(self.target * 2, b.hard)
            self.may_extend = False
            return False
        return True
