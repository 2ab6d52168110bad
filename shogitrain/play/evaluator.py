"""The net behind one batched call: positions in, policy logits and win probabilities out.

``load_evaluator(path, device, batch_size)`` opens a shogitrain checkpoint (the model rebuilt and
fused: BatchNorm and weight standardisation folded, eval mode) or an ONNX file with dlshogi's I/O
(``input1``/``input2`` → ``output_policy`` logits, ``output_value`` probability) through
onnxruntime. The search writes each leaf into a preallocated input row (``write(slot, board)``:
cshogi's dlshogi features, bit-identical to ``shogitrain.features`` and faster at search batch
sizes, see docs/benchmarks.md "MCTS") and evaluates the rows together (``evaluate(n, start)``).
With ``buffers=2`` there are two batches of rows, for a search that fills one while the net scores
the other.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from shogitrain.names import FEATURES1_PLANES, FEATURES2_PLANES
from shogitrain.play import PlayError, import_cshogi

FEATURES1, FEATURES2 = FEATURES1_PLANES, FEATURES2_PLANES


class Evaluator:
    """Input rows for ``buffers`` batches of ``batch_size`` positions and the net that scores them."""

    def __init__(self, batch_size: int, description: str, features=None, buffers: int = 1):
        import_cshogi()
        from cshogi.dlshogi import make_input_features

        self.batch_size = batch_size
        self.rows = batch_size * buffers
        self.description = description
        if features is None:
            features = (np.zeros((self.rows, FEATURES1, 9, 9), np.float32),
                        np.zeros((self.rows, FEATURES2, 9, 9), np.float32))
        self.features1, self.features2 = features
        self._rows = [(self.features1[i], self.features2[i]) for i in range(self.rows)]
        self._make_input_features = make_input_features

    def write(self, slot: int, board) -> None:
        """Put the dlshogi features of a cshogi board into input row ``slot``."""
        self._make_input_features(board, *self._rows[slot])

    def evaluate(self, n: int, start: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Rows start…start+n-1 → (policy logits float32 [n, 2187], win probability of the side to move [n])."""
        raise NotImplementedError

    def warm_up(self) -> None:
        """Run the net once at full batch and once at batch 1 (first calls allocate and tune)."""
        from cshogi import Board

        board = Board()
        for slot in range(self.batch_size):
            self.write(slot, board)
        for n in (self.batch_size, self.batch_size, 1):
            self.evaluate(n)


class TorchEvaluator(Evaluator):
    """A shogitrain model (``forward(x1, x2) -> (policy logits, value logit)``) on a torch device."""

    def __init__(self, model, device, batch_size: int, description: str, buffers: int = 1):
        import torch

        self.torch = torch
        self.device = torch.device(device)
        fused = model.fused() if hasattr(model, "fused") else model
        self.model = fused.float().to(self.device).eval()
        features = None
        if self.device.type == "cuda":    # page-locked rows: the copy to the GPU runs asynchronously
            features = tuple(torch.zeros(batch_size * buffers, planes, 9, 9, pin_memory=True).numpy()
                             for planes in (FEATURES1, FEATURES2))
        super().__init__(batch_size, description, features, buffers)

    def evaluate(self, n: int, start: int = 0) -> tuple[np.ndarray, np.ndarray]:
        torch = self.torch
        with torch.inference_mode():
            x1 = torch.from_numpy(self.features1[start:start + n]).to(self.device, non_blocking=True)
            x2 = torch.from_numpy(self.features2[start:start + n]).to(self.device, non_blocking=True)
            policy, value = self.model(x1, x2)
            value = torch.sigmoid(value.float()).view(-1)
            return policy.float().cpu().numpy(), value.cpu().numpy()


class OnnxEvaluator(Evaluator):
    """An ONNX file with dlshogi's inputs and outputs (``shogitrain.onnx_net``), run by onnxruntime."""

    def __init__(self, path: Path, device: str, batch_size: int, threads: int, buffers: int = 1):
        from shogitrain.onnx_net import OnnxNet, OnnxNetError

        try:
            self.net = OnnxNet(path, device, threads)
        except OnnxNetError as e:
            raise PlayError(str(e)) from None
        if self.net.input2_planes != FEATURES2:
            raise PlayError(f"{path}: input2 has {self.net.input2_planes} planes (dlshogi's entering-king "
                            f"features); the engine feeds {FEATURES2}")
        super().__init__(batch_size, f"ONNX {path.name} ({self.net.session.get_providers()[0]})", buffers=buffers)

    def evaluate(self, n: int, start: int = 0) -> tuple[np.ndarray, np.ndarray]:
        return self.net.run(self.features1[start:start + n], self.features2[start:start + n])


def load_evaluator(path, device: str = "auto", batch_size: int = 128, threads: int = 0,
                   weights: str = "raw", buffers: int = 1) -> Evaluator:
    """The net in ``path`` (a shogitrain checkpoint, or ``*.onnx``) ready to evaluate batches of
    up to ``batch_size`` positions; PlayError for anything unusable. ``threads`` > 0 sets the CPU
    threads (torch's, process-wide, or onnxruntime's); ``weights``: 'raw' or 'averaged' (SWA/EMA)."""
    path = Path(path)
    if not path.is_file():
        raise PlayError(f"{path}: no such model file")
    if batch_size < 1:
        raise PlayError(f"batch size must be at least 1, not {batch_size}")
    if path.suffix.lower() == ".onnx":
        evaluator = OnnxEvaluator(path, device, batch_size, threads, buffers)
    else:
        evaluator = _torch_evaluator(path, device, batch_size, threads, weights, buffers)
    evaluator.warm_up()
    return evaluator


def _torch_evaluator(path: Path, device: str, batch_size: int, threads: int, weights: str,
                     buffers: int) -> TorchEvaluator:
    import torch

    from shogitrain.device import DeviceError, pick_device
    from shogitrain.features import FEATURE_VERSION
    from shogitrain.train.checkpoint import CheckpointError, load_model_checkpoint

    try:
        torch_device = pick_device(device)
        _, model = load_model_checkpoint(path, FEATURE_VERSION, weights)
    except (CheckpointError, DeviceError) as e:
        raise PlayError(str(e)) from None
    if threads > 0:
        torch.set_num_threads(threads)
    config = model.config
    description = (f"checkpoint {path.name} ({config.get('arch')} {config.get('blocks')}x{config.get('channels')}, "
                   f"{weights} weights) on {torch_device}")
    return TorchEvaluator(model, torch_device, batch_size, description, buffers)
