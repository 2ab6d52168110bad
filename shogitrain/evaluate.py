"""`shogitrain eval`: a checkpoint scored on a prepared split, and the metrics as a text table."""

from __future__ import annotations

import math

from shogitrain.train.metrics import METRIC_NAMES

__all__ = ["evaluate_checkpoint", "format_metrics_table"]


def evaluate_checkpoint(checkpoint, data, *, split: str = "test", batch_size: int = 1024, device: str = "auto",
                        amp: str = "off", progress: bool = True, weights: str = "raw") -> dict:
    """`shogitrain eval`: load a checkpoint, score it on a prepared split; returns a JSON-able dict.

    ``weights``: 'raw' (the trained weights) or 'averaged' (the run's SWA/EMA average)."""
    from shogitrain.device import pick_device, retain_freed_memory
    from shogitrain.features import FEATURE_VERSION
    from shogitrain.shards.reader import ShardDataset, manifest_hash
    from shogitrain.train.checkpoint import load_model_checkpoint
    from shogitrain.train.data import game_min_ratings
    from shogitrain.train.evaluation import evaluate_dataset

    state, model = load_model_checkpoint(checkpoint, FEATURE_VERSION, weights)
    dev = pick_device(device)
    if dev.type == "cpu":
        retain_freed_memory()
    model.to(dev)
    dataset = ShardDataset(data, split)
    overall, strata = evaluate_dataset(model, dataset, dev, batch_size=batch_size, amp=amp,
                                       min_ratings=game_min_ratings(data), progress=progress)
    return {
        "checkpoint": str(checkpoint), "data": str(data), "split": split, "positions": len(dataset),
        "data_manifest_sha256": manifest_hash(data), "model_config": state["model_config"],
        "step": state.get("train_state", {}).get("step"), "weights": weights,
        "metrics": overall, "stratified": strata,
    }


def format_metrics_table(result: dict) -> str:
    """The eval result as a text table: one column for all positions, one per stratum."""
    columns = {"all": dict(result["metrics"], positions=result["positions"])}
    columns.update(result["stratified"])
    names = ["positions", *METRIC_NAMES]
    width = max(len(n) for n in names) + 2
    col_w = max(12, *(len(c) + 2 for c in columns))
    lines = [" " * width + "".join(f"{c:>{col_w}}" for c in columns)]
    for name in names:
        cells = []
        for values in columns.values():
            v = values.get(name, math.nan)
            cells.append(f"{int(v):>{col_w}d}" if name == "positions" else f"{v:>{col_w}.4f}")
        lines.append(f"{name:<{width}}" + "".join(cells))
    return "\n".join(lines)
