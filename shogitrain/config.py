"""Typed experiment configuration: dataclass defaults ← YAML file ← ``--set key=value`` overrides.

A run is one :class:`Config`: dataclass sections (``model``, ``optim``, ``schedule``, ``clip``,
``init``, ``loss``, ``train``, ``swa``, ``data``, ``run``) plus ``amp``. The defaults are the
dlshogi BN run of the 2021 note (docs/experiment-2021.md). ``load_config(path, overrides)`` merges
a YAML preset into the defaults and applies overrides (read as YAML 1.2: ``off``/``on`` stay
words; a key given twice is an error), then checks every value against its field's annotation and
range. Every error is a one-line :class:`ConfigError` naming the key, with the closest valid key
for a typo. With no config file and no ``--set clip.*``, the arch's own clipping preset applies.
``config_to_dict`` / ``dump_config`` write the resolved config; ``config_from_dict`` reads it back.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from shogitrain.names import (ACTIVATIONS, AMP_MODES, ARCH_OPTIONS, ARCHS, CLIP_MODES, DATA_ORDERS, EVAL_SCALE, INPUT2_PLANES,
                              OPTIMIZERS, PARAMETER_GROUPS, SCHEDULES, VALUE_LAMBDA)

__all__ = [
    "ClipConfig",
    "Config",
    "ConfigError",
    "DataConfig",
    "GradInitConfig",
    "InitConfig",
    "LossConfig",
    "ModelConfig",
    "OptimConfig",
    "RunConfig",
    "ScheduleConfig",
    "SwaConfig",
    "TrainConfig",
    "all_keys",
    "config_from_dict",
    "config_to_dict",
    "dump_config",
    "load_config",
    "parse_override",
]


class ConfigError(ValueError):
    """A config file or override that does not fit the schema; the message names the key."""


class _YamlLoader(yaml.SafeLoader):
    """YAML with 1.2's booleans (only true/false: ``off``, ``on``, ``yes``, ``no`` stay text, as the
    enum values they are here) that refuses a key given twice in one mapping."""


_YamlLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_YamlLoader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                  list("tTfF"))


def _mapping_without_duplicates(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict:
    loader.flatten_mapping(node)
    first_line: dict = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        line = key_node.start_mark.line + 1
        if key in first_line:
            raise ConfigError(f"line {line}: key {key!r} given twice (first on line {first_line[key]})")
        first_line[key] = line
    return loader.construct_mapping(node)


_YamlLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)


def _yaml(text: str):
    return yaml.load(text, Loader=_YamlLoader)  # noqa: S506 (a SafeLoader subclass)


# --------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------


@dataclass
class ModelConfig:
    arch: Literal[ARCHS] = "bn"
    blocks: int = 10
    channels: int = 192
    fc_units: int = 256
    activation: str = "silu"  # one of ACTIVATIONS
    input2_planes: Literal[INPUT2_PLANES] = 57  # 119: dlshogi's entering-king (NYUGYOKU) features
    options: dict[str, Any] = field(default_factory=dict)  # extra build_model(**options)


@dataclass
class OptimConfig:
    name: Literal[OPTIMIZERS] = "sgd"
    lr: float = 0.1
    momentum: float = 0.9  # sgd only
    nesterov: bool = True  # sgd only
    weight_decay: float = 1e-4
    no_decay: list[str] = field(default_factory=list)  # parameter groups without weight decay
    betas: tuple[float, float] = (0.9, 0.999)  # adam / adamw / radam
    eps: float = 1e-8
    decoupled_weight_decay: bool = False  # radam (adamw is always decoupled)
    nlcg: dict[str, Any] = field(default_factory=dict)  # options of the NLCG optimizer


@dataclass
class ScheduleConfig:
    name: Literal[SCHEDULES] = "constant"
    warmup_steps: int = 0  # linear warm-up from 0, in optimizer steps
    step_size: int = 0  # 'step': decay every step_size units (steps or epochs, see unit)
    gamma: float = 0.1  # 'step': multiplicative decay
    min_lr: float = 0.0  # 'cosine': final learning rate
    unit: Literal["step", "epoch"] = "step"


@dataclass
class ClipConfig:
    mode: Literal[CLIP_MODES] = "none"
    max_norm: float = 10.0  # 'norm': global L2 norm, dlshogi's --clip_grad_max_norm default
    agc_clipping: float = 0.01  # 'agc': λ
    agc_eps: float = 1e-3  # 'agc': ε
    agc_exclude: list[str] = field(default_factory=lambda: ["policy_final", "value_final"])


@dataclass
class GradInitConfig:
    """GradInit options (docs/algorithms.md, "GradInit"; launch-script defaults of zhuchen03/gradinit)."""

    # the first step simulated: SGD (L2) or Adam (sign, L1); 'auto' follows optim.name (adam/adamw →
    # adam; sgd, radam — whose first steps are SGD-like — and nlcg → sgd)
    variant: Literal["auto", "sgd", "adam"] = "auto"
    eta: float = 0.1  # η, the simulated step size
    gamma: float = 1.0  # γ, gradient-norm constraint (.inf = none)
    lr: float = 1e-3  # τ, Adam learning rate on the scales
    iters: int = 390
    min_scale: float = 0.01
    grad_clip: float = 1.0
    normalize_grad: bool = True
    batch_size: int = 0  # size of S (two half-batches); 0 = train.batch_size


@dataclass
class InitConfig:
    method: Literal["default", "gradinit"] = "default"
    gradinit: GradInitConfig = field(default_factory=GradInitConfig)


@dataclass
class LossConfig:
    """dlshogi's bootstrap loss (see shogitrain/train/loss.py); every term can be switched off."""

    policy: bool = True
    policy_weight: float = 1.0
    z_weighting: bool = True  # weight the policy CE by z = result − value + 0.5
    entropy: bool = True
    entropy_beta: float = 0.001
    result: bool = True
    eval: bool = True
    value_lambda: float = VALUE_LAMBDA  # λ: (1−λ)·BCE(result) + λ·BCE(eval value)
    eval_scale: float = EVAL_SCALE  # value = sigmoid(eval / eval_scale)


