"""The work folder (``WORK``, the ``-o`` of ``extract`` / ``annotate``): the one module that
names its files and reads and writes them.

::

    WORK/
      extracted/                  media shards (media-*.arrow + stats sidecars), by `extract`
        settings.json             the latest extraction's settings (what `annotate` reuses)
        journal.jsonl             one line per video outcome (done / failed), appended
      ablation/                   by `annotate`
        settings.json             model, scoring and proposal settings of the stored results
        items-SSS-of-NNN.jsonl    the items process SSS of NNN annotated (with available modalities)
        results-SSS-of-NNN.jsonl  one line per finished (item, subset), appended and fsynced
      proposals.jsonl             one proposal per item, sorted by id (by `annotate` / `propose`)
      decisions.jsonl             the review decision journal (by `review`, Label Studio import)
      labelstudio/                Label Studio export: tasks.json, labeling_config.xml

``SSS-of-NNN`` is ``--shard-index`` of ``--num-shards``: processes never share a file.
Formats of the records themselves live with their types (:mod:`maple_data.decisions`,
the media schema); every path, and every reader and writer of a work file, is here.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from maple_data.decisions import Decision
from maple_data.durable import Journal, folder_lock, read_journal, report, write_atomic
from maple_data.faults import Fault

EXTRACTED = "extracted"
ABLATION = "ablation"
LABELSTUDIO = "labelstudio"
SETTINGS = "settings.json"
EXTRACT_JOURNAL = "journal.jsonl"
PROPOSALS = "proposals.jsonl"
DECISIONS = "decisions.jsonl"
LABELSTUDIO_TASKS = "tasks.json"
LABELSTUDIO_CONFIG = "labeling_config.xml"
PART_KINDS = ("items", "results")  # the per-process files of ablation/
NAMES = frozenset({EXTRACTED, ABLATION, LABELSTUDIO, SETTINGS, EXTRACT_JOURNAL, PROPOSALS, DECISIONS,
                   LABELSTUDIO_TASKS, LABELSTUDIO_CONFIG})


class WorkDir:
    """Paths of one work folder; nothing is created until a writer runs."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"WorkDir({str(self.root)!r})"

    def lock(self, shard_index: int = 0, num_shards: int = 1, *, wait: bool = False):
        """Hold the folder for one writer (:func:`~maple_data.durable.folder_lock`; ``wait``:
        wait for another holder instead of failing); a process of a sharded run
        (``num_shards`` > 1) holds its shard only, so its siblings run beside it."""
        if num_shards == 1:
            return folder_lock(self.root, wait=wait)
        return folder_lock(self.root, self.root / f".maple-shard-{shard_index}-of-{num_shards}.lock", wait=wait)

    # ------------------------------------------------------------ extraction
    @property
    def extracted(self) -> Path:
        return self.root / EXTRACTED

    @property
    def extract_settings(self) -> Path:
        return self.extracted / SETTINGS

    @property
    def extract_journal(self) -> Path:
        return self.extracted / EXTRACT_JOURNAL

    # ------------------------------------------------------------ ablation
    @property
    def ablation(self) -> Path:
        return self.root / ABLATION

    @property
    def ablation_settings(self) -> Path:
        return self.ablation / SETTINGS

    def part(self, kind: str, shard_index: int, num_shards: int) -> Path:
        """``ablation/<kind>-SSS-of-NNN.jsonl`` of one annotate process (``kind``: items | results)."""
        if kind not in PART_KINDS:
            raise ValueError(f"kind must be one of {PART_KINDS}, got {kind!r}")
        return self.ablation / f"{kind}-{shard_index:03d}-of-{num_shards:03d}.jsonl"

    def parts(self, kind: str) -> list[Path]:
        """Every process's ``<kind>`` file, sorted (what ``propose`` merges)."""
        return sorted(self.ablation.glob(f"{kind}-*.jsonl"))

    def write_ablation_settings(self, settings: Mapping[str, Any]) -> None:
        write_atomic(self.ablation_settings, json.dumps(settings, indent=1))

    def read_ablation_settings(self) -> dict[str, Any]:
        """The stored annotate settings; a clear error before the first ``annotate``."""
        if not self.ablation_settings.exists():
            raise FileNotFoundError(f"no ablation results in {self.ablation}: run maple-data annotate first")
        return json.loads(self.ablation_settings.read_text(encoding="utf-8"))

    def write_items(self, shard_index: int, num_shards: int, entries: Iterable[Mapping[str, Any]]) -> None:
        write_atomic(self.part("items", shard_index, num_shards),
                     "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in entries))

    def read_items(self) -> dict[str, dict[str, Any]]:
        """``item id -> entry`` over every process's items file (a later file wins)."""
        return {entry["id"]: entry for path in self.parts("items") for entry in Journal.read(path)}

    def results_journal(self, shard_index: int, num_shards: int) -> Journal:
        """The append-only results file of one annotate process."""
        return Journal(self.part("results", shard_index, num_shards))

    def read_results(self) -> list[dict[str, Any]]:
        """Every stored (item, subset) result line of every process, in file order."""
        return [entry for path in self.parts("results") for entry in Journal.read(path)]

    # ------------------------------------------------------------ proposals
    @property
    def proposals(self) -> Path:
        return self.root / PROPOSALS

    def write_proposals(self, entries: Iterable[Mapping[str, Any]]) -> Path:
        """Replace ``proposals.jsonl`` atomically; returns its path."""
        write_atomic(self.proposals, "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in entries))
        return self.proposals

    def read_proposals(self) -> list[dict[str, Any]]:
        """The entries of ``proposals.jsonl`` (one per item, sorted by id)."""
        if not self.proposals.exists():
            raise FileNotFoundError(f"{self.proposals} not found: run maple-data annotate (or propose) first")
        return Journal.read(self.proposals)

    # ------------------------------------------------------------ review
    @property
    def decisions(self) -> Path:
        return self.root / DECISIONS

    def append_decisions(self, decisions: Iterable[Decision]) -> None:
        """Append decisions; durable when this returns (then they are safe to acknowledge)."""
        with Journal(self.decisions) as handle:
            handle.append(asdict(d) for d in decisions)

    def read_decisions(self, faults: list[Fault] | None = None) -> list[Decision]:
        """All valid decisions in file order (no file: none). A line that is not a decision
        (not JSON, torn, a wrong field type, an unknown verdict or tag) is skipped and
        reported with its line number: in ``faults`` when given, else as a logged warning."""
        found = []
        for number, raw in read_journal(self.decisions, faults):
            try:
                found.append(Decision(**raw))
            except (TypeError, ValueError) as exc:
                report(Fault(str(self.decisions), number, None, f"not a decision ({exc})"), faults)
        return found

    @property
    def labelstudio(self) -> Path:
        return self.root / LABELSTUDIO
