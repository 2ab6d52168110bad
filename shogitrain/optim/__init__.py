"""Optimisation: adaptive gradient clipping, NLCG, and the optimizer / LR-schedule factories.

* :mod:`.agc` — AGC (Brock et al. 2021), vectorised; parameter selection by model groups.
* :mod:`.nlcg` — stochastic preconditioned nonlinear CG (apple/ml-ncg semantics).
* :mod:`.schedules` — ``build_optimizer`` (sgd/adam/adamw/radam/nlcg) and ``build_scheduler``.
"""

from .agc import AGC, select_parameters
from .nlcg import NLCG, LINE_SEARCH_RULES, LineSearchRule
from .schedules import build_optimizer, build_scheduler, split_weight_decay

__all__ = [
    "AGC",
    "LINE_SEARCH_RULES",
    "LineSearchRule",
    "NLCG",
    "build_optimizer",
    "build_scheduler",
    "select_parameters",
    "split_weight_decay",
]
