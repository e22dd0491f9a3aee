"""Difficulty-adaptive stratum weights (MAPLE, ``docs/algorithms.md`` §7).

Difficulty of tag M: ``D_M = KL(p_emp(M) || p_tgt)``, ``p_emp`` the add-one smoothed
histogram of the last ``window`` rewards of M over ``bins`` equal bins of [0, 1],
``p_tgt`` Beta(100, 1) integrated over the same bins (CDF ``x**100``; floored at 1e-12
and renormalised; the target has almost no mass below about 0.8, so difficulty
saturates for tags whose recent rewards all lie there). Weights ``w_M = n * softmax(D / tau)_M`` over the n tags with
history, then clamped to ``[w_min, w_max]`` while keeping their mean at 1. Before
``warmup`` updates every weight is 1; tags without history weigh 1.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from maple_data.rmt import TAGS
from maple_rl.errors import TensorError
from maple_rl.training.config import WeightsConfig


def target_distribution(bins: int, alpha: float = 100.0) -> np.ndarray:
    """Beta(alpha, 1) mass per equal bin of [0, 1] (CDF x**alpha), floored and renormalised."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    mass = np.maximum(edges[1:] ** alpha - edges[:-1] ** alpha, 1e-12)
    return mass / mass.sum()


def difficulty(rewards: Sequence[float], bins: int = 10, alpha: float = 100.0) -> float:
    """``KL(p_emp || Beta(alpha, 1))`` of rewards in [0, 1] (add-one smoothed histogram)."""
    counts, _ = np.histogram(np.clip(rewards, 0.0, 1.0), bins=bins, range=(0.0, 1.0))
    p = (counts + 1.0) / (counts.sum() + bins)
    return float(np.sum(p * np.log(p / target_distribution(bins, alpha))))


def clamp_mean_one(weights: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """``clip(c * weights, lo, hi)`` with the scale ``c`` that makes the mean exactly 1.

    The mean is non-decreasing in ``c`` (from ``lo`` to ``hi``), so bisection on
    ``log c`` finds it whenever ``lo <= 1 <= hi``; unclamped weights keep their ratios.
    """
    if not lo <= 1.0 <= hi:
        raise TensorError(f"need w_min <= 1 <= w_max, got {lo}, {hi}")
    w = np.asarray(weights, dtype=np.float64)
    low, high = -60.0, 60.0  # log c
    for _ in range(200):
        mid = 0.5 * (low + high)
        if np.clip(np.exp(mid) * w, lo, hi).mean() < 1.0:
            low = mid
        else:
            high = mid
    return np.clip(np.exp(0.5 * (low + high)) * w, lo, hi)


class AdaptiveWeights:
    """Per-RMT reward history and the weights it implies."""

    def __init__(self, config: WeightsConfig = WeightsConfig(), tags: Sequence[str] = TAGS) -> None:
        """``config``: the recipe's ``weights`` section."""
        self.config, self.tags = config, list(tags)
        self.history: dict[str, deque[float]] = {t: deque(maxlen=config.window) for t in self.tags}
        self.updates = 0

    def update(self, tags: Iterable[str], rewards: Iterable[float]) -> None:
        """Record one step's rewards (one per response) with their tags."""
        for tag, reward in zip(tags, rewards):
            self.history[tag].append(float(reward))
        self.updates += 1

    def difficulties(self) -> dict[str, float]:
        c = self.config
        return {t: difficulty(list(h), c.bins, c.target_alpha) for t, h in self.history.items() if h}

    def weights(self) -> dict[str, float]:
        c = self.config
        result = dict.fromkeys(self.tags, 1.0)
        d = self.difficulties()
        if self.updates < c.warmup or not d:
            return result
        names = list(d)
        z = np.array([d[t] for t in names]) / c.tau
        soft = np.exp(z - z.max())
        w = clamp_mean_one(len(names) * soft / soft.sum(), c.w_min, c.w_max)
        result.update(zip(names, map(float, w)))
        return result

    def state_dict(self) -> dict[str, Any]:
        return {"history": {t: list(h) for t, h in self.history.items()}, "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for t, values in state["history"].items():
            self.history[t].clear()
            self.history[t].extend(values)
        self.updates = int(state["updates"])
