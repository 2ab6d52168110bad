"""Test helper: dlshogi hcpe3 files written field by field in dlshogi's layout (``cppshogi.h``:
HuffmanCodedPosAndEval3, MoveInfo, MoveVisits; the conventions of ``csa_to_hcpe3.py``), with cshogi
for the Huffman code and the move16 — independent of shogitrain's reader."""

from __future__ import annotations

import numpy as np
import cshogi
from cshogi import CSA

# dlshogi/utils/csa_to_hcpe3.py declares the records so
HuffmanCodedPosAndEval3 = np.dtype([
    ("hcp", cshogi.dtypeHcp),          # start position
    ("moveNum", np.uint16),            # moves
    ("result", np.uint8),              # xxxxxx11 winner, xxxxx1xx sennichite, xxxx1xxx nyugyoku, xxx1xxxx max moves
    ("opponent", np.uint8),            # 0 self-play, 1 black usi, 2 white usi
])
MoveInfo = np.dtype([
    ("selectedMove16", cshogi.dtypeMove16),
    ("eval", cshogi.dtypeEval),        # side to move
    ("candidateNum", np.uint16),
])
MoveVisits = np.dtype([
    ("move16", cshogi.dtypeMove16),
    ("visitNum", np.uint16),
])
SENNICHITE, NYUGYOKU, MAXMOVE = 4, 8, 16


def game_bytes(sfen: str, moves, result: int, opponent: int = 0) -> bytes:
    """One game: ``moves`` are (usi, eval from the side to move, [(candidate usi, visits), ...]); an
    empty candidate list writes candidateNum 0."""
    board = cshogi.Board(sfen)
    header = np.zeros(1, HuffmanCodedPosAndEval3)
    board.to_hcp(header["hcp"])
    header["moveNum"], header["result"], header["opponent"] = len(moves), result, opponent
    out = [header.tobytes()]
    for usi, value, candidates in moves:
        info = np.zeros(1, MoveInfo)
        info["selectedMove16"] = cshogi.move16(board.move_from_usi(usi))
        info["eval"], info["candidateNum"] = value, len(candidates)
        out.append(info.tobytes())
        if candidates:
            visits = np.zeros(len(candidates), MoveVisits)
            visits["move16"] = [cshogi.move16(board.move_from_usi(u)) for u, _ in candidates]
            visits["visitNum"] = [n for _, n in candidates]
            out.append(visits.tobytes())
        board.push_usi(usi)
    return b"".join(out)


def games_from_csa(paths, rng: np.random.Generator | None = None, limit: int = 10**9):
    """(sfen, moves, result) of the games of CSA files, as csa_to_hcpe3 converts them (eval from the
    side to move, the result bits from the ending). With ``rng``, each move gets a search-like
    candidate list: the played move (most visits) and up to 7 other legal moves with random visits."""
    out = []
    for path in paths:
        for kif in CSA.Parser.parse_file(str(path)):
            result = kif.win + {"%SENNICHITE": SENNICHITE, "%KACHI": NYUGYOKU, "%JISHOGI": MAXMOVE}.get(kif.endgame, 0)
            board = cshogi.Board(kif.sfen)
            moves = []
            for move, score in zip(kif.moves, kif.scores):
                value = min(32767, max(score, -32767))
                usi = cshogi.move_to_usi(move)
                candidates = [(usi, 1)]
                if rng is not None:
                    others = [cshogi.move_to_usi(m) for m in board.legal_moves if m != move]
                    picked = rng.permutation(len(others))[: rng.integers(0, 8)]
                    top = int(rng.integers(50, 1000))
                    candidates = [(usi, top)] + [(others[k], int(rng.integers(0, top))) for k in picked]
                moves.append((usi, value if board.turn == cshogi.BLACK else -value, candidates))
                board.push(move)
            out.append((kif.sfen, moves, result))
            if len(out) >= limit:
                return out
    return out


def hcpe_records(games) -> np.ndarray:
    """hcpe records (cshogi's HuffmanCodedPosAndEval) of (sfen, moves, result) games, as csa_to_hcpe
    writes them: one per move, eval from the side to move, gameResult the winner."""
    out = []
    for sfen, moves, result in games:
        board = cshogi.Board(sfen)
        records = np.zeros(len(moves), cshogi.HuffmanCodedPosAndEval)
        for i, (usi, value, _) in enumerate(moves):
            board.to_hcp(records[i:i + 1]["hcp"])
            records[i]["eval"], records[i]["gameResult"] = value, result & 3
            records[i]["bestMove16"] = cshogi.move16(board.move_from_usi(usi))
            board.push_usi(usi)
        out.append(records)
    return np.concatenate(out)
