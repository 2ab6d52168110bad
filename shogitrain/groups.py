"""Which runs are seeds of one variant: the config keys that identify a variant.

Two runs belong to one group when their resolved configs (``config.yaml``) agree on every key
except :data:`NOT_VARIANT_KEYS` and they trained on the same data (the dataset's manifest hash from
run.json, else ``data.path``). The seed is what varies inside a group; where a run is written, how
its data is loaded and how often it logs or checkpoints cannot change what it learns, so they do
not split groups either. Everything else — architecture, optimizer, clipping, precision, batch,
steps, device, evaluation schedule — does. See docs/experiments.md.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

NOT_VARIANT_KEYS = (
    "train.seed",               # the replicate: what a group is made of
    "run.name", "run.dir",      # where the run is written
    "data.path",                # where the data lives (the data itself is identified by its manifest hash)
    "data.prefetch", "data.verify",                      # loader plumbing, a check before training
    "defaults_from",                                     # notes on automatic choices (their results are keys)
    "train.log_interval", "train.checkpoint_interval",   # how often it writes, not what it learns
    "train.max_nonfinite",                               # when a diverging run gives up
)


def flatten(mapping: Mapping, prefix: str = "") -> dict[str, Any]:
    """Nested mappings → ``{'model.options.skip_init': 'one', ...}``; lists and scalars are leaves,
    an empty mapping (``model.options: {}``) adds nothing."""
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def variant_keys(config: Mapping, data_id: str | None) -> dict[str, Any]:
    """The flattened config minus :data:`NOT_VARIANT_KEYS`, plus ``data`` = ``data_id``."""
    keys = {k: v for k, v in flatten(config).items() if k not in NOT_VARIANT_KEYS}
    keys["data"] = data_id
    return keys


def identity(keys: Mapping[str, Any]) -> str:
    """A hashable, order-free text of :func:`variant_keys` (two runs of one variant give the same text)."""
    return json.dumps(keys, sort_keys=True, default=str)


def differing_keys(key_sets: list[Mapping[str, Any]]) -> list[str]:
    """Keys whose value is not the same in every set (a key missing from one counts as differing)."""
    names = sorted({k for keys in key_sets for k in keys})
    missing = object()
    return [k for k in names if len({json.dumps(keys.get(k, missing), default=repr, sort_keys=True)
                                     for keys in key_sets}) > 1]
