"""The net behind one batched call: positions in, policy logits and win probabilities out.

``load_evaluator(path, device, batch_size)`` opens a shogitrain checkpoint (the model rebuilt and
fused: BatchNorm and weight standardisation folded, eval mode) or an ONNX file with dlshogi's I/O
(``input1``/``input2`` → ``output_policy`` logits, ``output_value`` probability) through
onnxruntime. The search writes each leaf into a preallocated input row (``write(slot, board)``:
cshogi's dlshogi features, bit-identical to ``shogitrain.features`` and faster at search batch
sizes, see docs/benchmarks.md "MCTS") and evaluates the rows together (``evaluate(n, start)``).

With ``net_process`` the net runs in a process of its own (:class:`NetProcess`): the rows and the
outputs lie in shared memory, two batches of them, and ``submit`` returns at once, so the search
selects the next batch while the net scores this one (on a CPU, on a core of its own: a Python
thread would not do, since the search holds the GIL and a small net's eager forward needs it).
"""

from __future__ import annotations

import mmap
import os
import signal
import tempfile
import time
from collections import deque
from functools import partial
from pathlib import Path

import numpy as np

from shogitrain.names import FEATURES1_PLANES, FEATURES2_PLANES, POLICY_SIZE
from shogitrain.play import PlayError, import_cshogi

FEATURES1, FEATURES2 = FEATURES1_PLANES, FEATURES2_PLANES
ANSWER_SPIN_SECONDS = 0.002


