r"""Joint inference of an item's minimal RMT from all its subset results (pure functions).

Candidate answers (hypotheses) for an item whose video has the modalities ``available``:
every tag M inside ``available`` (7 for VAS, 3 for VS, ...) and ``unanswerable``. Under
tag M a subset s *holds* when M is inside s; under ``unanswerable`` no subset holds.

**Likelihood of one subset's evidence.** The model's accuracy p_s on (item, subset s) is
unknown; it is integrated out, independently per subset, under a Beta prior that depends
only on whether s holds::

    s holds:        p_s ~ Beta(kh * h, kh * (1 - h))     h = ``high`` (0.9), kh = ``high_concentration`` (20)
    s does not:     p_s ~ Beta(kc * c, kc * (1 - c))     c = chance, kc = ``chance_concentration`` (10)

c is 1 / (number of options) for a multiple-choice item (Beta(2.5, 7.5) with 4 options:
0.25 +- 0.13) and ``caption_chance`` (0.2) for a caption. The n scores x_1..x_n in [0, 1]
of subset s (1/0 per sampled answer; a similarity per sampled caption) have likelihood
prod_i p^x_i (1 - p)^(1 - x_i) = p^k (1 - p)^(n - k) with k = sum_i x_i: the Bernoulli
likelihood for 0/1 scores, and its fractional (quasi-binomial) extension for continuous
caption scores. Integrating p over Beta(a, b) gives the Beta-Binomial marginal likelihood
without its binomial coefficient (that factor is the same under every hypothesis)::

    m(k, n | a, b) = integral p^k (1 - p)^(n - k) Beta(p | a, b) dp = B(a + k, b + n - k) / B(a, b).

Derivation of the sequential form used by the search: the predictive probability that
answer i + 1 is correct after k of i were is (a + k) / (a + b + i), so m is the product
of these predictive probabilities over the answers in order (and m(k+1, n+1) + m(k, n+1)
= m(k, n)). A subset may also behave like the other class (an extra modality that
distracts the model from a tag it holds, a shortcut that answers without it): with
probability eps = ``contamination`` (default 0) it does, whatever the hypothesis::

    L_hold(s)   = (1 - eps) m(k, n | a_h, b_h) + eps m(k, n | a_c, b_c)
    L_chance(s) = (1 - eps) m(k, n | a_c, b_c) + eps m(k, n | a_h, b_h),

so one inconsistent subset costs a hypothesis at most a factor (1 - eps) / eps. An
observed accuracy *level* (logprob scoring: one forward pass gives the correct option's
probability, the accuracy itself) uses the Beta density f instead of m, x = the mean score
clipped to [0.01, 0.99]. An unevaluated subset contributes 1.

**Monotone.** When a_h >= a_c and b_h <= b_c (checked by :meth:`Likelihood.make`) and
eps < 1/2, one more answer consistent with tag M (correct on a subset that holds under M,
wrong on one that does not) never lowers P(M | D): the predictive probability of a correct
answer, (a + k) / (a + b + n), is then at least as high under "holds" as under "chance"
after any k of n, and eps < 1/2 keeps it so for the mixtures; M's posterior is multiplied
by its own predictive over the posterior-weighted mean of all hypotheses' predictives.
For levels the same condition makes f_hold / f_chance increasing in x.

**Posterior**, with a prior pi over the hypotheses (uniform, explicit weights, or the mix
seen so far, :func:`empirical_prior`)::

    P(H | D) = pi(H) prod_s L_[s holds under H](s) / sum_H' pi(H') prod_s L_[s holds under H'](s).

**Worked example** (``tests/test_joint_proposal.py`` checks it): available ``V``, so the
hypotheses are V and unanswerable; eps = 0, h = 0.9, kh = 4 (Beta(3.6, 0.4)), c = 0.25,
kc = 4 (Beta(1, 3)); subset V answered 2 of 2 correctly. m_hold = (3.6 / 4)(4.6 / 5) =
0.828, m_chance = (1 / 4)(2 / 5) = 0.1, so with a uniform prior P(V | D) = 0.828 / 0.928
= 0.8922.

**Adaptive search** (:func:`maple_data.annotate.search.next_subset`). The next answer of
subset s depends on H only through whether s holds, so its expected information about H
is the mutual information between that binary class and one 0/1 answer. With w = P(s holds | D) and q_hold,
q_chance the predictive probabilities of a correct answer::

    EIG(s) = H_b(w q_hold + (1 - w) q_chance) - w H_b(q_hold) - (1 - w) H_b(q_chance)

(H_b the binary entropy in nats; a continuous score counts as 0/1 for this choice only; a
level is seen once per subset and its q is P(p > 1/2 | class)). The search draws from the
subset with the largest EIG and stops an item once the best hypothesis has posterior >=
``target``, when the budget is spent, or when with the answers left no hypothesis could
reach ``target`` (``search.reachable``: each hypothesis's posterior if every remaining answer
went its way).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from maple_data.rmt import TAGS, is_subset, parse_rmt, subsets

UNANSWERABLE = "unanswerable"
ANSWERS: tuple[str, ...] = (*TAGS, UNANSWERABLE)  # every candidate answer, in display order
LEVEL_CLIP = 0.01
DEFAULT_OPTIONS = 4  # options of a multiple-choice item when the caller does not say (the synthetic benchmark's)

Counts = Mapping[str, tuple[float, int]]  # subset -> (k = sum of scores, n = number of scores)


@dataclass(frozen=True)
class Likelihood:
    """Beta priors of one item's subset accuracies, ``(a, b)`` for subsets that hold and
    for those that do not; ``contamination`` is eps (a subset behaves like the other class);
    ``level``: a subset's mean score is an observed accuracy (logprob scoring) rather than n
    sampled answers."""

    hold: tuple[float, float] = (18.0, 2.0)
    chance: tuple[float, float] = (2.5, 7.5)
    contamination: float = 0.0
    level: bool = False

    @classmethod
    def make(cls, high: float, high_concentration: float, chance: float, chance_concentration: float,
             contamination: float = 0.0, level: bool = False) -> Likelihood:
        """Beta(kh h, kh (1 - h)) where a subset holds, Beta(kc c, kc (1 - c)) where it does not;
        refuses settings under which evidence for a tag could lower its posterior (see
        "Monotone" in the module docstring)."""
        if not 0.0 < chance < high < 1.0 or min(high_concentration, chance_concentration) <= 0 \
                or not 0.0 <= contamination < 0.5:
            raise ValueError(f"need 0 < chance < high < 1, concentrations > 0 and 0 <= contamination < 0.5; got "
                             f"high={high}, chance={chance}, concentrations {high_concentration} and "
                             f"{chance_concentration}, contamination={contamination}")
        hold = (high_concentration * high, high_concentration * (1 - high))
        other = (chance_concentration * chance, chance_concentration * (1 - chance))
        if hold[0] < other[0] - 1e-12 or hold[1] > other[1] + 1e-12:
            raise ValueError(f"the Beta prior of a holding subset, Beta{_short(hold)}, needs a >= and b <= those of a "
                             f"subset at chance, Beta{_short(other)} (high concentration {high_concentration} vs "
                             f"chance concentration {chance_concentration}): raise the chance concentration or "
                             f"lower the high one")
        return cls(hold, other, contamination, level)


@lru_cache(maxsize=64)
def columns(available: str) -> tuple[str, ...]:
    """The subsets of ``available`` in canonical order (the columns of :func:`holds_matrix`)."""
    return tuple(subsets(parse_rmt(available)))


@lru_cache(maxsize=64)
def hypotheses(available: str) -> tuple[str, ...]:
    """Candidate answers for an item: the tags inside ``available``, then ``unanswerable``."""
    return (*columns(available), UNANSWERABLE)


@lru_cache(maxsize=64)
def holds_matrix(available: str) -> np.ndarray:
    """``(hypotheses, subsets)`` 0/1 floats, read-only: whether subset s holds under H."""
    holds = np.array([[float(h != UNANSWERABLE and is_subset(h, s)) for s in columns(available)]
                      for h in hypotheses(available)])
    holds.flags.writeable = False
    return holds


@lru_cache(maxsize=1 << 16)
def log_beta_binomial(k: float, n: int, a: float, b: float) -> float:
    """``log m(k, n | a, b) = log B(a + k, b + n - k) - log B(a, b)`` (nats)."""
    return (math.lgamma(a + k) + math.lgamma(b + n - k) - math.lgamma(a + b + n)
            - math.lgamma(a) - math.lgamma(b) + math.lgamma(a + b))


def log_beta_pdf(x: float, a: float, b: float) -> float:
    return (a - 1) * math.log(x) + (b - 1) * math.log1p(-x) - math.lgamma(a) - math.lgamma(b) + math.lgamma(a + b)


def _short(ab: tuple[float, float]) -> str:
    return f"({ab[0]:g}, {ab[1]:g})"


def _mix(log_own: float, log_other: float, eps: float) -> float:
    """``log((1 - eps) exp(log_own) + eps exp(log_other))``."""
    if eps <= 0.0:
        return log_own
    x, y = math.log1p(-eps) + log_own, math.log(eps) + log_other
    top = max(x, y)
    return top + math.log(math.exp(x - top) + math.exp(y - top))


@lru_cache(maxsize=1 << 16)
def log_evidence(k: float, n: int, model: Likelihood) -> tuple[float, float]:
    """``(log L_chance, log L_hold)`` of one subset whose ``n`` scores sum to ``k``."""
    if n == 0:
        return 0.0, 0.0
    if model.level:
        x = min(1.0 - LEVEL_CLIP, max(LEVEL_CLIP, k / n))
        chance, hold = log_beta_pdf(x, *model.chance), log_beta_pdf(x, *model.hold)
    else:
        chance, hold = log_beta_binomial(k, n, *model.chance), log_beta_binomial(k, n, *model.hold)
    eps = model.contamination
    return _mix(chance, hold, eps), _mix(hold, chance, eps)


def counts_of(results: Mapping[str, object], available: str) -> dict[str, tuple[float, int]]:
    """``subset -> (k, n)`` of the evaluated subsets of ``available`` in ``results``
    (``SubsetResult``-like values: a ``scores`` list)."""
    cols = columns(parse_rmt(available))
    return {s: (float(sum(r.scores)), len(r.scores)) for s, r in results.items() if s in cols and len(r.scores)}


def evidence_table(counts: Counts, available: str, model: Likelihood) -> np.ndarray:
    """``(subsets, 2)`` log-likelihoods of each subset's evidence, columns (chance, hold)."""
    return np.array([log_evidence(*counts.get(s, (0.0, 0)), model) for s in columns(available)])


