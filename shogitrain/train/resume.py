"""What a resumed run may change: keys that leave the trajectory alone, and nothing else.

``--resume`` continues a run bit-identically, so a config that differs from the run's own in any
key that changes what is trained (model, optimizer, schedule, clipping, loss, data order, batch,
precision, device …) is refused, naming each key; the keys below may change (a run is extended,
logged more often, found at a new path) and every such change is recorded in run.json.
"""

from __future__ import annotations

from typing import Any

# Keys (dotted; a trailing '.' allows the whole section) whose change does not alter the trajectory.
MAY_CHANGE_ON_RESUME = (
    "train.steps", "train.epochs",                       # extend (or shorten) the run
    "train.log_interval", "train.eval_interval", "train.eval_sample", "train.eval_full_each_epoch",
    "train.checkpoint_interval", "train.max_nonfinite",
    "data.prefetch", "data.path", "data.verify",          # data.path: the same dataset (manifest hash) moved
    "run.dir", "run.name",
    "defaults_from",
    "data.workers",                                       # a removed key that was never read
)


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict) and not (prefix and prefix.rstrip(".") in ("model.options", "optim.nlcg")):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): data}


# Keys added to the config after runs were saved without them: absent, they had this value.
ADDED_KEYS = {"model.input2_planes": 57, "data.order": "permutation"}


def config_changes(old: dict, new: dict) -> dict[str, tuple[Any, Any]]:
    """{dotted key: (old, new)} for every key whose value differs between two config dicts."""
    a, b = ADDED_KEYS | _flatten(old), ADDED_KEYS | _flatten(new)
    return {key: (a.get(key), b.get(key)) for key in sorted(set(a) | set(b)) if a.get(key) != b.get(key)}


def may_change(key: str) -> bool:
    return any(key == allowed or key.startswith(allowed + ".") for allowed in MAY_CHANGE_ON_RESUME)


def refused_changes(changes: dict[str, tuple[Any, Any]]) -> list[str]:
    """The changes a resume refuses, as 'key (old → new)' texts."""
    return [f"{key} ({old!r} → {new!r})" for key, (old, new) in changes.items() if not may_change(key)]
