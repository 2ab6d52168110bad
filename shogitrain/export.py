"""Export a checkpoint to ONNX or TorchScript with dlshogi's input/output contract, and prove parity.

dlshogi's engines load a network with inputs ``input1`` [N,62,9,9] and ``input2`` [N,57,9,9] (float32;
[N,119,9,9] for a net trained on the entering-king features, ``model.input2_planes: 119``)
and outputs ``output_policy`` [N,2187] (logits) and ``output_value`` [N,1] (the value logit through a
sigmoid), axis 0 dynamic and named ``batch_size``. ``export_model`` rebuilds the checkpoint's model,
folds BatchNorm / weight standardisation / gains away (``model.fused()``), wraps it in that contract,
writes the file, then runs the written file (onnxruntime, or ``torch.jit.load``) against the unfused
PyTorch model on real opening positions and refuses a file whose outputs differ by more than 1e-4.

ONNX goes through the TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``): the
dynamo exporter, the default since torch 2.9, needs ``onnxscript``, which shogitrain does not depend
on, and the legacy one handles this static conv/linear graph fully offline.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
from torch import nn

from shogitrain.files import temp_name, write_error
from shogitrain.names import FEATURES1_PLANES as FEATURES1, FEATURES2_PLANES as FEATURES2
from shogitrain.onnx_net import INPUT_NAMES, INSTALL_HINT, OUTPUT_NAMES

FORMATS = ("onnx", "torchscript")
BATCH_AXIS = "batch_size"
ONNX_OPSET = 17
PARITY_TOLERANCE = 1e-4
CHECK_POSITIONS = 64

# the bundled opening lines of a clone or an editable install (a plain wheel has no data/: random planes then)
OPENINGS = Path(__file__).resolve().parents[1] / "data" / "openings" / "floodgate-2016-openings-24ply.sfen"


class ExportError(Exception):
    """A checkpoint that cannot be exported, a missing optional dependency, or a failed parity check."""


class DlshogiNet(nn.Module):
    """``(input1, input2) -> (output_policy logits, output_value = sigmoid(value logit))``, dlshogi's outputs."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input1: torch.Tensor, input2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        policy_logits, value_logit = self.model(input1, input2)
        return policy_logits, torch.sigmoid(value_logit)


# ---------------------------------------------------------------------------------------------- loading


def _feature_version() -> int:
    try:
        from shogitrain.features import FEATURE_VERSION
    except ImportError:
        return 1
    return FEATURE_VERSION


def load_model(checkpoint_path, weights: str = "raw") -> nn.Module:
    """The checkpoint's model (``weights``: 'raw' or the SWA/EMA 'averaged' ones; eval mode, not
    fused); ExportError for anything unusable."""
    from shogitrain.train.checkpoint import CheckpointError, load_model_checkpoint

    try:  # torch.load(weights_only=True), format/version and feature-version checks
        _, model = load_model_checkpoint(checkpoint_path, _feature_version(), weights)
    except CheckpointError as e:
        raise ExportError(str(e)) from None
    return model.float().eval()


# ---------------------------------------------------------------------------------------------- check inputs


def _opening_sfens(n: int, path: Path = OPENINGS) -> list[str] | None:
    """``n`` distinct SFENs at plies 7, 12, 17 and the end of each opening line (python-shogi replay)."""
    try:
        import shogi

        lines = path.read_text(encoding="utf-8").splitlines()
    except (ImportError, OSError):
        return None
    sfens: list[str] = []
    for line in lines:
        tokens = line.split("#", 1)[0].split()
        if not tokens or tokens[0] != "startpos":
            continue
        moves = tokens[2:] if len(tokens) > 1 and tokens[1] == "moves" else []
        board = shogi.Board()
        try:
            for ply, move in enumerate(moves, 1):
                board.push_usi(move)
                if ply in (7, 12, 17) or ply == len(moves):  # both sides to move
                    sfen = board.sfen()
                    if sfen not in sfens:
                        sfens.append(sfen)
        except ValueError:
            continue
        if len(sfens) >= n:
            return sfens[:n]
    return sfens or None


