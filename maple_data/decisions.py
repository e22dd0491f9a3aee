"""The human review decision journal: ``WORK/decisions.jsonl``.

One JSON object per line, appended and fsynced before a decision is acknowledged:

``{"item": id, "reviewer": name, "verdict": accept|override|unanswerable|reject,
"rmt": tag or null, "proposed": tag or null, "time": ISO-8601 UTC, "note": text or null,
"bulk": bool}``

``rmt`` is the verified tag (the proposal for ``accept``, the reviewer's tag for
``override``, null otherwise). The last decision per (item, reviewer) wins; across
reviewers, the most recent decision decides the item (:func:`latest_by_item`). The file
is a :class:`maple_data.durable.Journal`: a torn line left by a crash is ended before the
next append and reported (file, line) by :func:`read`, never glued to a later decision.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from maple_data.durable import Journal, read_journal, report
from maple_data.faults import Fault
from maple_data.rmt import parse_rmt

DECISIONS = "decisions.jsonl"
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


def append(path: str | Path, decisions: Iterable[Decision]) -> None:
    """Append decisions; durable when this returns (then they are safe to acknowledge)."""
    with Journal(path) as handle:
        handle.append(asdict(d) for d in decisions)


def read(path: str | Path, faults: list[Fault] | None = None) -> list[Decision]:
    """All valid decisions in file order (a missing file is an empty journal). A line that
    is not a decision (not JSON, a torn line, a field of the wrong type, an unknown verdict,
    a tag outside the 7) is skipped and reported with its line number: in ``faults`` when
    given, else as a logged warning."""
    found = []
    for number, raw in read_journal(path, faults):
        try:
            found.append(Decision(**raw))
        except (TypeError, ValueError) as exc:
            report(Fault(str(path), number, None, f"not a decision ({exc})"), faults)
    return found


def latest_by_reviewer(decisions: Iterable[Decision]) -> dict[tuple[str, str], Decision]:
    """``(item, reviewer) -> decision``: the last one each reviewer made on each item."""
    return {(d.item, d.reviewer): d for d in decisions}


def latest_by_item(decisions: Iterable[Decision]) -> dict[str, Decision]:
    """``item -> decision``: the most recent decision on each item, any reviewer (file
    order breaks ties of equal time)."""
    ordered = sorted(enumerate(decisions), key=lambda pair: (pair[1].time, pair[0]))
    return {d.item: d for _, d in ordered}
