"""``maple-data review-stats``: proposal-vs-verdict confusion, acceptance, agreement.

Labels: a decision's verified RMT (accept / override), or ``unanswerable`` / ``reject``;
a proposal's RMT or ``unanswerable``. Cohen's kappa between two reviewers on the items
both decided: ``kappa = (p_o - p_e) / (1 - p_e)`` with ``p_o`` the share of items with the
same label and ``p_e = sum_k p1(k) p2(k)`` the agreement their label frequencies give by
chance (1.0 when ``p_e == 1`` and they agree everywhere).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from itertools import combinations

from maple_data import decisions as journal


def label(decision: journal.Decision) -> str:
    return decision.rmt if decision.verdict in journal.VERIFIED else decision.verdict


def cohen_kappa(first: Sequence[str], second: Sequence[str]) -> float:
    """Cohen's kappa of two label sequences of equal length (module docstring)."""
    if len(first) != len(second) or not first:
        raise ValueError("kappa needs two non-empty label lists of the same length")
    n = len(first)
    observed = sum(a == b for a, b in zip(first, second)) / n
    c1, c2 = Counter(first), Counter(second)
    expected = sum(c1[k] * c2[k] for k in c1) / (n * n)
    if expected == 1.0:
        return 1.0 if observed == 1.0 else 0.0
    return (observed - expected) / (1.0 - expected)


def confusion(proposals: Mapping[str, str], decisions: Iterable[journal.Decision]) -> dict[str, Counter]:
    """``proposed label -> Counter(verdict label)`` over the latest decision per item."""
    table: dict[str, Counter] = {}
    for item, decision in journal.latest_by_item(decisions).items():
        if item in proposals:
            table.setdefault(proposals[item], Counter())[label(decision)] += 1
    return table


def label_order(labels: Iterable[str]) -> list[str]:
    """Tags first (by name), then the verdict labels (``reject``, ``unanswerable``)."""
    return sorted(set(labels), key=lambda k: (len(k) > 3, k))


def acceptance(table: Mapping[str, Counter]) -> tuple[dict[str, float], int, int]:
    """Per proposed label, the share of its items whose verdict kept it; and over all rows,
    ``(accepted, decided)`` item counts."""
    shares = {proposed: row.get(proposed, 0) / sum(row.values()) for proposed, row in table.items()}
    accepted = sum(row.get(proposed, 0) for proposed, row in table.items())
    return shares, accepted, sum(sum(row.values()) for row in table.values())


def pairwise_kappa(decisions: Iterable[journal.Decision]) -> dict[tuple[str, str], tuple[float, int]]:
    """``(reviewer a, reviewer b) -> (kappa, items both decided)`` for every pair sharing items."""
    by_reviewer: dict[str, dict[str, str]] = {}
    for (item, reviewer), decision in journal.latest_by_reviewer(decisions).items():
        by_reviewer.setdefault(reviewer, {})[item] = label(decision)
    out = {}
    for a, b in combinations(sorted(by_reviewer), 2):
        shared = sorted(set(by_reviewer[a]) & set(by_reviewer[b]))
        if shared:
            out[(a, b)] = (cohen_kappa([by_reviewer[a][i] for i in shared], [by_reviewer[b][i] for i in shared]),
                           len(shared))
    return out