@dataclass
class TrainConfig:
    batch_size: int = 1024
    steps: int = 0  # 0 = train by epochs
    epochs: int = 1
    eval_interval: int = 1000  # steps between evaluations on a random test sample
    eval_sample: int = 640  # positions in that sample
    eval_full_each_epoch: bool = True  # full test pass at the end of each epoch
    seed: int = 0
    log_interval: int = 100
    checkpoint_interval: int = 0  # steps; 0 = only at epoch ends
    compile: bool = False
    channels_last: bool = False
    device: Literal["auto", "cpu", "cuda"] = "auto"
    sync_bn: bool = False
    max_nonfinite: int = 10  # abort after this many consecutive non-finite losses


@dataclass
class SwaConfig:
    mode: Literal["off", "swa", "ema"] = "off"
    start_step: int = 0
    interval: int = 250  # steps between averaging updates (dlshogi --swa_freq)
    ema_decay: float = 10 / 11  # 'ema': dlshogi's --swa_n_avr 10 → a = 10/11 per update
    update_bn: bool = True  # recompute BN statistics of the averaged model


@dataclass
class DataConfig:
    path: str | None = None  # dataset directory written by `prepare`
    train_split: str = "train"
    test_split: str = "test"
    prefetch: int = 2  # batches built ahead of the training step
    shuffle: bool = True
    order: Literal[DATA_ORDERS] = "keyed"  # permutation: numpy's, as runs made before 'keyed' existed
    verify: bool = True  # check every shard's sha256 and rows before training (--no-verify skips it)


