"""`shogitrain export-data`: one split of a prepared dataset written back as dlshogi's hcpe or hcpe3.

hcpe: one 38-byte record per row, in the split's order: the position Huffman-coded, the row's eval
(0 where the record had none), its move as bestMove16, the game result from the row's result (a
float result from averaging: above 0.5 a win of the side to move, below a loss, else a draw).

hcpe3: one game per run of rows in which each position follows from the previous one by its move
(a game whose positions dlshogi would skip — candidateNum 0, repetitions — comes back as several
games). Result byte and opponent from games.jsonl (as read from an hcpe3 file, else built from the
winner and the ending); each move's candidates are the row's soft target with visit counts scaled so
that the largest is 65535 (dlshogi's ``--temperature 1`` reads back the same distribution), or its move
with one visit. The file is written to a temporary name and renamed into place when complete.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from shogitrain.files import atomic_write, write_error
from shogitrain.records.hcpe import HCPE_DTYPE, encode_hcp, follow_games
from shogitrain.records.hcpe3 import HCPE3_DTYPE, MOVE_INFO_DTYPE, MOVE_VISITS_DTYPE, result_bits
from shogitrain.shards.format import EVAL_MISSING, POSITION_DTYPE
from shogitrain.shards.reader import DatasetError, ShardDataset, iter_games
from shogitrain.shards.targets import SoftRows

FORMATS = ("hcpe", "hcpe3")
CHUNK = 1 << 16


def _split(item) -> tuple[np.ndarray, SoftRows | None]:
    return (item.rows, item) if isinstance(item, SoftRows) else (item, None)


def _states(rows: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(rows.view(np.uint8).reshape(len(rows), POSITION_DTYPE.itemsize)[:, :96])


def _evals(rows: np.ndarray) -> np.ndarray:
    return np.where(rows["eval"] == EVAL_MISSING, 0, rows["eval"])


def hcpe_records(item) -> np.ndarray:
    """hcpe records of rows (or SoftRows)."""
    rows, soft = _split(item)
    out = np.zeros(len(rows), HCPE_DTYPE)
    out["hcp"] = encode_hcp(rows["board"], rows["hand"], rows["turn"])
    out["eval"] = _evals(rows)
    out["bestMove16"] = rows["move16"]
    result = soft.result if soft is not None else rows["result"] / 2
    mover_wins = np.where(rows["turn"] == 0, 1, 2)
    out["gameResult"] = np.where(result > 0.5, mover_wins, np.where(result < 0.5, 3 - mover_wins, 0))
    return out


def _candidates(rows: np.ndarray, soft: SoftRows | None) -> list[np.ndarray]:
    """Each row's MoveVisits: its soft target, largest weight scaled to 65535, or its move once."""
    out = []
    starts = np.cumsum(soft.counts) - soft.counts if soft is not None else None
    for i in range(len(rows)):
        if soft is None or soft.counts[i] == 0:
            visits = np.zeros(1, MOVE_VISITS_DTYPE)
            visits["move16"], visits["visitNum"] = rows["move16"][i], 1
        else:
            pairs = soft.pairs[starts[i]:starts[i] + soft.counts[i]]
            visits = np.zeros(len(pairs), MOVE_VISITS_DTYPE)
            visits["move16"] = pairs["move16"]
            visits["visitNum"] = np.round(pairs["weight"] / max(float(pairs["weight"].max()), 1e-30) * 65535)
        out.append(visits)
    return out


def hcpe3_games(item, game: dict) -> tuple[bytes, int]:
    """(hcpe3 bytes, games) of one game's rows (or SoftRows), cut where the positions do not follow."""
    rows, soft = _split(item)
    states = _states(rows)
    spans, _ = follow_games(states, rows["move16"])
    result = game["result"] if "result" in game else result_bits(game.get("winner"), game.get("endgame"))
    visits = _candidates(rows, soft)
    hcp = encode_hcp(rows["board"], rows["hand"], rows["turn"])
    infos = np.zeros(len(rows), MOVE_INFO_DTYPE)
    infos["selectedMove16"], infos["eval"] = rows["move16"], _evals(rows)
    infos["candidateNum"] = [len(v) for v in visits]
    parts = []
    for first, stop in spans:
        header = np.zeros(1, HCPE3_DTYPE)
        header["hcp"], header["moveNum"] = hcp[first], stop - first
        header["result"], header["opponent"] = result, game.get("opponent", 0)
        parts.append(header.tobytes())
        for i in range(first, stop):
            parts += [infos[i].tobytes(), visits[i].tobytes()]
    return b"".join(parts), len(spans)


def export_data(root, fmt: str, split: str, out) -> dict:
    """Write ``split`` of the dataset ``root`` to ``out`` as ``fmt`` ('hcpe' | 'hcpe3'); returns
    ``{"format", "path", "positions", "games"}`` (games: hcpe3 games written). DatasetError for a
    dataset that cannot be read, WriteError for an output that cannot be written."""
    if fmt not in FORMATS:
        raise DatasetError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    data = ShardDataset(root, split)
    out = Path(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise write_error(e, out) from None
    games = 0
    with atomic_write(out, "wb") as f:
        if fmt == "hcpe":
            for start in range(0, len(data), CHUNK):
                f.write(hcpe_records(data.read(np.arange(start, min(start + CHUNK, len(data))))).tobytes())
        else:
            for game in iter_games(root):
                if game["split"] != split or not game["positions"]:
                    continue
                rows = data.read(np.arange(game["row_start"], game["row_start"] + game["positions"]))
                blob, n = hcpe3_games(rows, game)
                games += n
                f.write(blob)
    return {"format": fmt, "path": str(out), "positions": len(data), "games": games}
