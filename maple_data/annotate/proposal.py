"""The RMT proposal rules and the cost-aware search over modality subsets (pure functions).

Evidence for one item is a :class:`SubsetResult` per evaluated subset: per-sample scores
in [0, 1] (1/0 for a multiple-choice answer, a similarity for a caption, the correct
option's probability for logprob scoring). ``accuracy`` is their mean.

Threshold rule (``rule="threshold"``; every threshold in :class:`ProposalConfig`):
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

Joint rule (``rule="joint"``, the default; formula and derivation in
:mod:`maple_data.annotate.posterior`): every candidate answer (each tag inside the available
modalities, and ``unanswerable``) is scored by how well it explains *all* evaluated
subsets at once: under tag M the subsets containing M answer with a high accuracy and the
others near chance (1 / number of options), each subset's unknown accuracy integrated out
under a Beta prior (a Beta-Binomial marginal likelihood). The proposal is the most
probable answer; its posterior probability is the confidence. Flags: ``close`` (the
runner-up's posterior is at least ``close`` times the best's), ``non-monotone`` (a subset
whose own evidence says it holds, by odds of at least 1 / ``close``, inside one whose own
evidence says it does not); no ``low-k``: the posterior already weighs how many answers
each subset got. ``incomplete``: nothing evaluated.
Its adaptive search (:func:`maple_data.annotate.posterior.next_subset`) draws each next answer from
the subset with the largest expected information gain, until the best answer's posterior
reaches ``target`` or the item's budget (K answers per subset on average) is spent.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from maple_data.annotate.posterior import (
    UNANSWERABLE,
    Likelihood,
    counts_of,
    decide,
    parse_prior,
    posterior,
    subset_log_odds,
)
from maple_data.rmt import is_subset, parse_rmt, subsets, tag_index, tag_size

Status = Literal["proposed", "unanswerable", "incomplete"]
SearchMode = Literal["exhaustive", "adaptive"]
RULE_NAMES: tuple[str, ...] = ("threshold", "joint")  # the keys of RULES (defined below the rules)
DEFAULT_OPTIONS = 4  # options of a multiple-choice item when the caller does not say (the synthetic benchmark's)


@dataclass(frozen=True)
class ProposalConfig:
    """Settings of both proposal rules (stored in ``ablation/settings.json``).

    Threshold rule: ``tau``, ``delta``, ``min_samples`` (the ``low-k`` flag). Joint rule (see
    :mod:`maple_data.annotate.posterior`): ``prior`` over the answers (``uniform``, ``empirical`` =
    the mix seen so far, or ``V=2,VA=1,unanswerable=0.5``), the accuracy of a subset that
    holds the tag ~ Beta with mean ``high`` and concentration ``high_concentration``, of one
    that does not ~ Beta with mean 1 / options (``caption_chance`` for captions) and
    concentration ``chance_concentration``, ``contamination`` (the chance that a subset
    behaves like the other class), ``close`` (flag when the runner-up's posterior >= close x the best's) and
    ``target`` (adaptive search stops an item once the best answer's posterior reaches it).
    """

    tau: float = 0.75
    delta: float = 0.15
    min_samples: int = 4
    rule: str = "joint"
    prior: str = "uniform"
    target: float = 0.98
    high: float = 0.9
    high_concentration: float = 20.0
    chance_concentration: float = 10.0
    caption_chance: float = 0.2
    contamination: float = 0.0
    close: float = 0.1

    def __post_init__(self) -> None:
        if not 0.0 < self.tau <= 1.0 or self.delta < 0 or self.min_samples < 1:
            raise ValueError(f"need 0 < tau <= 1, delta >= 0, min_samples >= 1; got {self}")
        if self.rule not in RULE_NAMES:
            raise ValueError(f"rule must be one of {', '.join(RULE_NAMES)}, got {self.rule!r}")
        if not 0.0 < self.target <= 1.0 or not 0.0 < self.close < 1.0 or not 0.0 < self.caption_chance < self.high:
            raise ValueError(f"need 0 < target <= 1, 0 < close < 1 and 0 < caption_chance < high; got target="
                             f"{self.target}, close={self.close}, caption_chance={self.caption_chance}")
        parse_prior(self.prior)
        self.likelihood(2)  # checks high, concentrations and contamination; 2 options is the strictest case

    @classmethod
    def from_dict(cls, stored: Mapping[str, Any]) -> ProposalConfig:
        """The config stored in ``settings.json``; settings written before the joint rule
        existed (no ``rule`` key) were made with the threshold rule."""
        known = {f.name for f in fields(cls)}
        return cls(**({"rule": "threshold"} | {k: v for k, v in stored.items() if k in known}))

    def likelihood(self, options: int | None, level: bool = False) -> Likelihood:
        """The joint rule's likelihood for an item with ``options`` choices (None: a caption);
        ``level``: scores are observed accuracies (logprob scoring)."""
        chance = 1.0 / max(2, options) if options else self.caption_chance
        return Likelihood.make(self.high, self.high_concentration, chance, self.chance_concentration,
                               self.contamination, level)


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
    """``posterior``: the joint rule's probability of every candidate answer (empty for the
    threshold rule)."""

    status: Status
    rmt: str | None
    confidence: float
    flags: tuple[str, ...] = ()
    posterior: Mapping[str, float] = field(default_factory=dict, compare=False)


def propose(results: Mapping[str, SubsetResult], available: str = "VAS",
            config: ProposalConfig = ProposalConfig(), *, likelihood: Likelihood | None = None,
            prior: Mapping[str, float] | None = None) -> Proposal:
    """One item's proposal by ``config.rule`` (:data:`RULES`). ``likelihood`` (joint rule):
    the item's, from :meth:`ProposalConfig.likelihood` (default: a 4-option multiple-choice
    item); ``prior``: weights over the answers (default: from ``config.prior``; ``empirical``
    needs the caller's estimate, else uniform)."""
    return RULES[config.rule](results, available, config, likelihood=likelihood, prior=prior)


def propose_threshold(results: Mapping[str, SubsetResult], available: str = "VAS",
                      config: ProposalConfig = ProposalConfig(), **_: Any) -> Proposal:
    """The threshold rule of this module's docstring."""
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


def propose_joint(results: Mapping[str, SubsetResult], available: str = "VAS",
                  config: ProposalConfig = ProposalConfig(), *, likelihood: Likelihood | None = None,
                  prior: Mapping[str, float] | None = None) -> Proposal:
    """The joint rule of this module's docstring: the most probable answer given every
    evaluated subset, its posterior as the confidence."""
    full = parse_rmt(available)
    model = likelihood or config.likelihood(DEFAULT_OPTIONS)
    counts = counts_of(results, full)
    if not counts:
        return Proposal("incomplete", None, 0.0)
    weights = parse_prior(config.prior) if prior is None else prior
    post = posterior(counts, full, model, weights or None)
    best, p_best, second, p_second = decide(post)
    flags = []
    if second is not None and p_second >= config.close * p_best:
        flags.append("close")
    decisive = math.log(1.0 / config.close)
    odds = subset_log_odds(counts, full, model)
    if any(a != b and is_subset(a, b) and odds[a] >= decisive and odds[b] <= -decisive for a in odds for b in odds):
        flags.append("non-monotone")
    if best == UNANSWERABLE:
        return Proposal("unanswerable", None, p_best, tuple(flags), post)
    return Proposal("proposed", best, p_best, tuple(flags), post)


RULES: dict[str, Callable[..., Proposal]] = {"threshold": propose_threshold, "joint": propose_joint}


def _clip(x: float) -> float:
    return min(1.0, max(0.0, x))


# ---------------------------------------------------------------- search


def joint_budget(available: str, samples: int) -> int:
    """Answers the joint rule's adaptive search may draw for one item: ``samples`` (K) per
    subset of ``available`` on average, spent on any subsets (exhaustive search's cost)."""
    return samples * len(subsets(parse_rmt(available)))


STOPPING_SETTINGS = {"threshold": ("rule", "tau", "delta"), "joint": ("rule", "prior")}  # what adaptive search stops on


def early_stop_changes(search: SearchMode, searched: ProposalConfig, config: ProposalConfig) -> list[str]:
    """``"name: old -> new"`` for each setting the adaptive search under ``searched`` stopped
    on that ``config`` changes: the stored results may lack samples the new settings would
    have drawn (none after an exhaustive search, whose results every setting can use)."""
    if search != "adaptive":
        return []
    return [f"{name}: {getattr(searched, name)} -> {getattr(config, name)}" for name in STOPPING_SETTINGS[searched.rule]
            if getattr(searched, name) != getattr(config, name)]


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
