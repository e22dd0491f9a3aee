"""Zero-variance groups: find them before any log-prob or backward work, and refill.

A group whose G rewards are all equal has zero GRPO-family advantage and costs compute
for nothing. MAPLE's "early" filtering drops such groups right after rewards are known;
DAPO's dynamic sampling replaces them with more prompts (here of the same RMT, so the
step's per-RMT quotas hold), bounded by ``max_rounds``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import torch
from torch import Tensor

from maple_rl.algorithms.advantages import check_rewards
from maple_rl.errors import TensorError

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
    """A step's groups after refill, and what it cost."""

    groups: list[G]
    rounds: int  # draw rounds used (0: nothing needed replacing)
    replaced: int  # zero-variance groups replaced by new ones
    zero_variance: int  # zero-variance groups left after the last round


def refill(groups: Sequence[G], tags: Sequence[str], draw: Callable[[list[str]], list[G] | None],
           rewards_of: Callable[[G], Sequence[float]], max_rounds: int, atol: float = 0.0) -> RefillResult[G]:
    """DAPO's dynamic sampling with RMT quotas kept: each round, every zero-variance group
    is replaced by a newly drawn group of the same tag, for at most ``max_rounds`` rounds.

    ``draw(tags)`` samples one new group per tag, in order, or returns None when no more
    are needed (in a distributed run, when no rank needs any: every rank must call it the
    same number of times). Groups still without variance after the last round stay
    (reported, never hidden). ``tags[i]`` is the RMT of ``groups[i]``.
    """
    if max_rounds < 0:
        raise TensorError(f"max_rounds must be >= 0, got {max_rounds}")
    if len(tags) != len(groups):
        raise TensorError(f"tags must give one RMT per group ({len(groups)}), got {len(tags)}")
    groups, rounds, replaced = list(groups), 0, 0
    for _ in range(max_rounds):
        flat = [i for i, group in enumerate(groups) if not informative(rewards_of(group), atol)]
        new = draw([tags[i] for i in flat])
        if new is None:
            break
        if len(new) != len(flat):
            raise TensorError(f"draw returned {len(new)} groups for {len(flat)} tags")
        for i, group in zip(flat, new):
            groups[i] = group
        rounds, replaced = rounds + 1, replaced + len(flat)
    left = sum(not informative(rewards_of(group), atol) for group in groups)
    return RefillResult(groups, rounds, replaced, left)