@dataclass
class RunConfig:
    dir: str = "runs"
    name: str | None = None  # None = generated from the date and arch


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    clip: ClipConfig = field(default_factory=ClipConfig)
    init: InitConfig = field(default_factory=InitConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    amp: Literal[("auto",) + AMP_MODES] = "auto"  # auto: fp16 (with GradScaler) on CUDA, off on CPU
    train: TrainConfig = field(default_factory=TrainConfig)
    swa: SwaConfig = field(default_factory=SwaConfig)
    data: DataConfig = field(default_factory=DataConfig)
    run: RunConfig = field(default_factory=RunConfig)
    # What was chosen automatically and why ({"amp": "…", "clip": "…"}), written into config.yaml.
    defaults_from: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# Schema walking and value coercion
# --------------------------------------------------------------------------------------------

_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def _is_section(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _is_free_dict(tp: Any) -> bool:
    return typing.get_origin(tp) is dict or tp is dict


def all_keys(cls: type = Config, prefix: str = "") -> list[str]:
    """Every settable dotted key of the schema (free-form dicts as their own key)."""
    keys = []
    for f in dataclasses.fields(cls):
        tp = _hints(cls)[f.name]
        key = prefix + f.name
        if _is_section(tp):
            keys.append(key)
            keys.extend(all_keys(tp, key + "."))
        else:
            keys.append(key)
    return keys


def _unknown_key(key: str) -> ConfigError:
    matches = difflib.get_close_matches(key, all_keys(), n=1, cutoff=0.6)
    if not matches:  # a typo in the section part: compare the last component within the section
        leaf = key.rsplit(".", 1)[-1]
        leaves = {k.rsplit(".", 1)[-1]: k for k in all_keys()}
        close = difflib.get_close_matches(leaf, list(leaves), n=1, cutoff=0.8)
        matches = [leaves[close[0]]] if close else []
    hint = f" (did you mean '{matches[0]}'?)" if matches else ""
    return ConfigError(f"unknown config key '{key}'{hint}")


def _describe(value: Any) -> str:
    return repr(value) if isinstance(value, str) else f"{value!r} ({type(value).__name__})"


def _coerce(key: str, tp: Any, value: Any) -> Any:
    """Check ``value`` against annotation ``tp`` and return it in canonical form."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(key, inner[0], value)
    if value is None:
        raise ConfigError(f"{key}: a value is required, got null")
    if origin is Literal:
        choices = [str(a) for a in args]
        if isinstance(value, bool):  # YAML 1.1 reads off/on/yes/no as booleans
            for text in (("on", "yes", "true") if value else ("off", "no", "false")):
                if text in choices:
                    return text
        for choice in args:   # strings as they are; numbers (model.input2_planes) also from --set text
            if not isinstance(value, bool) and str(choice) == str(value):
                return choice
        text = str(value)
        close = difflib.get_close_matches(text, choices, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ConfigError(f"{key}: expected one of {', '.join(choices)}, got {text!r}{hint}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {_describe(value)}")
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected a number, got {_describe(value)}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        number = value
        if isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                number = None
        if isinstance(number, float) and math.isfinite(number) and number.is_integer():
            return int(number)
        raise ConfigError(f"{key}: expected an integer, got {_describe(value)}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key}: expected a string, got {_describe(value)}")
    if origin is list:
        (item_tp,) = args
        if isinstance(value, str) and item_tp is str:  # "a,b" or "a"
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, Sequence) or isinstance(value, str):
            raise ConfigError(f"{key}: expected a list, got {_describe(value)}")
        return [_coerce(f"{key}[{i}]", item_tp, v) for i, v in enumerate(value)]
    if origin is tuple:
        if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != len(args):
            raise ConfigError(f"{key}: expected a list of {len(args)} values, got {_describe(value)}")
        return tuple(_coerce(f"{key}[{i}]", t, v) for i, (t, v) in enumerate(zip(args, value)))
    if _is_free_dict(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping, got {_describe(value)}")
        return {str(k): v for k, v in value.items()}
    if tp is Any:
        return value
    raise TypeError(f"config schema: unsupported annotation {tp!r} for {key}")  # pragma: no cover


def _merge(section: Any, data: Any, prefix: str) -> None:
    """Merge a mapping into a dataclass section in place (nested sections merge recursively)."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {_describe(data)}")
    hints = _hints(type(section))
    for name, value in data.items():
        key = f"{prefix}{name}"
        if not isinstance(name, str) or name not in hints:
            raise _unknown_key(key)
        tp = hints[name]
        if _is_section(tp):
            _merge(getattr(section, name), value, key + ".")
        else:
            setattr(section, name, _coerce(key, tp, value))


def _set_key(cfg: Config, key: str, value: Any) -> None:
    """Apply one dotted override ``key=value`` (already YAML-parsed)."""
    parts = key.split(".")
    if not key or any(not p for p in parts):
        raise ConfigError(f"bad config key {key!r}")
    node: Any = cfg
    for i, part in enumerate(parts):
        hints = _hints(type(node))
        if part not in hints:
            raise _unknown_key(key)
        tp = hints[part]
        prefix = ".".join(parts[: i + 1])
        rest = parts[i + 1:]
        if _is_section(tp):
            if not rest:
                _merge(getattr(node, part), value, prefix + ".")
                return
            node = getattr(node, part)
            continue
        if rest and _is_free_dict(tp):  # model.options.alpha=0.2
            target = getattr(node, part)
            for sub in rest[:-1]:
                target = target.setdefault(sub, {})
                if not isinstance(target, dict):
                    raise ConfigError(f"{key}: {sub!r} is not a mapping")
            target[rest[-1]] = value
            return
        if rest:
            raise _unknown_key(key)
        setattr(node, part, _coerce(key, tp, value))
        return


def parse_override(text: str) -> tuple[str, Any]:
    """``'optim.lr=0.05'`` → ``('optim.lr', 0.05)``; the value is read as YAML (1.2 booleans)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    try:
        value = _yaml(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{key}: cannot parse value {raw!r}: {exc.__class__.__name__}") from None
    return key, value


# --------------------------------------------------------------------------------------------
# Validation of ranges and cross-field rules
# --------------------------------------------------------------------------------------------


def _check(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: {message}")


def _check_groups(key: str, names: list[str]) -> None:
    for name in names:
        if name not in PARAMETER_GROUPS:
            close = difflib.get_close_matches(name, PARAMETER_GROUPS, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(
                f"{key}: unknown parameter group {name!r}{hint}; groups: {', '.join(PARAMETER_GROUPS)}"
            )


def validate(cfg: Config) -> Config:
    """Check value ranges and cross-field rules; raise :class:`ConfigError` naming the key."""
    m, o, s, c, g, lo, t = cfg.model, cfg.optim, cfg.schedule, cfg.clip, cfg.init.gradinit, cfg.loss, cfg.train
    _check(m.blocks >= 1, "model.blocks", f"must be ≥ 1, got {m.blocks}")
    _check(m.channels >= 1, "model.channels", f"must be ≥ 1, got {m.channels}")
    _check(m.fc_units >= 1, "model.fc_units", f"must be ≥ 1, got {m.fc_units}")
    for name in m.options:
        options = ", ".join(ARCH_OPTIONS[m.arch]) or "none"
        _check(name in ARCH_OPTIONS[m.arch], f"model.options.{name}",
               f"not an option of arch {m.arch!r} (its options: {options})")
    if m.activation not in ACTIVATIONS:
        close = difflib.get_close_matches(m.activation, ACTIVATIONS, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ConfigError(f"model.activation: expected one of {', '.join(ACTIVATIONS)}, got {m.activation!r}{hint}")

    _check(o.lr > 0 and math.isfinite(o.lr), "optim.lr", f"must be > 0, got {o.lr}")
    _check(0 <= o.momentum < 1, "optim.momentum", f"must be in [0, 1), got {o.momentum}")
    _check(not (o.nesterov and o.name == "sgd" and o.momentum == 0), "optim.nesterov",
           "Nesterov momentum needs optim.momentum > 0")
    _check(o.weight_decay >= 0, "optim.weight_decay", f"must be ≥ 0, got {o.weight_decay}")
    _check(all(0 <= b < 1 for b in o.betas), "optim.betas", f"must be in [0, 1), got {list(o.betas)}")
    _check(o.eps >= 0, "optim.eps", f"must be ≥ 0, got {o.eps}")
    _check_groups("optim.no_decay", o.no_decay)

    _check(s.warmup_steps >= 0, "schedule.warmup_steps", f"must be ≥ 0, got {s.warmup_steps}")
    _check(s.name != "step" or s.step_size > 0, "schedule.step_size", "must be > 0 for schedule.name=step")
    _check(s.gamma > 0, "schedule.gamma", f"must be > 0, got {s.gamma}")
    _check(s.min_lr >= 0, "schedule.min_lr", f"must be ≥ 0, got {s.min_lr}")

    _check(c.max_norm > 0, "clip.max_norm", f"must be > 0, got {c.max_norm}")
    _check(c.agc_clipping > 0, "clip.agc_clipping", f"must be > 0, got {c.agc_clipping}")
    _check(c.agc_eps > 0, "clip.agc_eps", f"must be > 0, got {c.agc_eps}")
    _check_groups("clip.agc_exclude", c.agc_exclude)

    _check(g.eta > 0, "init.gradinit.eta", f"must be > 0, got {g.eta}")
    _check(g.gamma > 0, "init.gradinit.gamma", f"must be > 0, got {g.gamma}")
    _check(g.lr > 0, "init.gradinit.lr", f"must be > 0, got {g.lr}")
    _check(g.iters >= 0, "init.gradinit.iters", f"must be ≥ 0, got {g.iters}")
    _check(0 <= g.min_scale <= 1, "init.gradinit.min_scale", f"must be in [0, 1], got {g.min_scale}")
    _check(g.grad_clip > 0, "init.gradinit.grad_clip", f"must be > 0, got {g.grad_clip}")
    _check(g.batch_size >= 0 and g.batch_size % 2 == 0, "init.gradinit.batch_size",
           f"must be an even number ≥ 0 (two half-batches), got {g.batch_size}")

    _check(lo.policy_weight >= 0, "loss.policy_weight", f"must be ≥ 0, got {lo.policy_weight}")
    _check(lo.entropy_beta >= 0, "loss.entropy_beta", f"must be ≥ 0, got {lo.entropy_beta}")
    _check(0 <= lo.value_lambda <= 1, "loss.value_lambda", f"must be in [0, 1], got {lo.value_lambda}")
    _check(lo.eval_scale > 0, "loss.eval_scale", f"must be > 0, got {lo.eval_scale}")
    _check(lo.policy or lo.result or lo.eval, "loss", "every loss term is switched off")

    _check(0 <= t.seed < 2**63, "train.seed", f"must be in [0, 2^63), got {t.seed}")
    _check(t.batch_size >= 1, "train.batch_size", f"must be ≥ 1, got {t.batch_size}")
    _check(t.steps >= 0, "train.steps", f"must be ≥ 0 (0 = by epochs), got {t.steps}")
    _check(t.epochs >= 1, "train.epochs", f"must be ≥ 1, got {t.epochs}")
    _check(t.eval_interval >= 0, "train.eval_interval", f"must be ≥ 0 (0 = never), got {t.eval_interval}")
    _check(t.eval_sample >= 1, "train.eval_sample", f"must be ≥ 1, got {t.eval_sample}")
    _check(t.log_interval >= 1, "train.log_interval", f"must be ≥ 1, got {t.log_interval}")
    _check(t.checkpoint_interval >= 0, "train.checkpoint_interval", f"must be ≥ 0, got {t.checkpoint_interval}")
    _check(t.max_nonfinite >= 1, "train.max_nonfinite", f"must be ≥ 1, got {t.max_nonfinite}")

    w = cfg.swa
    _check(w.interval >= 1, "swa.interval", f"must be ≥ 1, got {w.interval}")
    _check(w.start_step >= 0, "swa.start_step", f"must be ≥ 0, got {w.start_step}")
    _check(0 < w.ema_decay < 1, "swa.ema_decay", f"must be in (0, 1), got {w.ema_decay}")
    _check(cfg.data.prefetch >= 0, "data.prefetch", f"must be ≥ 0, got {cfg.data.prefetch}")
    return cfg


# --------------------------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------------------------


def config_from_dict(data: Mapping[str, Any] | None, overrides: Sequence[str] = ()) -> Config:
    """Defaults ← ``data`` (a mapping as read from YAML) ← overrides; validated."""
    cfg = Config()
    if data is not None:
        _merge(cfg, data, "")
    if isinstance(overrides, str):
        overrides = [overrides]
    for text in overrides:
        key, value = parse_override(text)
        _set_key(cfg, key, value)
    return validate(cfg)


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> Config:
    """Read a YAML preset (or start from the defaults when ``path`` is None), apply ``key=value``
    overrides and validate. Raises :class:`ConfigError` for anything that does not fit."""
    data = None
    if path is not None:
        path = Path(path)
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read config file {str(path)!r}: {exc.strerror}") from None
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from None
        try:
            data = _yaml(text)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: invalid YAML: {' '.join(str(exc).split())}") from None
    cfg = config_from_dict(data, overrides)
    if path is None and not any(parse_override(o)[0].split(".")[0] == "clip" for o in overrides):
        _apply_arch_clip_preset(cfg)
    return cfg


# Clipping per arch when neither a config file nor --set clip.* chooses it: the 2021 presets
# (configs/blog-bn.yaml, blog-nf.yaml, blog-nf-faithful.yaml).
ARCH_CLIP_PRESETS = {
    "bn": {"mode": "norm", "max_norm": 10.0},
    "nf": {"mode": "agc", "agc_exclude": ["policy_final", "value_final"]},
    "nf-blog": {"mode": "agc", "agc_exclude": ["policy_head", "value_head"]},
}


def _apply_arch_clip_preset(cfg: Config) -> None:
    preset = ARCH_CLIP_PRESETS[cfg.model.arch]
    _merge(cfg.clip, preset, "clip.")
    cfg.defaults_from["clip"] = (f"the {cfg.model.arch} preset ({', '.join(f'{k}={v}' for k, v in preset.items())}): "
                                 "no config file and no --set clip.*")


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """The resolved config as plain YAML/JSON-able data (tuples become lists)."""
    return _plain(dataclasses.asdict(cfg))


def dump_config(cfg: Config, path: str | Path | None = None) -> str:
    """YAML text of the resolved config; written to ``path`` when given."""
    text = yaml.safe_dump(config_to_dict(cfg), sort_keys=False, default_flow_style=False)
    if path is not None:
        Path(path).write_text(text, encoding="utf-8")
    return text
