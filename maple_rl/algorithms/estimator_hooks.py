"""What an advantage estimator needs from a training run beyond the step's rewards, and
what it learns from each step: one hook per estimator, selected by name
(:func:`hook_for`), so the trainer never branches on an estimator's name.

A hook gives :func:`maple_rl.algorithms.advantages.compute_advantages` its per-step options
(``options``), sees each step's outcome after the update (``observe``) and is checkpointed
with the run (``state_dict`` / ``load_state_dict``). Estimators without state get
:class:`EstimatorHook` itself.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from maple_rl.algorithms.mssr import BetaTracker
from maple_rl.algorithms.registry import Registry
from maple_rl.training.rewards import correctness


class EstimatorHook:
    """The stateless hook: no extra options, nothing observed."""

    def options(self, ids: Sequence[str], components: Sequence[dict[str, float]]) -> dict[str, Any]:
        """Options for the step's advantages; ``ids`` (N*G,) the item of each response,
        ``components`` (N*G,) its reward components."""
        return {}

    def observe(self, ids: Sequence[str], rewards: Sequence[float], stats: dict[str, float]) -> None:
        """The step's rewards (N*G,) per response of item ``ids``, and the update's statistics."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Nothing to restore (a checkpoint of another estimator's state is ignored)."""


class MssrHook(EstimatorHook):
    """MSSR / SPO: a per-prompt Beta value tracker gives the baselines; after the update it
    takes the step's rewards, and its forgetting factor follows the drift (KL to the
    reference when there is one, else old vs new)."""

    def __init__(self) -> None:
        self.tracker = BetaTracker()

    def options(self, ids: Sequence[str], components: Sequence[dict[str, float]]) -> dict[str, Any]:
        return {"baselines": self.tracker.baselines(list(ids))}

    def observe(self, ids: Sequence[str], rewards: Sequence[float], stats: dict[str, float]) -> None:
        self.tracker.update(ids, rewards)
        self.tracker.rho.observe(stats.get("kl_ref", abs(stats["approx_kl"])))

    def state_dict(self) -> dict[str, Any]:
        return self.tracker.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.tracker.load_state_dict(state)


class MixedHook(EstimatorHook):
    """Mixed advantage: its success rate counts correct answers (the correctness reward
    component), not the summed reward."""

    def options(self, ids: Sequence[str], components: Sequence[dict[str, float]]) -> dict[str, Any]:
        return {"successes": torch.tensor([correctness(c) for c in components], dtype=torch.float64)}


ESTIMATOR_HOOKS: Registry[Callable[[], EstimatorHook]] = Registry("estimator hook")
ESTIMATOR_HOOKS.register("mssr")(MssrHook)
ESTIMATOR_HOOKS.register("mixed")(MixedHook)


def hook_for(estimator: str) -> EstimatorHook:
    """A new hook for the advantage estimator named ``estimator`` (the stateless one when
    none is registered)."""
    return ESTIMATOR_HOOKS.get(estimator)() if estimator in ESTIMATOR_HOOKS else EstimatorHook()
