"""Torch threads chosen by measurement while training (``threads: auto`` in a pretraining recipe).

Why measured: on an idle 2-core machine two threads make a pretraining step ~1.5x faster
than one; on a machine whose other core is busy they make it ~5x *slower* (the threads
wait for each other at every operation). Neither setting is right everywhere, and the
load changes during a run. So every ``retune_every`` steps the trainer times
``trial_steps`` real training steps with each candidate count and keeps the fastest
until the next trial. Trial steps are ordinary steps (nothing is wasted but the slower
candidates' extra seconds). The thread count changes only the order of floating-point
sums, but that moves a training trajectory (benchmarks/HISTORY.md: the uniform recipe
learned VAS on one thread and not on two; with ``auto`` one cold run in four of the shipped
recipe ended short of its targets), so ``auto`` buys speed at the price of reproducibility;
the shipped recipe fixes the count.
"""

from __future__ import annotations

import os
import statistics
from collections import Counter
from dataclasses import dataclass, field

from maple_rl.errors import ConfigError


def available_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def thread_candidates(cores: int) -> tuple[int, ...]:
    """1, 2, 4, ... up to ``cores``, and ``cores`` itself."""
    counts = [1]
    while counts[-1] * 2 <= cores:
        counts.append(counts[-1] * 2)
    return tuple(sorted(set(counts) | {max(cores, 1)}))


@dataclass
class ThreadTuner:
    """Which thread count each training step uses (``threads_for``) from the step
    times recorded so far (``record``). A single candidate is a fixed setting."""

    candidates: tuple[int, ...]
    trial_steps: int = 3  # steps timed per candidate in a trial
    retune_every: int = 250  # steps from one trial's start to the next
    chosen: int = field(init=False)
    used: Counter = field(init=False, default_factory=Counter)  # thread count -> steps run with it
    _times: dict[int, list[float]] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        if not self.candidates or min(self.candidates) < 1:
            raise ConfigError("thread candidates must be positive")
        if self.trial_steps < 1 or self.retune_every < self.trial_steps * len(self.candidates):
            raise ConfigError("retune_every must leave room for a trial of every candidate")
        self.chosen = self.candidates[0]

    @classmethod
    def from_setting(cls, threads: int | str, cores: int | None = None) -> ThreadTuner:
        """``auto``: measured among :func:`thread_candidates`; a number: fixed."""
        if threads == "auto":
            return cls(thread_candidates(cores or available_cores()))
        if not isinstance(threads, int) or threads < 1:
            raise ConfigError(f"threads must be 'auto' or a positive number, got {threads!r}")
        return cls((threads,))

    def _trial_slot(self, step: int) -> int | None:
        """Index of the candidate ``step`` times, or None outside a trial."""
        if len(self.candidates) == 1:
            return None
        offset = step % self.retune_every
        slot = offset // self.trial_steps
        return slot if slot < len(self.candidates) else None

    def threads_for(self, step: int) -> int:
        slot = self._trial_slot(step)
        return self.chosen if slot is None else self.candidates[slot]

    def record(self, step: int, seconds: float) -> None:
        """The wall time of ``step``; the last step of a trial picks the fastest
        candidate by its median step time."""
        threads = self.threads_for(step)
        self.used[threads] += 1
        slot = self._trial_slot(step)
        if slot is None:
            return
        self._times.setdefault(threads, []).append(seconds)
        if slot == len(self.candidates) - 1 and (step % self.retune_every) % self.trial_steps == self.trial_steps - 1:
            self.chosen = min(self._times, key=lambda n: statistics.median(self._times[n]))
            self._times.clear()