def check_positions(n: int = CHECK_POSITIONS, seed: int = 0,
                    input2_planes: int = FEATURES2) -> tuple[torch.Tensor, torch.Tensor, str]:
    """``(x1, x2, source)``: features of real opening positions, else sparse random 0/1 planes."""
    try:
        from shogitrain.features import features_from_sfens
    except ImportError:
        features_from_sfens = None
    sfens = _opening_sfens(n, OPENINGS) if features_from_sfens is not None else None
    if sfens:
        x1, x2 = features_from_sfens(sfens, input2_planes=input2_planes)
        return x1.float().cpu(), x2.float().cpu(), f"{len(sfens)} opening positions ({OPENINGS.name})"
    g = torch.Generator().manual_seed(seed)
    x1 = (torch.rand(n, FEATURES1, 9, 9, generator=g) < 0.06).float()
    x2 = (torch.rand(n, input2_planes, 1, 1, generator=g) < 0.05).float()
    x2 = x2.expand(n, input2_planes, 9, 9).contiguous()
    why = "feature encoder not importable" if features_from_sfens is None else f"no opening lines read from {OPENINGS}"
    return x1, x2, f"{n} random 0/1 positions ({why})"


def _check_shapes(x1: torch.Tensor, x2: torch.Tensor, planes2: int = FEATURES2) -> None:
    if x1.dim() != 4 or tuple(x1.shape[1:]) != (FEATURES1, 9, 9):
        raise ExportError(f"check input1 must be [N,{FEATURES1},9,9], got {list(x1.shape)}")
    if x2.dim() != 4 or tuple(x2.shape[1:]) != (planes2, 9, 9) or x2.shape[0] != x1.shape[0]:
        raise ExportError(f"check input2 must be [N,{planes2},9,9] with N = {x1.shape[0]}, got {list(x2.shape)}")
    if x1.shape[0] < 1:
        raise ExportError("check inputs hold no positions")


# ---------------------------------------------------------------------------------------------- writers


def _write_onnx(net: DlshogiNet, example: tuple[torch.Tensor, torch.Tensor], out_path: Path) -> None:
    dynamic_axes = {name: {0: BATCH_AXIS} for name in INPUT_NAMES + OUTPUT_NAMES}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # "legacy TorchScript-based ONNX export"
        torch.onnx.export(net, example, str(out_path), dynamo=False, opset_version=ONNX_OPSET,
                          input_names=list(INPUT_NAMES), output_names=list(OUTPUT_NAMES),
                          dynamic_axes=dynamic_axes, do_constant_folding=True)
    try:
        import onnx
    except ImportError:
        return  # onnxruntime's load below still validates the graph
    try:
        onnx.checker.check_model(str(out_path))
    except onnx.checker.ValidationError as e:
        raise ExportError(f"{out_path}: the exported ONNX graph is invalid ({str(e).splitlines()[0]})") from None