def log_joint(table: np.ndarray, holds: np.ndarray, log_prior: np.ndarray) -> np.ndarray:
    """``(..., hypotheses)``: log prior + each subset's class log-likelihood, summed over
    subsets; ``table`` is ``(..., subsets, 2)``."""
    return log_prior + table[..., 1] @ holds.T + table[..., 0] @ (1.0 - holds).T


def normalise(log_p: np.ndarray) -> np.ndarray:
    """Probabilities from log weights along the last axis (each row sums to 1)."""
    p = np.exp(log_p - log_p.max(axis=-1, keepdims=True))
    return p / p.sum(axis=-1, keepdims=True)


def prior_vector(available: str, prior: Mapping[str, float] | None = None) -> np.ndarray:
    """``(hypotheses,)`` log prior: the ``prior`` weights normalised over the item's
    hypotheses (answers not named weigh 0), uniform when None."""
    names = hypotheses(available)
    if prior is None:
        return np.full(len(names), -math.log(len(names)))
    weights = np.array([max(0.0, float(prior.get(h, 0.0))) for h in names])
    if weights.sum() <= 0:
        raise ValueError(f"the prior gives no weight to any answer possible with modalities {available!r}")
    with np.errstate(divide="ignore"):
        return np.log(weights / weights.sum())


