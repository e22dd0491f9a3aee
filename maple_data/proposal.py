"""The RMT proposal rule and the cost-aware search over modality subsets (pure functions).

Evidence for one item is a :class:`SubsetResult` per evaluated subset: per-sample scores
in [0, 1] (1/0 for a multiple-choice answer, a similarity for a caption, the correct
option's probability for logprob scoring). ``accuracy`` is their mean.

Rule (every threshold in :class:`ProposalConfig`):
1. ``full`` = the modalities the video has (VAS, or fewer). If full was not evaluated the
   item is ``incomplete``; if its accuracy is below ``tau`` it is ``unanswerable``.
2. A subset *passes* when its accuracy is >= ``tau`` and >= accuracy(full) - ``delta``.
3. The proposal is the smallest passing subset; ties by higher accuracy, then canonical
   order (V, A, S, VA, VS, AS, VAS).
4. Confidence = min(pass margin, fail margin), each scaled to [0, 1]: the pass margin is
   ``(acc(chosen) - tau) / (1 - tau)``, the fail margin ``(tau - max acc of the evaluated
   smaller subsets) / tau`` (1 when there are none). Unanswerable: ``(tau - acc(full)) / tau``.
5. Flags: ``tie`` (several passing subsets of the smallest size), ``non-monotone`` (a
   passing subset inside a failing one, e.g. V passes and VA fails), ``low-k`` (the
   deciding subset has fewer than ``min_samples`` samples).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from maple_data.rmt import is_subset, parse_rmt, subsets, tag_index, tag_size

Status = Literal["proposed", "unanswerable", "incomplete"]
SearchMode = Literal["exhaustive", "adaptive"]


@dataclass(frozen=True)
class ProposalConfig:
    tau: float = 0.75
    delta: float = 0.15
    min_samples: int = 4

    def __post_init__(self) -> None:
        if not 0.0 < self.tau <= 1.0 or self.delta < 0 or self.min_samples < 1:
            raise ValueError(f"need 0 < tau <= 1, delta >= 0, min_samples >= 1; got {self}")


@dataclass
class SubsetResult:
    """Scores of one (item, subset); ``answers`` are the raw model outputs."""

    subset: str
    scores: list[float] = field(default_factory=list)
    answers: list[str] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.scores)

    @property
    def accuracy(self) -> float:
        return sum(self.scores) / len(self.scores) if self.scores else 0.0


@dataclass(frozen=True)
class Proposal:
    status: Status
    rmt: str | None
    confidence: float
    flags: tuple[str, ...] = ()


def propose(results: Mapping[str, SubsetResult], available: str = "VAS",
            config: ProposalConfig = ProposalConfig()) -> Proposal:
    """Apply the proposal rule of this module's docstring to one item's evidence."""
    full = parse_rmt(available)
    tau, evaluated = config.tau, {s: r for s, r in results.items() if r.n > 0}
    if full not in evaluated:
        return Proposal("incomplete", None, 0.0)
    top = evaluated[full].accuracy
    if top < tau:
        flags = ("low-k",) if evaluated[full].n < config.min_samples else ()
        return Proposal("unanswerable", None, _clip((tau - top) / tau), flags)
    passing = {s for s, r in evaluated.items() if r.accuracy >= tau and r.accuracy >= top - config.delta}
    size = min(tag_size(s) for s in passing)
    smallest = sorted((s for s in passing if tag_size(s) == size),
                      key=lambda s: (-evaluated[s].accuracy, tag_index(s)))
    chosen = smallest[0]
    pass_margin = 1.0 if tau >= 1.0 else (evaluated[chosen].accuracy - tau) / (1.0 - tau)
    smaller = [r.accuracy for s, r in evaluated.items() if tag_size(s) < size]
    fail_margin = (tau - max(smaller)) / tau if smaller else 1.0
    flags = []
    if len(smallest) > 1:
        flags.append("tie")
    if any(a != b and is_subset(a, b) and a in passing and b not in passing for a in evaluated for b in evaluated):
        flags.append("non-monotone")
    if evaluated[chosen].n < config.min_samples:
        flags.append("low-k")
    return Proposal("proposed", chosen, _clip(min(pass_margin, fail_margin)), tuple(flags))


def _clip(x: float) -> float:
    return min(1.0, max(0.0, x))


# ---------------------------------------------------------------- search


def search_stages(available: str, mode: SearchMode) -> list[list[str]]:
    """Subsets to evaluate, stage by stage. ``exhaustive``: every subset of the available
    modalities in one stage. ``adaptive``: full first, then the singles, then the pairs
    (:func:`next_stage` decides whether a stage is needed)."""
    full = parse_rmt(available)
    if mode == "exhaustive":
        return [subsets(full)]
    if mode != "adaptive":
        raise ValueError(f"search must be exhaustive or adaptive, got {mode!r}")
    by_size: dict[int, list[str]] = {}
    for tag in subsets(full):
        by_size.setdefault(tag_size(tag), []).append(tag)
    return [[full]] + [by_size[k] for k in sorted(by_size) if k < tag_size(full)]


def stage_needed(stage_index: int, results: Mapping[str, SubsetResult], available: str,
                 config: ProposalConfig) -> bool:
    """Adaptive search: after the full-input stage, go on only while no evaluated subset
    below full passes (the smallest passing subset can only be in a later, larger stage
    when the earlier, smaller stages had none)."""
    if stage_index == 0:
        return True
    full = parse_rmt(available)
    if full not in results or results[full].accuracy < config.tau:
        return False  # unanswerable: nothing smaller can be proposed
    top = results[full].accuracy
    return not any(s != full and r.n and r.accuracy >= config.tau and r.accuracy >= top - config.delta
                   for s, r in results.items())


def pass_threshold(results: Mapping[str, SubsetResult], available: str, config: ProposalConfig) -> float:
    """Accuracy a subset needs to pass: ``max(tau, acc(full) - delta)`` once full is known."""
    full = parse_rmt(available)
    top = results[full].accuracy if full in results and results[full].n else 0.0
    return max(config.tau, top - config.delta)


def fail_decided(scores: Sequence[float], budget: int, threshold: float) -> bool:
    """Whether a subset must fail ``threshold`` even if its remaining samples (of
    ``budget``) all score 1: curtailed sampling. Stopping then changes no proposal: the
    subset fails with or without the rest. Passing subsets are always sampled to the full
    budget, because their accuracy decides ties, the delta rule and the confidence."""
    return sum(scores) + (budget - len(scores)) < threshold * budget - 1e-9


def chunks(budget: int, chunk: int) -> Iterator[int]:
    """Sample counts per round: ``chunk`` at a time up to ``budget``."""
    done = 0
    while done < budget:
        step = min(chunk, budget - done)
        yield step
        done += step
