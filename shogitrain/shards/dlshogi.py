"""dlshogi's training files → shard rows: the games recovered from hcpe, the games of hcpe3 with their
visit-count policy targets. ``prepare`` calls these in its workers; each bad record or game becomes a
report entry (``file``, ``record``: its index in the file, ``reason``) and the rest is kept. Neither
format records the ply: a game that starts from the standard start position numbers its positions
1, 2, …, others get ply 0 (unknown).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from shogitrain.records.hcpe import hcp_states, hcpe_games, hcpe_records
from shogitrain.records.hcpe3 import (
    Hcpe3Problem, read_hcpe3_games, replay_hcpe3_game, result_meta, visit_weights,
)
from shogitrain.shards.convert import hcpe_result_codes, result_codes
from shogitrain.shards.format import POSITION_DTYPE
from shogitrain.shards.targets import PAIR_DTYPE, TARGET_DTYPE
from shogitrain.shogi.vocabulary import STARTPOS_SFEN, parse_sfen

_ROW = POSITION_DTYPE.itemsize
# A game recovered from an hcpe piece may run past the piece's end by at most this many records.
HCPE_OVERRUN = 2048


@dataclass
class BinaryGame:
    """A game read from hcpe / hcpe3: its games.jsonl metadata, split key and rows (+ soft targets)."""

    meta: dict
    key: bytes
    rows: np.ndarray
    targets: np.ndarray | None = None   # TARGET_DTYPE per row, ``start`` into ``pairs``
    pairs: np.ndarray | None = None


def _startpos_state() -> bytes:
    board, hand, turn, _ = parse_sfen(STARTPOS_SFEN)
    return bytes(board) + bytes(hand[0]) + bytes(hand[1]) + bytes([turn])


_STARTPOS = _startpos_state()


def _rows(states: np.ndarray, move16, evals, result, start: bytes, moves_in) -> np.ndarray:
    """Rows of positions ``states``: ply = 1 + ``moves_in`` (moves played since ``start``) when the game
    starts from the standard start position, else 0."""
    rows = np.zeros(len(states), POSITION_DTYPE)
    rows.view(np.uint8).reshape(len(states), _ROW)[:, :96] = states
    rows["move16"], rows["eval"], rows["result"] = move16, evals, result
    if start == _STARTPOS:
        rows["ply"] = np.minimum(np.asarray(moves_in) + 1, 0xFFFF)
    return rows


def _skip(source: str, record: int, reason: str) -> dict:
    return {"file": source, "line": None, "record": record, "reason": reason}


def hcpe_file_games(raw: bytes, source: str, first: int = 0, own: tuple[int, int] | None = None):
    """(games, skipped) of hcpe bytes ``raw`` whose first record is record ``first`` of the file.
    ``own``: keep only the games that start in this record range (a piece of a large file), and report
    only its bad records; ``raw`` then reaches up to HCPE_OVERRUN records past it."""
    records, tail = hcpe_records(raw)
    lo, hi = own if own is not None else (first, first + len(records))
    states, spans, bad = hcpe_games(records)
    skipped = [_skip(source, first + i, why) for i, why in bad if lo <= first + i < hi]
    if tail and hi == first + len(records):      # this piece holds the end of the file
        skipped.append(_skip(source, hi, f"truncated record: {tail} of 38 bytes at the end of the file"))
    games = []
    for a, b in spans:
        if not lo <= first + a < hi:
            continue
        part = records[a:b]
        rows = _rows(states[a:b], part["bestMove16"], part["eval"],
                     hcpe_result_codes(part["gameResult"], states[a:b, 95]), states[a].tobytes(), np.arange(b - a))
        result = int(part["gameResult"][0])
        meta = {"source": source, "line": None, "format": "hcpe", "records": [first + a, first + b],
                "endgame": None, "winner": {1: 0, 2: 1}.get(result), "moves": b - a}
        games.append(BinaryGame(meta, hashlib.blake2b(part.tobytes(), digest_size=16).digest(), rows))
    return games, skipped


def hcpe3_file_games(raw: bytes, source: str, temperature: float, first_game: int = 0, base_offset: int = 0):
    """(games, skipped, games read) of hcpe3 bytes ``raw`` (whole games, the first being game
    ``first_game`` at byte ``base_offset`` of the file): dlshogi's training positions of each game, with
    the visit distributions (``temperature``) as soft targets. A game that cannot be read is skipped."""
    games, skipped, read = [], [], 0
    framed = list(read_hcpe3_games(raw, first_game, base_offset))
    problems = [g for g in framed if isinstance(g, Hcpe3Problem)]
    framed = [g for g in framed if not isinstance(g, Hcpe3Problem)]
    starts, ok = hcp_states(np.stack([g.header["hcp"] for g in framed]) if framed else np.zeros((0, 32), np.uint8))
    for game, start, decodes in zip(framed, starts, ok):
        read += 1
        try:
            if not decodes:
                raise ValueError("bad Huffman code: the start position does not decode")
            winner, endgame = result_meta(int(game.header["result"]))
            converted = _hcpe3_game(game, start.tobytes(), winner, temperature)
        except ValueError as e:
            skipped.append(_skip(source, game.index, f"bad hcpe3 game at byte {game.offset}: {e}"))
            continue
        if converted is None:
            skipped.append(_skip(source, game.index, "no training positions (every move has candidateNum 0 "
                                                     "or repeats a position)"))
            continue
        rows, targets, pairs = converted
        meta = {"source": source, "line": None, "format": "hcpe3", "game": game.index, "offset": game.offset,
                "result": int(game.header["result"]), "opponent": int(game.header["opponent"]),
                "endgame": endgame, "winner": winner, "moves": len(game.moves)}
        games.append(BinaryGame(meta, hashlib.blake2b(game.raw, digest_size=16).digest(), rows, targets, pairs))
    for p in problems:
        read += 1
        skipped.append(_skip(source, p.index, f"bad hcpe3 game at byte {p.offset}: {p.reason}"))
    return games, skipped, read


def _hcpe3_game(game, start: bytes, winner: int | None, temperature: float):
    """(rows, targets, pairs) of one game's training positions, None when it has none."""
    positions = replay_hcpe3_game(game, start)
    kept = np.array(positions.kept, np.int64)
    if len(kept) == 0:
        return None
    candidates = game.moves["candidateNum"].astype(np.int64)
    first = np.cumsum(candidates) - candidates
    counts = candidates[kept]
    offsets = np.cumsum(counts) - counts
    picked = np.repeat(first[kept] - offsets, counts) + np.arange(int(counts.sum()))
    weights = visit_weights(game.visits["visitNum"][picked], counts, temperature)
    if np.isnan(weights).any():
        raise ValueError("a move's candidates have no visits at all")
    states = np.frombuffer(positions.states, np.uint8).reshape(len(kept), 96)
    black, white = result_codes(winner, winner is None)
    rows = _rows(states, game.moves["selectedMove16"][kept], game.moves["eval"][kept],
                 np.where(states[:, 95] == 0, black, white), start, kept)
    pairs = np.zeros(len(picked), PAIR_DTYPE)
    pairs["move16"], pairs["weight"] = game.visits["move16"][picked], weights
    targets = np.zeros(len(kept), TARGET_DTYPE)
    targets["start"], targets["count"] = offsets, counts
    targets["result"] = rows["result"] / np.float32(2)
    return rows, targets, pairs
