"""The human review decision journal: ``WORK/decisions.jsonl``.

One JSON object per line, appended and fsynced before a decision is acknowledged:

``{"item": id, "reviewer": name, "verdict": accept|override|unanswerable|reject,
"rmt": tag or null, "proposed": tag or null, "time": ISO-8601 UTC, "note": text or null,
"bulk": bool}``

``rmt`` is the verified tag (the proposal for ``accept``, the reviewer's tag for
``override``, null otherwise). The last decision per (item, reviewer) wins; across
reviewers, the most recent decision decides the item (:func:`latest_by_item`). A torn
last line (a crash mid-write) is ignored.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from maple_data.faults import Fault
from maple_data.rmt import parse_rmt

DECISIONS = "decisions.jsonl"
VERDICTS = ("accept", "override", "unanswerable", "reject")
VERIFIED = ("accept", "override")  # verdicts that give an item its RMT


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
    """Append decisions and fsync before returning (then they are safe to acknowledge)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle:
        for decision in decisions:
            handle.write(json.dumps(asdict(decision), ensure_ascii=False) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def read(path: str | Path, faults: list[Fault] | None = None) -> list[Decision]:
    """All valid decisions in file order (a missing file is an empty journal). A line that
    is not a decision (not JSON, unknown verdict, a tag outside the 7) is skipped and, when
    ``faults`` is given, reported there with its line number; a torn last line (a crash
    mid-write) is skipped silently."""
    path = Path(path)
    if not path.exists():
        return []
    out = []
    lines = path.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
            if not isinstance(raw, dict):
                raise ValueError("not a JSON object")
            out.append(Decision(**raw))
        except json.JSONDecodeError as exc:
            if number < len(lines) and faults is not None:
                faults.append(Fault(str(path), number, None, f"not JSON ({exc.msg})"))
        except (TypeError, ValueError) as exc:
            if faults is not None:
                faults.append(Fault(str(path), number, None, f"not a decision ({exc})"))
    return out


def latest_by_reviewer(decisions: Iterable[Decision]) -> dict[tuple[str, str], Decision]:
    """``(item, reviewer) -> decision``: the last one each reviewer made on each item."""
    return {(d.item, d.reviewer): d for d in decisions}


def latest_by_item(decisions: Iterable[Decision]) -> dict[str, Decision]:
    """``item -> decision``: the most recent decision on each item, any reviewer (file
    order breaks ties of equal time)."""
    ordered = sorted(enumerate(decisions), key=lambda pair: (pair[1].time, pair[0]))
    return {d.item: d for _, d in ordered}