class Evaluator:
    """Input rows for ``buffers`` batches of ``batch_size`` positions and the net that scores them."""

    def __init__(self, batch_size: int, description: str, features=None, buffers: int = 1):
        import_cshogi()
        from cshogi.dlshogi import make_input_features

        self.batch_size = batch_size
        self.description = description
        if features is None:
            features = (np.zeros((batch_size * buffers, FEATURES1, 9, 9), np.float32),
                        np.zeros((batch_size * buffers, FEATURES2, 9, 9), np.float32))
        self.features1, self.features2 = features
        self._rows = [(self.features1[i], self.features2[i]) for i in range(len(self.features1))]
        self._make_input_features = make_input_features
        self._submitted: deque = deque()

    def write(self, slot: int, board) -> None:
        """Put the dlshogi features of a cshogi board into input row ``slot``."""
        self._make_input_features(board, *self._rows[slot])

    def evaluate(self, n: int, start: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Rows start…start+n-1 → (policy logits float32 [n, 2187], win probability of the side to move [n])."""
        raise NotImplementedError

    # Scoring a batch in two steps; here both happen in ``collect``, a NetProcess overlaps them.
    asynchronous = False

    def submit(self, n: int, start: int = 0) -> None:
        """Have rows start…start+n-1 scored; ``collect()`` returns what ``evaluate`` would, for the
        batches submitted in turn (at most two at a time)."""
        self._submitted.append((n, start))

    def collect(self) -> tuple[np.ndarray, np.ndarray]:
        return self.evaluate(*self._submitted.popleft())

    def close(self) -> None:
        """Release what the net holds beyond memory (a NetProcess: its process)."""

    def working(self) -> bool:
        """False once the net can no longer score (a NetProcess whose process has ended)."""
        return True

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

    def __init__(self, model, device, batch_size: int, description: str, buffers: int = 1, features=None):
        import torch

        from shogitrain.device import retain_freed_memory

        self.torch = torch
        self.device = torch.device(device)
        if self.device.type == "cpu":      # the activations' memory reused batch after batch
            retain_freed_memory()
        fused = model.fused() if hasattr(model, "fused") else model
        self.model = fused.float().to(self.device).eval()
        # page-locked rows on CUDA: the copy to the GPU runs asynchronously
        if features is None and self.device.type == "cuda":
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

    def __init__(self, path: Path, device: str, batch_size: int, threads: int, buffers: int = 1, features=None):
        from shogitrain.onnx_net import OnnxNet, OnnxNetError

        try:
            self.net = OnnxNet(path, device, threads)
        except OnnxNetError as e:
            raise PlayError(str(e)) from None
        if self.net.input2_planes != FEATURES2:
            raise PlayError(f"{path}: input2 has {self.net.input2_planes} planes (dlshogi's entering-king "
                            f"features); the engine feeds {FEATURES2}")
        super().__init__(batch_size, f"ONNX {path.name} ({self.net.session.get_providers()[0]})", features, buffers)

    def evaluate(self, n: int, start: int = 0) -> tuple[np.ndarray, np.ndarray]:
        return self.net.run(self.features1[start:start + n], self.features2[start:start + n])


def load_evaluator(path, device: str = "auto", batch_size: int = 128, threads: int = 0,
                   weights: str = "raw", net_process: bool = False, buffers: int = 1,
                   features=None) -> Evaluator:
    """The net in ``path`` (a shogitrain checkpoint, or ``*.onnx``) ready to evaluate batches of
    up to ``batch_size`` positions; PlayError for anything unusable. ``threads`` > 0 sets the CPU
    threads (torch's, process-wide, or onnxruntime's); ``weights``: 'raw' or 'averaged' (SWA/EMA);
    ``net_process``: a NetProcess running it (``buffers`` and ``features`` are the rows it scores)."""
    path = Path(path)
    if not path.is_file():
        raise PlayError(f"{path}: no such model file")
    if batch_size < 1:
        raise PlayError(f"batch size must be at least 1, not {batch_size}")
    if net_process:
        return NetProcess(partial(load_evaluator, path, device, threads=threads, weights=weights), batch_size)
    if path.suffix.lower() == ".onnx":
        evaluator = OnnxEvaluator(path, device, batch_size, threads, buffers, features)
    else:
        evaluator = _torch_evaluator(path, device, batch_size, threads, weights, buffers, features)
    evaluator.warm_up()
    return evaluator


def _torch_evaluator(path: Path, device: str, batch_size: int, threads: int, weights: str,
                     buffers: int, features) -> TorchEvaluator:
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
    return TorchEvaluator(model, torch_device, batch_size, description, buffers, features)


def _shared_arrays(path: str, rows: int, create: bool) -> list[np.ndarray]:
    """features1, features2, policy logits and values of ``rows`` positions, laid out in one file
    mapped into memory (plain arrays over the mapping, which they keep alive)."""
    shapes = ((rows, FEATURES1, 9, 9), (rows, FEATURES2, 9, 9), (rows, POLICY_SIZE), (rows,))
    counts = [int(np.prod(shape)) for shape in shapes]
    with open(path, "w+b" if create else "r+b") as f:
        if create:
            f.truncate(4 * sum(counts))
        mapping = mmap.mmap(f.fileno(), 4 * sum(counts))
    offsets = np.cumsum([0] + counts)
    return [np.frombuffer(mapping, np.float32, count, 4 * int(offset)).reshape(shape)
            for offset, count, shape in zip(offsets, counts, shapes)]


class NetProcess(Evaluator):
    """A net scoring its batches in a process of its own.

    ``build(batch_size=, buffers=, features=)`` makes the evaluator there (it must pickle: the
    process is spawned, not forked, since torch's thread pools do not survive a fork). The input
    rows and the outputs are two batches' worth of shared memory, a file in /dev/shm that is
    unlinked as soon as both processes have it mapped; the process is told which rows to score
    through a pipe and answers there when the outputs are in place."""

    asynchronous = True

    def __init__(self, build, batch_size: int):
        import multiprocessing

        where = "/dev/shm" if os.access("/dev/shm", os.W_OK) else tempfile.gettempdir()
        fd, shared = tempfile.mkstemp(prefix="shogitrain-net-", dir=where)
        os.close(fd)
        try:
            arrays = _shared_arrays(shared, 2 * batch_size, create=True)
            super().__init__(batch_size, "", tuple(arrays[:2]), buffers=2)
            self._logits, self._values = arrays[2:]
            context = multiprocessing.get_context("spawn")
            self._pipe, child_end = context.Pipe()
            self.process = context.Process(target=_serve_net, args=(child_end, shared, build, batch_size),
                                           name="shogitrain-net", daemon=True)
            self.process.start()
            child_end.close()
            self.description = f"{self._answer()} in its own process"
        except BaseException:
            self.close()
            raise
        finally:
            os.unlink(shared)

    def _answer(self):
        # Poll for a moment before sleeping on the pipe: waking a sleeping process cost about 50 µs
        # here, a tenth of a small net's forward at batch 1 (docs/benchmarks.md, "MCTS").
        deadline = time.perf_counter() + ANSWER_SPIN_SECONDS
        try:
            while not self._pipe.poll(0) and time.perf_counter() < deadline:
                pass
            answer = self._pipe.recv()
        except (EOFError, OSError):
            self.process.join(5)
            raise PlayError(f"the net's process ended (exit code {self.process.exitcode})") from None
        if isinstance(answer, PlayError):
            raise answer
        return answer

    def submit(self, n: int, start: int = 0) -> None:
        if len(self._submitted) == 2:
            raise RuntimeError("both halves of the rows are being scored")
        self._pipe.send((n, start))
        self._submitted.append((n, start))

    def collect(self) -> tuple[np.ndarray, np.ndarray]:
        n, start = self._submitted.popleft()
        self._answer()
        return self._logits[start:start + n], self._values[start:start + n]

    def evaluate(self, n: int, start: int = 0) -> tuple[np.ndarray, np.ndarray]:
        self.submit(n, start)
        return self.collect()

    def working(self) -> bool:
        return self.process is not None and self.process.is_alive()

    def close(self) -> None:
        process = getattr(self, "process", None)
        if process is None:
            return
        try:
            self._pipe.send(None)
        except (OSError, ValueError):
            pass
        process.join(5)
        if process.is_alive():
            process.kill()
            process.join()
        self._pipe.close()
        self.process = None


def _serve_net(pipe, shared: str, build, batch_size: int) -> None:
    """The net's process: score the rows the pipe names until it says None or closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)     # Ctrl-C is the engine's to handle
    try:
        features1, features2, logits, values = _shared_arrays(shared, 2 * batch_size, create=False)
        evaluator = build(batch_size=batch_size, buffers=2, features=(features1, features2))
    except PlayError as e:
        pipe.send(e)
        return
    except Exception as e:
        pipe.send(PlayError(f"the net's process could not load the net: {type(e).__name__}: {e}"))
        return
    pipe.send(evaluator.description)
    while True:
        try:
            request = pipe.recv()
        except EOFError:
            return
        if request is None:
            return
        n, start = request
        try:
            logits[start:start + n], values[start:start + n] = evaluator.evaluate(n, start)
        except Exception as e:
            pipe.send(PlayError(f"the net failed: {type(e).__name__}: {e}"))
            return
        pipe.send(n)
