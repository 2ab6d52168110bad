"""Typed config: defaults, YAML presets, --set overrides, helpful errors, round trip."""

import math
from pathlib import Path

import pytest
import yaml

from shogitrain.config import (
    Config,
    ConfigError,
    config_from_dict,
    config_to_dict,
    dump_config,
    load_config,
    parse_override,
)

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
PRESETS = ["blog-bn", "blog-nf", "blog-nf-faithful", "tiny-bn", "tiny-nf", "tiny-nf-blog"]


def test_defaults_are_the_blog_bn_run():
    cfg = load_config()
    assert (cfg.model.arch, cfg.model.blocks, cfg.model.channels, cfg.model.fc_units) == ("bn", 10, 192, 256)
    assert (cfg.optim.name, cfg.optim.lr, cfg.optim.momentum, cfg.optim.nesterov) == ("sgd", 0.1, 0.9, True)
    assert cfg.optim.weight_decay == 1e-4 and cfg.optim.no_decay == []
    assert cfg.clip.agc_exclude == ["policy_final", "value_final"]
    assert (cfg.clip.max_norm, cfg.clip.agc_clipping, cfg.clip.agc_eps) == (10.0, 0.01, 1e-3)
    assert cfg.loss.entropy_beta == 0.001 and cfg.loss.value_lambda == 0.333
    assert cfg.loss.eval_scale == 756.0864962951762 and cfg.loss.z_weighting is True
    assert (cfg.train.batch_size, cfg.train.eval_interval, cfg.train.eval_sample) == (1024, 1000, 640)
    assert cfg.train.steps == 0 and cfg.train.epochs == 1 and cfg.train.max_nonfinite == 10
    assert cfg.swa.mode == "off" and cfg.init.method == "default"
    # amp 'auto' is the note's fp16 on CUDA (off on CPU); the bn preset's clipping, as configs/blog-bn.yaml
    assert cfg.amp == "auto" and cfg.clip.mode == "norm" and "bn preset" in cfg.defaults_from["clip"]


ARCH_OF = {"blog-bn": "bn", "blog-nf": "nf", "blog-nf-faithful": "nf-blog",
           "tiny-bn": "bn", "tiny-nf": "nf", "tiny-nf-blog": "nf-blog"}


def test_required_presets_exist():
    assert set(PRESETS) <= {p.stem for p in CONFIGS.glob("*.yaml")}


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_preset_loads_and_validates(path):
    cfg = load_config(path)
    assert isinstance(cfg, Config)
    if path.stem in ARCH_OF:
        assert cfg.model.arch == ARCH_OF[path.stem]
    # a dumped preset reads back to the same config
    assert config_from_dict(yaml.safe_load(dump_config(cfg))) == cfg


def test_preset_contents():
    bn, nf, faithful = (load_config(CONFIGS / f"{n}.yaml") for n in PRESETS[:3])
    assert bn.clip.mode in ("none", "norm") and bn.amp == "fp16" and bn.swa.mode == "off"
    assert nf.clip.mode == "agc" and nf.clip.agc_exclude == ["policy_final", "value_final"]
    assert (nf.clip.agc_clipping, nf.clip.agc_eps) == (0.01, 1e-3)
    assert faithful.clip.mode == "agc" and faithful.clip.agc_exclude == ["policy_head", "value_head"]
    for name in PRESETS[3:]:
        tiny = load_config(CONFIGS / f"{name}.yaml")
        assert tiny.amp == "off" and 64 <= tiny.train.batch_size <= 128
        assert tiny.model.blocks == 2 and tiny.model.channels == 32 and 0 < tiny.train.steps <= 1000


def test_overrides():
    cfg = load_config(CONFIGS / "blog-nf.yaml", [
        "optim.lr=0.05",
        "clip.agc_exclude=[policy_head,value_head]",
        "amp=off",  # YAML reads off as false: still the enum value 'off'
        "swa.mode=ema",
        "train.steps=2e3",  # PyYAML leaves 2e3 as text; an integral number is accepted
        "optim.weight_decay=1e-5",
        "model.options.alpha=0.2",
        "init.gradinit.gamma=.inf",
        "optim.betas=[0.9, 0.99]",
        "run.name=2021",
    ])
    assert cfg.optim.lr == 0.05
    assert cfg.clip.agc_exclude == ["policy_head", "value_head"]
    assert cfg.amp == "off" and cfg.swa.mode == "ema"
    assert cfg.train.steps == 2000 and isinstance(cfg.train.steps, int)
    assert cfg.optim.weight_decay == 1e-5
    assert cfg.model.options == {"alpha": 0.2}
    assert math.isinf(cfg.init.gradinit.gamma)
    assert cfg.optim.betas == (0.9, 0.99)
    assert cfg.run.name == "2021"


def test_section_override_merges():
    cfg = load_config(None, ["init={method: gradinit, gradinit: {eta: 0.05}}"])
    assert cfg.init.method == "gradinit" and cfg.init.gradinit.eta == 0.05
    assert cfg.init.gradinit.iters == 390  # untouched keys keep their defaults


@pytest.mark.parametrize(
    "override, message",
    [
        ("optim.lrr=0.1", "unknown config key 'optim.lrr' (did you mean 'optim.lr'?)"),
        ("optm.lr=0.1", "unknown config key 'optm.lr' (did you mean 'optim.lr'?)"),
        ("optim.lr=abc", "optim.lr: expected a number, got 'abc'"),
        ("train.batch_size=1.5", "train.batch_size: expected an integer"),
        ("optim.nesterov=maybe", "optim.nesterov: expected true or false"),
        ("model.arch=resnet", "model.arch: expected one of bn, nf, nf-blog, got 'resnet'"),
        ("amp=fp61", "did you mean 'fp16'?"),
        ("clip.agc_exclude=[policy_fianl]", "did you mean 'policy_final'?"),
        ("model.activation=swish", "model.activation: expected one of"),
        ("optim.lr=-1", "optim.lr: must be > 0"),
        ("loss.value_lambda=2", "loss.value_lambda: must be in [0, 1]"),
        ("optim.betas=[0.9]", "optim.betas: expected a list of 2 values"),
        ("optim.lr.x=1", "unknown config key 'optim.lr.x'"),
        ("optim.lr", "is not of the form key=value"),
    ],
)
def test_errors_name_the_key(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert message in str(err.value)
    assert isinstance(err.value, ValueError)


def test_unknown_key_in_yaml(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("optim:\n  momentun: 0.9\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'optim.momentun' \(did you mean 'optim.momentum'\?\)"):
        load_config(path)
    path.write_text("optim: 3\n")
    with pytest.raises(ConfigError, match="optim: expected a mapping"):
        load_config(path)
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "missing.yaml")


def test_round_trip_and_plain_data(tmp_path):
    cfg = load_config(CONFIGS / "tiny-nf.yaml", ["optim.betas=[0.8, 0.9]", "amp=bf16"])
    d = config_to_dict(cfg)
    assert d["optim"]["betas"] == [0.8, 0.9]  # plain lists for YAML/JSON
    path = tmp_path / "config.yaml"
    dump_config(cfg, path)
    assert load_config(path) == cfg
    assert "amp: bf16" in path.read_text()


def test_parse_override_uses_yaml():
    assert parse_override("a.b=[x, y]") == ("a.b", ["x", "y"])
    assert parse_override("a=1.0e-3") == ("a", 1e-3)
    assert parse_override("a=") == ("a", None)
    assert parse_override("a=x=y") == ("a", "x=y")