def posterior_array(counts: Counts, available: str, model: Likelihood, log_prior: np.ndarray) -> np.ndarray:
    """``(hypotheses,)`` posterior, in :func:`hypotheses` order."""
    return normalise(log_joint(evidence_table(counts, available, model), holds_matrix(available), log_prior))


def posterior(counts: Counts, available: str, model: Likelihood,
              prior: Mapping[str, float] | None = None) -> dict[str, float]:
    """``P(H | D)`` for every hypothesis of ``available`` (sums to 1)."""
    p = posterior_array(counts, available, model, prior_vector(available, prior))
    return dict(zip(hypotheses(available), p.tolist()))


def subset_log_odds(counts: Counts, available: str, model: Likelihood) -> dict[str, float]:
    """Each evaluated subset's own evidence ``log L_hold - log L_chance`` (nats)."""
    out = {}
    for s in columns(available):
        if s in counts:
            chance, hold = log_evidence(*counts[s], model)
            out[s] = hold - chance
    return out


def decide(post: Mapping[str, float]) -> tuple[str, float, str | None, float]:
    """``(best, P(best), runner-up, P(runner-up))``; ties go to the earlier answer in
    :data:`ANSWERS` order (smaller tags first)."""
    ranked = sorted(post, key=lambda h: (-post[h], ANSWERS.index(h)))
    second = ranked[1] if len(ranked) > 1 else None
    return ranked[0], post[ranked[0]], second, post[second] if second else 0.0


