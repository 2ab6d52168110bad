"""A dlshogi-format ONNX network, run with onnxruntime.

dlshogi's contract: inputs ``input1`` [N, 62, 9, 9] and ``input2`` [N, 57 (or 119), 9, 9] float32,
outputs ``output_policy`` [N, 2187] (logits) and ``output_value`` [N, 1] (a win probability, the
sigmoid already applied). The batch axis may be dynamic or fixed; a fixed one is served in chunks
of that size (the last padded). Any other names or shapes are refused with what was expected.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from shogitrain.names import FEATURES1_PLANES, FEATURES2_PLANES, INPUT2_PLANES, POLICY_SIZE

INPUT_NAMES = ("input1", "input2")
OUTPUT_NAMES = ("output_policy", "output_value")
INSTALL_HINT = "install it with: pip install 'shogitrain[export]'"


class OnnxNetError(Exception):
    """An ONNX file that is not a dlshogi-format network (or no onnxruntime); names the problem."""


def _dims(shape) -> list:
    return [d if isinstance(d, int) else None for d in shape]  # None: a named / dynamic axis


class OnnxNet:
    """``run(x1, x2) -> (policy logits [N, 2187], value probabilities [N])`` of an ONNX file."""

    def __init__(self, path, device: str = "cpu", threads: int = 0):
        try:
            import onnxruntime as ort
        except ImportError:
            raise OnnxNetError(f"scoring an ONNX model needs onnxruntime; {INSTALL_HINT}") from None
        self.path = Path(path)
        if not self.path.is_file():
            raise OnnxNetError(f"{self.path}: no such file")
        providers = ["CPUExecutionProvider"]
        if str(device).startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        options = ort.SessionOptions()
        if threads > 0:  # CPU threads of one run (0: onnxruntime's default, all cores)
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=providers)
        except Exception as e:  # onnxruntime raises its own exception types for a file it cannot load
            raise OnnxNetError(f"{self.path}: not a loadable ONNX model ({str(e).splitlines()[0][:200]})") from None
        self.batch, self.input2_planes = self._check_signature()

    def _check_signature(self) -> tuple[int | None, int]:
        inputs = {i.name: _dims(i.shape) for i in self.session.get_inputs()}
        outputs = {o.name: _dims(o.shape) for o in self.session.get_outputs()}
        expected = (f"expected inputs input1 [N,{FEATURES1_PLANES},9,9], input2 [N,{FEATURES2_PLANES} or 119,9,9] "
                    f"and outputs output_policy [N,{POLICY_SIZE}], output_value [N,1]")
        got = f"got inputs {inputs} and outputs {outputs}"
        if sorted(inputs) != sorted(INPUT_NAMES) or not set(OUTPUT_NAMES) <= set(outputs):
            raise OnnxNetError(f"{self.path}: not a dlshogi-format network: {expected}; {got}")
        shapes_ok = (
            inputs["input1"][1:] == [FEATURES1_PLANES, 9, 9]
            and inputs["input2"][2:] == [9, 9] and inputs["input2"][1] in INPUT2_PLANES
            and outputs["output_policy"][1:] == [POLICY_SIZE] and outputs["output_value"][1:] in ([1], [])
        )
        if not shapes_ok:
            raise OnnxNetError(f"{self.path}: unexpected shapes: {expected}; {got}")
        return inputs["input1"][0], inputs["input2"][1]

    def run(self, x1: np.ndarray, x2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = x1.shape[0]
        size = self.batch or max(n, 1)
        policies, values = [], []
        for start in range(0, n, size):
            a, b = x1[start:start + size], x2[start:start + size]
            real = a.shape[0]
            if real < size and self.batch:  # a fixed batch axis: pad the last chunk
                a = np.concatenate([a, np.zeros((size - real,) + a.shape[1:], a.dtype)])
                b = np.concatenate([b, np.zeros((size - real,) + b.shape[1:], b.dtype)])
            policy, value = self.session.run(list(OUTPUT_NAMES), {"input1": np.ascontiguousarray(a, np.float32),
                                                                  "input2": np.ascontiguousarray(b, np.float32)})
            policies.append(policy[:real])
            values.append(value.reshape(-1)[:real])
        return np.concatenate(policies), np.concatenate(values)
