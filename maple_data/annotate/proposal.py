"""The RMT proposal rules (pure functions) and :data:`RULES`, one entry per rule: its
propose function, its adaptive search (:mod:`maple_data.annotate.search`) and the settings
that search stops on. A new rule is a propose function (and a search) plus one entry.

Evidence for one item is a :class:`~maple_data.annotate.search.SubsetResult` per evaluated
subset: per-sample scores in [0, 1] (1/0 for a multiple-choice answer, a similarity for a
caption, the correct option's probability for logprob scoring). ``accuracy`` is their mean.

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
Its adaptive search (:func:`maple_data.annotate.search.joint_search`) draws each next answer
from the subset with the largest expected information gain, until the best answer's
posterior reaches ``target`` or the item's budget (K answers per subset on average) is spent.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from maple_data.annotate.posterior import (
    DEFAULT_OPTIONS,
    UNANSWERABLE,
    Likelihood,
    counts_of,
    decide,
    parse_prior,
    posterior,
    subset_log_odds,
)
from maple_data.annotate.search import Search, SearchMode, SubsetResult, joint_search, staged_search
from maple_data.rmt import is_subset, parse_rmt, tag_index, tag_size
from maple_data.settings import setting

Status = Literal["proposed", "unanswerable", "incomplete"]


@dataclass(frozen=True)
class ProposalConfig:
    """Settings of both proposal rules (stored in ``ablation/settings.json``). The joint
    rule's Beta priors and likelihood: :mod:`maple_data.annotate.posterior`."""

    tau: float = setting(0.75, help="Threshold rule: a subset passes at accuracy >= TAU; full input below TAU makes "
                                    "the item unanswerable.")
    delta: float = setting(0.15, help="Threshold rule: a passing subset must also be within DELTA of the full "
                                      "input's accuracy.")
    min_samples: int = setting(4, help="Threshold rule: flag low-k when the deciding subset has fewer samples.")
    rule: str = setting("joint", help="joint: the answer (a tag or unanswerable) that best explains all subset "
                                      "results together, its posterior as the confidence; threshold: the smallest "
                                      "subset passing TAU and DELTA on its own.")
    prior: str = setting("uniform", help="Joint rule: prior over the answers: uniform, empirical (the mix of answers "
                                         "seen so far) or weights such as V=2,VA=1,unanswerable=0.5 (answers not "
                                         "named weigh 0).")
    target: float = setting(0.98, help="Joint rule, adaptive search: stop an item once its best answer's posterior "
                                       "reaches TARGET (or its budget of K answers per subset on average is spent).")
    high: float = setting(0.9, help="Joint rule: mean of the Beta prior of the accuracy of a subset that holds the "
                                    "tag.")
    high_concentration: float = setting(20.0, help="Joint rule: concentration of that Beta prior.")
    chance_concentration: float = setting(10.0, help="Joint rule: concentration of the Beta prior of the accuracy "
                                                     "of a subset that does not hold the tag (mean: chance).")
    caption_chance: float = setting(0.2, help="Joint rule: chance accuracy of a caption (a multiple-choice item's "
                                              "is 1 / options).")
    contamination: float = setting(0.0, help="Joint rule: the chance that a subset behaves like the other class.")
    close: float = setting(0.1, help="Joint rule: flag close when the runner-up's posterior >= CLOSE x the best's.")

    def __post_init__(self) -> None:
        if not 0.0 < self.tau <= 1.0 or self.delta < 0 or self.min_samples < 1:
            raise ValueError(f"need 0 < tau <= 1, delta >= 0, min_samples >= 1; got {self}")
        if self.rule not in RULES:
            raise ValueError(f"rule must be one of {', '.join(RULES)}, got {self.rule!r}")
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

    @property
    def rule_entry(self) -> Rule:
        """This config's rule: its entry of :data:`RULES`."""
        return RULES[self.rule]

    def likelihood(self, options: int | None, level: bool = False) -> Likelihood:
        """The joint rule's likelihood for an item with ``options`` choices (None: a caption);
        ``level``: scores are observed accuracies (logprob scoring)."""
        chance = 1.0 / max(2, options) if options else self.caption_chance
        return Likelihood.make(self.high, self.high_concentration, chance, self.chance_concentration,
                               self.contamination, level)


@dataclass(frozen=True)
class Proposal:
    """``posterior``: the joint rule's probability of every candidate answer (empty for the
    threshold rule)."""

    status: Status
    rmt: str | None
    confidence: float
    flags: tuple[str, ...] = ()
    posterior: Mapping[str, float] = field(default_factory=dict, compare=False)


def propose_threshold(results: Mapping[str, SubsetResult], available: str, config: ProposalConfig,
                      **_: Any) -> Proposal:
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


def propose_joint(results: Mapping[str, SubsetResult], available: str, config: ProposalConfig, *,
                  likelihood: Likelihood | None = None, prior: Mapping[str, float] | None = None) -> Proposal:
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


def _clip(x: float) -> float:
    return min(1.0, max(0.0, x))


@dataclass(frozen=True)
class Rule:
    """A proposal rule: ``propose(results, available, config, *, likelihood, prior)``, its
    adaptive search (``--search adaptive``) and the :class:`ProposalConfig` settings that
    search stops on."""

    propose: Callable[..., Proposal]
    search: Search
    stopping: tuple[str, ...]


RULES: dict[str, Rule] = {
    "threshold": Rule(propose_threshold, staged_search, ("rule", "tau", "delta")),
    "joint": Rule(propose_joint, joint_search, ("rule", "prior")),
}


def propose(results: Mapping[str, SubsetResult], available: str = "VAS", config: ProposalConfig | None = None, *,
            likelihood: Likelihood | None = None, prior: Mapping[str, float] | None = None) -> Proposal:
    """One item's proposal by ``config.rule`` (default config: :class:`ProposalConfig`).
    ``likelihood`` (joint rule): the item's, from :meth:`ProposalConfig.likelihood`
    (default: a 4-option multiple-choice item); ``prior``: weights over the answers
    (default: from ``config.prior``; ``empirical`` needs the caller's estimate, else uniform)."""
    config = config or ProposalConfig()
    return config.rule_entry.propose(results, available, config, likelihood=likelihood, prior=prior)


def early_stop_changes(search: SearchMode, searched: ProposalConfig, config: ProposalConfig) -> list[str]:
    """``"name: old -> new"`` for each setting the adaptive search under ``searched`` stopped
    on that ``config`` changes: the stored results may lack samples the new settings would
    have drawn (none after an exhaustive search, whose results every setting can use)."""
    if search != "adaptive":
        return []
    return [f"{name}: {getattr(searched, name)} -> {getattr(config, name)}" for name in searched.rule_entry.stopping
            if getattr(searched, name) != getattr(config, name)]