def _write_torchscript(net: DlshogiNet, example: tuple[torch.Tensor, torch.Tensor], out_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated but still the format
        traced = torch.jit.trace(net, example, check_trace=False)
        torch.jit.save(traced, str(out_path))


def _runner(fmt: str, out_path: Path):
    """``run(x1, x2) -> (policy, value)`` tensors, computed by the written file (not by the Python model)."""
    if fmt == "onnx":
        from shogitrain.onnx_net import OnnxNet, OnnxNetError

        try:
            net = OnnxNet(out_path)
        except OnnxNetError as e:
            raise ExportError(str(e)) from None

        def run(x1, x2):
            policy, value = net.run(x1.numpy(), x2.numpy())
            return torch.from_numpy(policy), torch.from_numpy(value).view(-1, 1)

        return run
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        loaded = torch.jit.load(str(out_path), map_location="cpu").eval()

    def run(x1, x2):
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return loaded(x1, x2)

    return run


def _is_previous_export(path: Path, fmt: str) -> bool:
    """Does ``path`` hold a network exported in ``fmt`` (which may be replaced without --overwrite)?"""
    try:
        if fmt == "onnx":
            from shogitrain.onnx_net import OnnxNet

            OnnxNet(path)
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                torch.jit.load(str(path), map_location="cpu")
    except Exception:  # anything that does not load as one is not a previous export
        return False
    return True


def _check_destination(checkpoint_path, fmt: str, out_path: Path, overwrite: bool) -> None:
    if out_path.is_dir():
        raise ExportError(f"{out_path}: is a directory; give the file to write (e.g. {out_path / ('model.' + fmt)})")
    if not out_path.exists():
        return
    if out_path.resolve() == Path(checkpoint_path).resolve():
        raise ExportError(f"{out_path}: is the checkpoint being exported; choose another --out")
    if not overwrite and not _is_previous_export(out_path, fmt):
        raise ExportError(f"{out_path}: exists and is not a {fmt} export; use --overwrite to replace it")


def export_model(checkpoint_path, fmt: str, out_path, check_inputs=None, weights: str = "raw",
                 overwrite: bool = False) -> dict:
    """Write ``checkpoint_path``'s network as ``fmt`` ('onnx' | 'torchscript') to ``out_path``.

    The written file is run on ``check_inputs`` (``(x1 [N,62,9,9], x2 [N,57,9,9])``; default: 64
    opening positions; x2 has 119 planes for a net with ``input2_planes`` 119) and on its first
    position alone (a batch of 1: the batch axis is dynamic),
    and compared with the unfused PyTorch model. Returns ``{'format', 'path', 'weights', 'max_abs_diff_policy',
    'max_abs_diff_value', 'positions', 'inputs'}``; raises :class:`ExportError` for an unusable
    checkpoint, a missing onnxruntime, or a difference above 1e-4 or a non-finite output (the file
    is written beside ``out_path`` and renamed into place only when it passes: a failed export
    leaves nothing). ``out_path`` may replace a previous export; another existing file needs
    ``overwrite``; the checkpoint itself never. ``weights``: 'raw' (the trained weights) or
    'averaged' (the run's SWA/EMA average); the result also names it.
    """
    fmt = str(fmt).lower()
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    out_path = Path(out_path)
    _check_destination(checkpoint_path, fmt, out_path, overwrite)
    if fmt == "onnx":
        try:
            import onnxruntime  # noqa: F401
        except ImportError as e:
            raise ExportError(f"ONNX export needs onnxruntime for its parity check ({e}); {INSTALL_HINT}") from None
    model = load_model(checkpoint_path, weights)
    planes2 = model.config.get("input2_planes", FEATURES2)

    if check_inputs is None:
        x1, x2, source = check_positions(input2_planes=planes2)
    else:
        x1, x2 = (torch.as_tensor(t).detach().float().cpu().contiguous() for t in check_inputs)
        source = f"{x1.shape[0]} given positions"
    _check_shapes(x1, x2, planes2)

    reference = DlshogiNet(model).eval()
    with torch.no_grad():
        expected = reference(x1, x2)
    net = DlshogiNet(model.fused()).eval()

    try:
        out_path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ExportError(f"{out_path.parent}: cannot create ({e.strerror})") from None
    tmp = temp_name(out_path)
    try:
        diffs = _write_and_check(net, fmt, tmp, x1, x2, expected, source)
        os.replace(tmp, out_path)
    except OSError as e:
        raise ExportError(str(write_error(e, out_path))) from None
    finally:
        tmp.unlink(missing_ok=True)
    return {"format": fmt, "path": str(out_path), "weights": weights, "max_abs_diff_policy": diffs["policy"],
            "max_abs_diff_value": diffs["value"], "positions": int(x1.shape[0]), "inputs": source}


def _write_and_check(net: "DlshogiNet", fmt: str, path: Path, x1, x2, expected, source: str) -> dict:
    """Write ``net`` to ``path`` and run the written file on the check positions (all of them, and the
    first alone: the batch axis must be dynamic); {'policy', 'value'}: max |Δ| against ``expected``."""
    # The example batch (2) differs from the check batches (N and 1): a batch size baked into the graph fails.
    pick = torch.arange(2) % x1.shape[0]
    example = (x1[pick], x2[pick])
    if fmt == "onnx":
        _write_onnx(net, example, path)
    else:
        _write_torchscript(net, example, path)
    run = _runner(fmt, path)
    diffs = {"policy": 0.0, "value": 0.0}
    for batch, want in (((x1, x2), expected), ((x1[:1], x2[:1]), (expected[0][:1], expected[1][:1]))):
        got = run(*batch)
        for key, g, w in zip(("policy", "value"), got, want):
            if tuple(g.shape) != tuple(w.shape):
                raise ExportError(f"output_{key} has shape {list(g.shape)}, expected {list(w.shape)}")
            if not (torch.isfinite(g).all() and torch.isfinite(w).all()):
                raise ExportError(f"the exported {fmt} gives non-finite output_{key} on {source} (are the "
                                  "checkpoint's weights finite?); nothing written")
            diffs[key] = max(diffs[key], float((g.float() - w).abs().max()))
    if not (diffs["policy"] <= PARITY_TOLERANCE and diffs["value"] <= PARITY_TOLERANCE):
        raise ExportError(f"exported {fmt} differs from the PyTorch model on {source}: max |Δ| "
                          f"policy {diffs['policy']:.3g}, value {diffs['value']:.3g} (tolerance {PARITY_TOLERANCE:g}); "
                          "nothing written")
    return diffs
