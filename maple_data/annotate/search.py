"""The searches over one item's modality subsets: which subsets get how many answers.

Both draw answers through a :data:`Sampler` and return every :class:`SubsetResult` with the
number of answers drawn. Which one runs is the rule's entry of
:data:`maple_data.annotate.proposal.RULES` (``--search adaptive``); ``--search exhaustive``
is :func:`staged_search` with every subset in one stage, K answers each.

- :func:`staged_search` (the threshold rule's adaptive search): the full input, then the
  singles, then the pairs while needed (:func:`stage_needed`), a subset stopped once it
  cannot pass (:func:`fail_decided`), so its proposals equal exhaustive search's on the
  same samples.
- :func:`joint_search` (the joint rule's): each next answer from the subset with the largest
  expected information gain (:func:`next_subset`; formula in
  :mod:`maple_data.annotate.posterior`), until the best answer's posterior reaches
  ``target``, no answer could get it there, or the item's budget is spent.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from maple_data.annotate.posterior import (
    DEFAULT_OPTIONS,
    LEVEL_CLIP,
    Counts,
    Likelihood,
    columns,
    counts_of,
    evidence_table,
    holds_matrix,
    log_beta_pdf,
    log_evidence,
    log_joint,
    normalise,
    posterior_array,
    prior_vector,
)
from maple_data.rmt import is_subset, parse_rmt, subsets, tag_size

if TYPE_CHECKING:
    from maple_data.annotate.ablation import AblationSettings
    from maple_data.annotate.proposal import ProposalConfig

SearchMode = Literal["exhaustive", "adaptive"]
Sampler = Callable[[list[str], int], list[list[tuple[float, str]]]]  # subsets, n -> (score, answer) per sample
Found = tuple[dict[str, "SubsetResult"], int]  # subset -> its results, answers drawn
Search = Callable[..., Found]  # (available, settings, sample, done, on_result, *, likelihood, prior)


@dataclass
class SubsetResult:
    """Scores of one (item, subset), each in [0, 1]; ``answers`` are the raw model outputs."""

    subset: str
    scores: list[float] = field(default_factory=list)
    answers: list[str] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.scores)

    @property
    def accuracy(self) -> float:
        return sum(self.scores) / len(self.scores) if self.scores else 0.0

    def add(self, scored: Sequence[tuple[float, str]]) -> None:
        """Append ``(score, answer)`` pairs."""
        self.scores += [score for score, _ in scored]
        self.answers += [answer for _, answer in scored]


# ---------------------------------------------------------------- staged search (threshold rule)


def search_stages(available: str, mode: SearchMode) -> list[list[str]]:
    """Subsets to evaluate, stage by stage. ``exhaustive``: every subset of the available
    modalities in one stage. ``adaptive``: full first, then the singles, then the pairs
    (:func:`stage_needed` decides whether a stage is needed)."""
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


def staged_search(available: str, settings: AblationSettings, sample: Sampler,
                  done: Mapping[str, SubsetResult] | None = None,
                  on_result: Callable[[SubsetResult], None] | None = None, **_: Any) -> Found:
    """The stages of :func:`search_stages` for ``settings.search``, K (``settings.samples``)
    answers per subset. Adaptive: a later stage only when :func:`stage_needed`, answers
    ``chunk`` at a time, a subset stopped once it cannot pass (:func:`fail_decided` against
    ``tau`` for the full input, against :func:`pass_threshold` after it). ``done`` results
    are reused; ``on_result`` gets each newly finished subset."""
    results = {s: r for s, r in (done or {}).items() if is_subset(s, available)}
    drawn, adaptive, budget, config = 0, settings.search == "adaptive", settings.samples, settings.proposal
    for index, stage in enumerate(search_stages(available, settings.search)):
        if adaptive and not stage_needed(index, results, available, config):
            break
        threshold = pass_threshold(results, available, config) if index else config.tau
        running = [s for s in stage if s not in results]
        partial, finished = {s: SubsetResult(s) for s in running}, []
        for step in chunks(budget, settings.chunk if adaptive else budget):
            if not running:
                break
            for s, scored in zip(running, sample(running, step)):
                partial[s].add(scored)
            drawn += step * len(running)
            settled = [s for s in running if adaptive and fail_decided(partial[s].scores, budget, threshold)]
            finished += settled
            running = [s for s in running if s not in settled]
        for s in finished + running:
            results[s] = partial[s]
            if on_result is not None:
                on_result(partial[s])
    return results, drawn


# ---------------------------------------------------------------- joint search (joint rule)


def joint_budget(available: str, samples: int) -> int:
    """Answers the joint rule's adaptive search may draw for one item: ``samples`` (K) per
    subset of ``available`` on average, spent on any subsets (exhaustive search's cost)."""
    return samples * len(subsets(parse_rmt(available)))


def joint_search(available: str, settings: AblationSettings, sample: Sampler,
                 done: Mapping[str, SubsetResult] | None = None,
                 on_result: Callable[[SubsetResult], None] | None = None, *,
                 likelihood: Likelihood | None = None, prior: Mapping[str, float] | None = None) -> Found:
    """``chunk`` answers at a time from :func:`next_subset` until it says stop or the item
    has K answers per subset on average (:func:`joint_budget`; a level, with logprob
    scoring, is observed once per subset). ``likelihood``: the item's (default: a 4-option
    multiple-choice item); ``prior``: weights over the answers (default uniform). ``done``
    results count as evidence and may get more answers; ``on_result`` gets each subset that
    got new answers once, when the item stops, with all its answers (a later journal line
    for a subset replaces an earlier one)."""
    full = parse_rmt(available)
    model = likelihood or settings.proposal.likelihood(DEFAULT_OPTIONS)
    log_prior = prior_vector(full, prior)
    results = {s: SubsetResult(s, list(r.scores), list(r.answers)) for s, r in (done or {}).items()
               if is_subset(s, full)}
    budget, drawn, touched = joint_budget(full, settings.samples), 0, []
    while True:
        counts = counts_of(results, full)
        room = budget - sum(n for _, n in counts.values())
        left = {s: 0 if model.level and s in counts else max(0, room) for s in columns(full)}
        subset = next_subset(counts, full, model, log_prior, left, settings.proposal.target)
        if subset is None:
            break
        step = min(settings.chunk, left[subset])
        results.setdefault(subset, SubsetResult(subset)).add(sample([subset], step)[0])
        drawn += step
        if subset not in touched:
            touched.append(subset)
    for subset in touched:
        if on_result is not None:
            on_result(results[subset])
    return results, drawn


def _binary_entropy(q: np.ndarray) -> np.ndarray:
    q = np.clip(q, 1e-12, 1 - 1e-12)
    return -(q * np.log(q) + (1 - q) * np.log1p(-q))


@lru_cache(maxsize=256)
def _level_above_half(a: float, b: float, steps: int = 400) -> float:
    """``P(p > 1/2)`` under Beta(a, b) (midpoint rule)."""
    xs = (np.arange(steps) + 0.5) / steps
    pdf = np.exp([log_beta_pdf(float(x), a, b) for x in xs])
    return float(pdf[xs > 0.5].sum() / pdf.sum())


def information_gain(counts: Counts, available: str, model: Likelihood, log_prior: np.ndarray) -> np.ndarray:
    """``(subsets,)`` expected information (nats) about the hypothesis from one more 0/1
    answer of each subset (:mod:`maple_data.annotate.posterior`); 0 for a level already observed."""
    cols, holds = columns(available), holds_matrix(available)
    table = evidence_table(counts, available, model)
    w = normalise(log_joint(table, holds, log_prior)) @ holds  # P(s holds | D)
    if model.level:
        q = np.tile([_level_above_half(*model.chance), _level_above_half(*model.hold)], (len(cols), 1))
    else:
        plus = np.array([log_evidence(counts.get(s, (0.0, 0))[0] + 1.0, counts.get(s, (0.0, 0))[1] + 1, model)
                         for s in cols])
        q = np.exp(plus - table)  # P(next answer correct | class, D), columns (chance, hold)
    gain = _binary_entropy(w * q[:, 1] + (1 - w) * q[:, 0]) - w * _binary_entropy(q[:, 1]) \
        - (1 - w) * _binary_entropy(q[:, 0])
    if model.level:
        gain = np.where([s in counts for s in cols], 0.0, gain)
    return np.maximum(gain, 0.0)


def reachable(counts: Counts, available: str, model: Likelihood, left: Mapping[str, int],
              log_prior: np.ndarray) -> np.ndarray:
    """``(hypotheses,)`` each hypothesis's posterior if all answers still allowed (``left[s]``
    more for subset s) went its way: correct where s holds under it, wrong elsewhere (a level
    not yet observed: at the clip bound)."""
    def completed(s: str, correct: bool) -> tuple[float, float]:
        k, n = counts.get(s, (0.0, 0))
        r = left.get(s, 0)
        if model.level:
            return log_evidence(1.0 - LEVEL_CLIP if correct else LEVEL_CLIP, 1, model) if r and not n \
                else log_evidence(k, n, model)
        return log_evidence(k + (r if correct else 0), n + r, model)

    cols, holds = columns(available), holds_matrix(available)
    best = np.array([completed(s, True) for s in cols])  # (subsets, 2)
    worst = np.array([completed(s, False) for s in cols])
    tables = np.where(holds[:, :, None] > 0, best, worst)  # (hypotheses, subsets, 2): each one's best case
    return np.diagonal(normalise(log_joint(tables, holds, log_prior))).copy()


def next_subset(counts: Counts, available: str, model: Likelihood, log_prior: np.ndarray,
                left: Mapping[str, int], target: float) -> str | None:
    """The subset to draw the next answers from, or None to stop: the best hypothesis has
    posterior >= ``target``, no answer is left (``left[s]``: how many more subset s may
    get), or no hypothesis can reach ``target`` with them (:func:`reachable`). Otherwise the
    subset with the largest :func:`information_gain`; ties go to the subset with fewer
    answers, then to canonical order."""
    cols = columns(available)
    if posterior_array(counts, available, model, log_prior).max() >= target:
        return None
    open_ = [i for i, s in enumerate(cols) if left.get(s, 0) > 0]
    if not open_ or reachable(counts, available, model, left, log_prior).max() < target:
        return None
    gain = information_gain(counts, available, model, log_prior)
    return cols[max(open_, key=lambda i: (round(float(gain[i]), 12), -counts.get(cols[i], (0.0, 0))[1], -i))]


# ---------------------------------------------------------------- either


def run_search(available: str, settings: AblationSettings, sample: Sampler,
               done: Mapping[str, SubsetResult] | None = None,
               on_result: Callable[[SubsetResult], None] | None = None, *,
               likelihood: Likelihood | None = None, prior: Mapping[str, float] | None = None) -> Found:
    """The search over subsets of ``available`` for one item; returns ``(results, answers
    drawn)``. ``sample(subsets, n)`` draws ``n`` scored answers for each subset (one batch);
    ``done`` results are reused, ``on_result`` gets each newly finished subset. Adaptive:
    the search of ``settings.proposal.rule`` (its ``RULES`` entry; ``likelihood`` and ``prior``
    are the item's, for the joint rule); exhaustive: :func:`staged_search`."""
    search = settings.proposal.rule_entry.search if settings.search == "adaptive" else staged_search
    return search(available, settings, sample, done, on_result, likelihood=likelihood, prior=prior)
