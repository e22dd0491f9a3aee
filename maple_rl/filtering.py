"""Zero-variance groups: find them before any log-prob or backward work, and refill.

A group whose G rewards are all equal has zero GRPO-family advantage and costs compute
for nothing. MAPLE's "early" filtering drops such groups right after rewards are known;
DAPO's dynamic sampling refills the batch with more prompts, bounded by ``max_rounds``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import torch
from torch import Tensor

from maple_rl.advantages import check_rewards

G = TypeVar("G")


def zero_variance_mask(rewards: Tensor, group_ids: Tensor, atol: float = 0.0) -> Tensor:
    """(N,) bool: True for responses whose group's rewards all lie within ``atol``."""
    r = check_rewards(rewards)
    _, inverse = torch.unique(group_ids, return_inverse=True)
    n = int(inverse.max()) + 1 if len(inverse) else 0
    hi = torch.full((n,), -torch.inf, dtype=r.dtype).scatter_reduce(0, inverse, r, "amax")
    lo = torch.full((n,), torch.inf, dtype=r.dtype).scatter_reduce(0, inverse, r, "amin")
    return (hi - lo <= atol)[inverse]


def informative(rewards: Sequence[float], atol: float = 0.0) -> bool:
    """True if a group's rewards are not all equal (it carries a learning signal)."""
    return len(rewards) > 0 and max(rewards) - min(rewards) > atol


@dataclass
class RefillResult(Generic[G]):
    """Groups kept for the step, and what it cost to find them."""

    groups: list[G]
    rounds: int  # generation rounds used (1 = no refill needed)
    drawn: int  # groups generated in all
    dropped: int  # zero-variance groups dropped
    target: int  # groups the step asked for

    @property
    def counts(self) -> dict[str, int]:
        """Groups kept, and how many the step is short of its target."""
        return {"kept": len(self.groups), "short": self.target - len(self.groups)}

    @property
    def zero_variance_fraction(self) -> float:
        return self.dropped / self.drawn if self.drawn else 0.0


def refill(draw: Callable[[int], list[G]], rewards_of: Callable[[G], Sequence[float]], target: int,
           max_rounds: int = 3, atol: float = 0.0) -> RefillResult[G]:
    """Draw groups until ``target`` informative ones are kept or ``max_rounds`` are used.

    ``draw(k)`` generates and scores ``k`` new prompt groups; each round asks for the
    number still missing. Excess groups of the last round are cut to ``target``. With
    ``max_rounds`` spent, the step goes on with fewer groups (reported, never hidden).
    """
    if target < 1 or max_rounds < 1:
        raise ValueError("target and max_rounds must be at least 1")
    kept: list[G] = []
    drawn = dropped = rounds = 0
    while len(kept) < target and rounds < max_rounds:
        batch = draw(target - len(kept))
        rounds += 1
        drawn += len(batch)
        good = [g for g in batch if informative(rewards_of(g), atol)]
        dropped += len(batch) - len(good)
        kept += good
    return RefillResult(kept[:target], rounds, drawn, dropped, target)