# ---------------------------------------------------------------- priors


def parse_prior(spec: str) -> Mapping[str, float] | None:
    """``uniform`` -> None; ``empirical`` -> ``{}`` (the mix seen so far, estimated by the
    caller with :func:`empirical_prior`); ``V=2,VA=1,unanswerable=0.5`` -> explicit weights
    (answers not named weigh 0)."""
    text = spec.strip()
    if text in ("uniform", ""):
        return None
    if text == "empirical":
        return {}
    weights: dict[str, float] = {}
    for part in text.split(","):
        name, sep, value = part.partition("=")
        if not sep:
            raise ValueError(f"prior {spec!r}: expected uniform, empirical or ANSWER=WEIGHT,... (got {part!r})")
        key = UNANSWERABLE if name.strip().lower() == UNANSWERABLE else parse_rmt(name)
        try:
            weights[key] = float(value)
        except ValueError:
            raise ValueError(f"prior {spec!r}: the weight of {name.strip()!r} is not a number") from None
        if not weights[key] >= 0:
            raise ValueError(f"prior {spec!r}: the weight of {name.strip()!r} is negative")
    if not any(weights.values()):
        raise ValueError(f"prior {spec!r} gives no weight to any answer")
    return weights


def empirical_prior(items: Sequence[tuple[Counts, str, Likelihood]], pseudo: float = 1.0,
                    iterations: int = 100) -> dict[str, float]:
    """The mix of answers over ``items`` (``(counts, available, likelihood)`` each),
    estimated by EM: start uniform, average the items' posteriors under the current mix,
    repeat until it moves less than 1e-6; ``pseudo`` counts per answer keep every answer
    possible. Items with no evidence do not count."""
    tables = [(evidence_table(c, a, m), holds_matrix(a), a) for c, a, m in items if c]
    mix = dict.fromkeys(ANSWERS, 1.0 / len(ANSWERS))
    for _ in range(iterations):
        total = dict.fromkeys(ANSWERS, pseudo)
        for table, holds, available in tables:
            post = normalise(log_joint(table, holds, prior_vector(available, mix)))
            for h, p in zip(hypotheses(available), post.tolist()):
                total[h] += p
        norm = sum(total.values())
        new = {h: v / norm for h, v in total.items()}
        done = max(abs(new[h] - mix[h]) for h in ANSWERS) < 1e-6
        mix = new
        if done:
            break
    return mix

