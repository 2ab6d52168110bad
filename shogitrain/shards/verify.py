"""`shogitrain verify`: a prepared dataset or a run directory checked end to end.

A dataset: manifest.json, games.jsonl and sources.jsonl readable and consistent with each other; every shard
present with the size, .npy header, row count and sha256 the manifest recorded; every row valid
(``shards.format.invalid_rows``, piece totals included). A run directory: its checkpoint loads
and matches the checksum it was saved with, config.yaml, run.json and metrics.jsonl read back.
Datasets prepared before checksums were recorded are checked for everything but the sha256.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from shogitrain.files import file_sha256
from shogitrain.shards.format import ROW_PROBLEMS, invalid_rows
from shogitrain.shards.reader import DatasetError, iter_games, load_manifest, open_shard

CHUNK_ROWS = 1 << 16


def _shard_problems(path: Path, recorded: dict, rows: bool) -> list[str]:
    try:
        array = open_shard(path, recorded)
    except DatasetError as e:
        return [str(e)]
    problems = []
    if "sha256" in recorded and file_sha256(path) != recorded["sha256"]:
        problems.append(f"{path}: sha256 differs from the manifest's (the file was changed or damaged)")
    for start in range(0, len(array) if rows else 0, CHUNK_ROWS):
        codes = invalid_rows(np.asarray(array[start:start + CHUNK_ROWS]), piece_totals=True)
        for row in np.flatnonzero(codes)[:3]:
            problems.append(f"{path}: row {start + int(row)}: {ROW_PROBLEMS[codes[row]]}")
        if codes.any() and len(problems) > 20:
            break
    return problems


def verify_dataset(root, rows: bool = True) -> tuple[list[str], dict]:
    """(problems, counts) of a prepared dataset; no problems means it is sound. ``rows=False``
    skips the row checks (training checks each batch's rows as it gathers them)."""
    root = Path(root)
    manifest = load_manifest(root)
    problems: list[str] = []
    counts = {"shards": 0, "positions": 0, "games": 0, "checksummed": 0}
    try:
        games = sum(1 for _ in iter_games(root))
        counts["games"] = games
        if "games_sha256" in manifest and file_sha256(root / "games.jsonl") != manifest["games_sha256"]:
            problems.append(f"{root / 'games.jsonl'}: sha256 differs from the manifest's")
        declared = sum(int(s.get("games", 0)) for s in manifest["splits"].values())
        if declared != games:
            problems.append(f"{root / 'games.jsonl'}: {games} games, the manifest declares {declared}")
    except DatasetError as e:
        problems.append(str(e))
    if "sources_sha256" in manifest:
        try:
            if file_sha256(root / "sources.jsonl") != manifest["sources_sha256"]:
                problems.append(f"{root / 'sources.jsonl'}: sha256 differs from the manifest's")
        except OSError as e:
            problems.append(f"{root / 'sources.jsonl'}: unreadable ({e.strerror or e})")
    for split, info in manifest["splits"].items():
        shard_rows = sum(int(s.get("rows", 0)) for s in info.get("shards", []))
        if shard_rows != info.get("positions"):
            problems.append(f"{root / 'manifest.json'}: split {split!r} declares {info.get('positions')} positions, "
                            f"its shards {shard_rows}")
        for shard in info.get("shards", []):
            problems += _shard_problems(root / shard["file"], shard, rows)
            counts["shards"] += 1
            counts["positions"] += int(shard.get("rows", 0))
            counts["checksummed"] += "sha256" in shard
    return problems, counts


def verify_run(run_dir) -> tuple[list[str], dict]:
    """(problems, facts) of a run directory: checkpoint, config.yaml, run.json, metrics.jsonl."""
    from shogitrain.config import ConfigError, load_config
    from shogitrain.train.checkpoint import CheckpointError, load_checkpoint
    from shogitrain.train.runlog import MetricsError, read_rows

    run_dir = Path(run_dir)
    problems: list[str] = []
    facts: dict = {}
    if (run_dir / "checkpoint.pt").exists():
        try:
            state = load_checkpoint(run_dir / "checkpoint.pt")
            facts["step"] = state.get("train_state", {}).get("step")
            facts["checksummed"] = "sha256" in state
        except CheckpointError as e:
            problems.append(str(e))
    else:
        facts["step"] = None
    try:
        load_config(run_dir / "config.yaml")
    except ConfigError as e:
        problems.append(str(e))
    try:
        json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        problems.append(f"{run_dir / 'run.json'}: unreadable ({e})")
    try:
        rows, torn = read_rows(run_dir / "metrics.jsonl")
        facts["metrics_rows"] = len(rows)
        if torn:
            problems.append(f"{run_dir / 'metrics.jsonl'}: a torn last line (`train --resume` drops it)")
    except MetricsError as e:
        problems.append(str(e))
    return problems, facts
