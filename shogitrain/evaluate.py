"""`shogitrain eval`: a checkpoint, or any dlshogi-format ONNX model, scored on a prepared split or on
game records prepared on the fly; and the metrics as a text table."""

from __future__ import annotations

import contextlib
import math
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from shogitrain.train.metrics import METRIC_NAMES

__all__ = ["EvalError", "evaluate", "evaluate_checkpoint", "format_metrics_table"]


class EvalError(Exception):
    """Nothing to evaluate on, or a model / data combination that cannot be scored."""


class OnnxModel(nn.Module):
    """An :class:`~shogitrain.onnx_net.OnnxNet` behind our models' ``(policy logits, value logit)``
    interface, for the evaluation pass (its value probability turned back into a logit)."""

    def __init__(self, net):
        super().__init__()
        self.net = net
        self.config = {"input2_planes": net.input2_planes}   # the features to feed it (57 or 119)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        policy, value = self.net.run(x1.float().cpu().numpy(), x2.float().cpu().contiguous().numpy())
        p = np.clip(value.astype(np.float64), 1e-12, 1 - 1e-12)
        value_logit = torch.from_numpy(np.log(p / (1 - p))).float().to(x1.device)
        return torch.from_numpy(policy).float().to(x1.device), value_logit.view(-1, 1)


@contextlib.contextmanager
def _data_split(data: list[Path], split: str, game_filter, progress: bool):
    """(dataset dir, split) to score: a prepared dataset as it is, or record files and directories
    prepared into a temporary dataset whose test split holds all their positions."""
    if len(data) == 1 and (data[0] / "manifest.json").is_file():
        yield data[0], split
        return
    from shogitrain.prepare import prepare

    with tempfile.TemporaryDirectory(prefix="shogitrain-eval-") as tmp:
        root = Path(tmp) / "records"
        kwargs = {"game_filter": game_filter} if game_filter is not None else {}
        prepare([], root, test_data=data, progress=progress, **kwargs)
        yield root, "test"


def evaluate(data, *, checkpoint=None, onnx=None, split: str = "test", batch_size: int = 1024,
             device: str = "auto", amp: str = "off", weights: str = "raw", game_filter=None,
             progress: bool = True) -> dict:
    """Score a checkpoint (``weights``: 'raw' or the run's SWA/EMA 'averaged') or an ONNX file on
    ``data``: one prepared dataset directory, or record files / directories (see ``_data_split``).
    Returns a JSON-able dict: the metrics, their strata by ply and rating, and where they came from."""
    from shogitrain.device import pick_device, resolve_amp, retain_freed_memory
    from shogitrain.features import FEATURE_VERSION
    from shogitrain.onnx_net import OnnxNet
    from shogitrain.shards.reader import ShardDataset, load_manifest, manifest_hash, source_count
    from shogitrain.train.checkpoint import load_model_checkpoint
    from shogitrain.train.data import game_min_ratings
    from shogitrain.train.evaluation import evaluate_dataset

    if (checkpoint is None) == (onnx is None):
        raise EvalError("give one model: a checkpoint or an ONNX file")
    dev = pick_device(device)
    if dev.type == "cpu":
        retain_freed_memory()
    if onnx is not None:
        model, state, amp = OnnxModel(OnnxNet(onnx, str(dev))), {}, "off"
    else:
        state, model = load_model_checkpoint(checkpoint, FEATURE_VERSION, weights)
        model.to(dev)
    paths = [Path(p) for p in ([data] if isinstance(data, (str, Path)) else data)]
    with _data_split(paths, split, game_filter, progress) as (root, split_name):
        dataset = ShardDataset(root, split_name)
        if len(dataset) == 0:
            raise EvalError(f"{', '.join(map(str, paths))}: no positions to evaluate in split {split_name!r}")
        overall, strata = evaluate_dataset(model, dataset, dev, batch_size=batch_size, amp=resolve_amp(amp, dev),
                                           min_ratings=game_min_ratings(root), progress=progress)
        sources = source_count(load_manifest(root))
        digest = manifest_hash(root) if root in paths else None
    return {
        "checkpoint": None if checkpoint is None else str(checkpoint), "onnx": None if onnx is None else str(onnx),
        "data": [str(p) for p in paths], "split": split_name, "positions": len(dataset), "source_files": sources,
        "data_manifest_sha256": digest, "model_config": state.get("model_config"),
        "step": state.get("train_state", {}).get("step"), "weights": weights if onnx is None else None,
        "metrics": overall, "stratified": strata,
    }


def evaluate_checkpoint(checkpoint, data, **options) -> dict:
    """:func:`evaluate` of a checkpoint."""
    return evaluate(data, checkpoint=checkpoint, **options)


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
