"""The human review decision: one line of the decision journal (its path, reader and
writer are in :mod:`maple_data.workdir`), appended and fsynced before it is acknowledged:

``{"item": id, "reviewer": name, "verdict": accept|override|unanswerable|reject,
"rmt": tag or null, "proposed": tag or null, "time": ISO-8601 UTC, "note": text or null,
"bulk": bool}``

``rmt`` is the verified tag (the proposal for ``accept``, the reviewer's tag for
``override``, null otherwise). The last decision per (item, reviewer) wins; across
reviewers, the most recent decision decides the item (:func:`latest_by_item`). The file
is a :class:`maple_data.durable.Journal`: a torn line left by a crash is ended before the
next append and reported (file, line) by the reader, never glued to a later decision.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from maple_data.rmt import parse_rmt

VERDICTS = ("accept", "override", "unanswerable", "reject")
VERIFIED = ("accept", "override")  # verdicts that give an item its RMT
_TYPES = {"item": str, "reviewer": str, "verdict": str, "rmt": (str, type(None)), "proposed": (str, type(None)),
          "time": str, "note": (str, type(None)), "bulk": bool}
_KIND_NAMES = {str: "a string", (str, type(None)): "a string or null", bool: "true or false"}


@dataclass(frozen=True)
class Decision:
    item: str
    reviewer: str
    verdict: str
    rmt: str | None = None
    proposed: str | None = None
    time: str = ""
    note: str | None = None
    bulk: bool = False

    def __post_init__(self) -> None:
        for name, kind in _TYPES.items():
            value = getattr(self, name)
            if not isinstance(value, kind):
                raise ValueError(f"{name} must be {_KIND_NAMES[kind]}, got {value!r}")
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {', '.join(VERDICTS)}, got {self.verdict!r}")
        if not self.reviewer.strip():
            raise ValueError("a decision needs a reviewer name")
        if self.verdict in VERIFIED and self.rmt is None:
            raise ValueError(f"verdict {self.verdict!r} needs an rmt")
        if self.rmt is not None:
            object.__setattr__(self, "rmt", parse_rmt(self.rmt))

    @classmethod
    def make(cls, item: str, reviewer: str, verdict: str, rmt: str | None = None, **rest: Any) -> Decision:
        """A decision stamped with the current UTC time."""
        return cls(item, reviewer, verdict, rmt, time=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **rest)


def latest_by_reviewer(decisions: Iterable[Decision]) -> dict[tuple[str, str], Decision]:
    """``(item, reviewer) -> decision``: the last one each reviewer made on each item."""
    return {(d.item, d.reviewer): d for d in decisions}


def latest_by_item(decisions: Iterable[Decision]) -> dict[str, Decision]:
    """``item -> decision``: the most recent decision on each item, any reviewer (file
    order breaks ties of equal time)."""
    ordered = sorted(enumerate(decisions), key=lambda pair: (pair[1].time, pair[0]))
    return {d.item: d for _, d in ordered}
