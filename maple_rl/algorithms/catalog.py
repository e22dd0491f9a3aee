"""The algorithms a recipe selects by name, declared without importing torch: each
registry's built-in names and the options a recipe may set for them (``algo.estimator``
with ``algo.estimator_options``, ``algo.aggregation``, ``algo.kl_estimator``). The functions
live in :mod:`maple_rl.algorithms.advantages` and :mod:`maple_rl.algorithms.losses`, which
register them here; registering checks them against these declarations."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from maple_rl.algorithms.registry import Registry

StdKind = Literal["population", "unbiased"]
MapoNorm = Literal["group", "stratum", "group_then_stratum", "batch", "none"]

ADVANTAGE_ESTIMATORS: Registry[Callable] = Registry(
    "advantage estimator", provider="maple_rl.algorithms.advantages",
    supplied=("baselines", "successes"),  # computed by the trainer each step (mssr, mixed)
    declared={
        "grpo": {"std": StdKind, "eps": float},
        "dr_grpo": {},
        "batch": {"std": StdKind, "eps": float},
        "rloo": {},
        "mapo": {"norm": MapoNorm, "std": StdKind, "eps": float},
        "mixed": {"success_threshold": float, "std": StdKind, "eps": float},
        "mssr": {"min_var": float},
        "stratified": {"alpha": float, "std": StdKind, "eps": float},
    })
AGGREGATIONS: Registry[Callable] = Registry(
    "loss aggregation", provider="maple_rl.algorithms.losses",
    declared=dict.fromkeys(("token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm",
                            "grpo", "dr_grpo", "bnpo", "dapo"), {}))  # the last four: TRL's loss_type names
KL_ESTIMATORS: Registry[Callable] = Registry(
    "KL estimator", provider="maple_rl.algorithms.losses", declared=dict.fromkeys(("k1", "k2", "k3", "low_var_kl"), {}))
