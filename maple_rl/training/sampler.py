"""Stratified batch sampling over an RMT-indexed dataset, with curricula.

Each stratum (RMT) keeps its own shuffled queue of dataset indices, reshuffled when
spent. A step's stratum probabilities come from the curriculum:

- ``none``: proportional to stratum size (``quota="proportional"``) or equal;
- ``static`` (uni -> bi -> tri): step s of ``total_steps`` is in stage k (tag size k)
  by ``stage_fractions``; tags of the current size share ``1 - replay`` and tags of
  earlier stages share ``replay``; later stages are not drawn yet;
- ``dynamic``: proportional to the adaptive stratum weights (harder tags more often).

``batch_mode="mixed"`` turns probabilities into exact per-stratum quotas per batch by
largest-remainder rounding, carrying each stratum's fractional remainder to the next
step (so small batches starve no stratum and long-run shares are exact);
``homogeneous`` draws one stratum per batch. Everything is
deterministic for a seed, and :meth:`state_dict` captures queues, positions and the RNG
so a resumed run draws the same batches.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from maple_data.rmt import TAGS, parse_rmt, tag_size
from maple_rl.errors import DataError
from maple_rl.training.config import SamplingConfig


def largest_remainder(raw: np.ndarray, total: int) -> np.ndarray:
    """Integer counts summing to ``total`` from non-negative shares ``raw`` (summing to about
    ``total``): floors, then +1 for the largest remainders (ties: lower index)."""
    counts = np.floor(raw).astype(int)
    order = np.argsort(-(raw - counts), kind="stable")
    counts[order[: total - counts.sum()]] += 1
    return counts


class StratifiedSampler:
    """Yields lists of dataset indices, one list per training step.

    Args:
        tags: the RMT of each dataset item (index i -> tags[i]).
        config: the recipe's ``sampling`` section.
        total_steps: steps of the run (the static curriculum's stages are shares of it).
        seed: seed of the queues and draws.
    """

    def __init__(self, tags: Sequence[str], config: SamplingConfig = SamplingConfig(), *,
                 total_steps: int | None = None, seed: int = 0) -> None:
        if config.curriculum == "static" and not total_steps:
            raise DataError("total_steps: the static curriculum needs the run's step count")
        self.config, self.total_steps = config, total_steps
        canonical = [parse_rmt(t) for t in tags]
        self.members = {t: np.array([i for i, x in enumerate(canonical) if x == t]) for t in TAGS}
        self.strata = [t for t in TAGS if len(self.members[t])]
        if not self.strata:
            raise DataError("empty dataset: no item to sample")
        self.rng = np.random.default_rng(seed)
        self.queues = {t: self.rng.permutation(self.members[t]) for t in self.strata}
        self.positions = dict.fromkeys(self.strata, 0)
        self.step = 0
        self.weights: dict[str, float] = dict.fromkeys(TAGS, 1.0)
        self.credit = dict.fromkeys(self.strata, 0.0)  # fractional quota carried over

    def set_weights(self, weights: Mapping[str, float]) -> None:
        """Adaptive stratum weights for the dynamic curriculum."""
        self.weights.update(weights)

    def stage(self, step: int | None = None) -> int:
        """Static curriculum stage (1 uni, 2 bi, 3 tri) at ``step``."""
        s = self.step if step is None else step
        bounds = np.cumsum(self.config.stage_fractions) / sum(self.config.stage_fractions)
        progress = min(s / self.total_steps, 1.0 - 1e-12)
        return min(3, int(np.searchsorted(bounds, progress, side="right")) + 1)

    def probabilities(self) -> dict[str, float]:
        """Stratum probabilities for the current step (zero for strata not drawn)."""
        c = self.config
        size = {t: float(len(self.members[t])) for t in self.strata}
        base = size if c.quota == "proportional" else dict.fromkeys(self.strata, 1.0)
        if c.curriculum == "dynamic":
            base = {t: base[t] * self.weights.get(t, 1.0) for t in self.strata}
        elif c.curriculum == "static":
            sizes = sorted({tag_size(t) for t in self.strata})
            # a stage with no data falls back to the latest earlier stage that has some
            stage = max((k for k in sizes if k <= self.stage()), default=sizes[0])
            current = [t for t in self.strata if tag_size(t) == stage]
            earlier = [t for t in self.strata if tag_size(t) < stage]
            share = {t: 0.0 for t in self.strata}
            replay = c.replay if earlier else 0.0
            for group, mass in ((current, 1.0 - replay), (earlier, replay)):
                total = sum(base[t] for t in group)
                for t in group:
                    share[t] = mass * base[t] / total
            base = share
        total = sum(base.values())
        return {t: base[t] / total for t in self.strata}

    def take(self, tag: str, k: int) -> list[int]:
        """The next ``k`` dataset indices of stratum ``tag`` (its queue reshuffles when spent);
        also how refill draws a replacement of the same RMT."""
        out: list[int] = []
        while len(out) < k:
            queue, pos = self.queues[tag], self.positions[tag]
            if pos >= len(queue):
                self.queues[tag], self.positions[tag] = self.rng.permutation(self.members[tag]), 0
                continue
            n = min(k - len(out), len(queue) - pos)
            out += queue[pos : pos + n].tolist()
            self.positions[tag] = pos + n
        return out

    def next_batch(self) -> list[int]:
        """Dataset indices of the next step's prompts."""
        probs = self.probabilities()
        tags = list(probs)
        p = np.array([probs[t] for t in tags])
        if self.config.batch_mode == "homogeneous":
            chosen = tags[int(self.rng.choice(len(tags), p=p))]
            batch = self.take(chosen, self.config.batch_size)
        else:
            size = self.config.batch_size
            raw = np.array([self.credit[t] for t in tags]) + p * size
            shares = np.maximum(raw, 0.0)  # a stratum the curriculum just switched off may owe credit
            counts = largest_remainder(shares * size / shares.sum(), size)
            self.credit = {t: float(r - k) for t, r, k in zip(tags, raw, counts)}
            batch = [i for t, k in zip(tags, counts) for i in self.take(t, int(k))]
        self.step += 1
        return batch

    def __iter__(self):
        while True:
            yield self.next_batch()

    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "rng": self.rng.bit_generator.state,
            "queues": {t: q.tolist() for t, q in self.queues.items()},
            "positions": dict(self.positions),
            "weights": dict(self.weights),
            "credit": dict(self.credit),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.step = int(state["step"])
        self.rng.bit_generator.state = state["rng"]
        self.queues = {t: np.array(q, dtype=np.int64) for t, q in state["queues"].items()}
        self.positions = {t: int(p) for t, p in state["positions"].items()}
        self.weights = dict(state["weights"])
        self.credit = {t: float(c) for t, c in state["credit"].items()}
