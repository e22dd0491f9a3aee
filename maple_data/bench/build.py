"""``maple-data build-bench``: a balanced, leak-free, Hub-ready benchmark folder.

Inputs (a work folder): extracted media, ``proposals.jsonl`` and ``decisions.jsonl``.
Output: ``BENCH/<config>/<split>-00000-of-00001.parquet`` (records of
``schemas/record-v1.yaml``, media embedded, features in the Parquet metadata) and a
``README.md`` dataset card whose YAML declares every config and split, so
``datasets.load_dataset(BENCH, config)`` works offline with typed features.

Rules:
- Items: human-verified ones (last decision accept or override; ``rmt_source``
  verified); with ``include_proposed`` also unreviewed proposals (``proposed``); items
  judged unanswerable or rejected never enter.
- Splits by video (a video's items share a split), stratified by RMT: videos are taken
  in a seeded order and each goes to the split whose per-RMT quota it helps most.
- Balance: the test split is downsampled (seeded) to the same count per RMT; train keeps
  its natural mix unless ``balance_train``.
- Configs: ``qa_exact`` (input = the RMT's modalities), ``qa_all_combinations`` (every
  subset of the available modalities, labelled exact / superset / deficit), ``qa_plus``
  (as all_combinations with a "None" option: deficit rows answer None, exactly
  ``none_share`` (rounded) of exact/superset rows, chosen by seed, have their correct
  option replaced by None;
  every row shows as many options as the item has, one wrong option making room for
  None where the correct one does not, so the option count never gives the answer
  away), ``caption`` (caption items, all available modalities).
- A row carries only its input modalities' media. Rows are sorted by id, so the same
  inputs and seed give byte-identical files.
- The folder is built under a hidden ``.<name>.partial`` sibling and swapped into place
  when complete (:func:`maple_data.durable.atomic_folder`): a reader, or a kill at any
  moment, sees the previous benchmark or the new one, never a mix.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from maple_data import decisions as journal
from maple_data.bench.card import write_card
from maple_data.durable import atomic_folder, folder_lock
from maple_data.errors import FolderTaken
from maple_data.faults import Fault
from maple_data.media.store import load_media
from maple_data.rmt import TAGS, condition, modalities, subsets
from maple_data.schema import load_schema
from maple_data.settings import setting
from maple_data.workdir import WorkDir

SPLITS = ("train", "validation", "test")
CONFIGS = ("qa_exact", "qa_all_combinations", "qa_plus", "caption")
NONE_OPTION = "None"


@dataclass(frozen=True)
class BenchSettings:
    """How ``build-bench`` splits, balances and describes a benchmark."""

    ratios: tuple[float, float, float] = setting((0.8, 0.1, 0.1), help="train,validation,test shares, split by "
                                                                       "video.")
    seed: int = setting(0, help="Seed of splits, balancing and QA+ choices.")
    include_proposed: bool = setting(False, help="Also admit unreviewed proposals (rmt_source proposed).")
    balance_train: bool = setting(False, help="Balance train too (equal count per RMT), not only test.")
    none_share: float = setting(0.25, help="QA+: share of exact/superset rows whose correct option becomes None.")
    name: str = setting("maple-bench", help="Dataset name in the card.")
    license: str = setting("cc-by-4.0", help="License id for the card.")
    citation: str = setting("", help="BibTeX for the card.")

    def __post_init__(self) -> None:
        if len(self.ratios) != 3 or any(r < 0 for r in self.ratios) or not sum(self.ratios) > 0:
            raise ValueError(f"ratios must be three non-negative numbers, got {self.ratios}")
        if not 0 <= self.none_share <= 1:
            raise ValueError(f"none_share must be in [0, 1], got {self.none_share}")


@dataclass
class BenchReport:
    out: Path
    counts: dict[str, Counter] = field(default_factory=dict)  # config/split -> rmt -> rows
    dropped: Counter = field(default_factory=Counter)  # test balancing: rmt -> items dropped
    missing_in_test: list[str] = field(default_factory=list)  # tags with no qa_exact test row
    excluded: Counter = field(default_factory=Counter)  # why items stayed out
    faults: list[Fault] = field(default_factory=list)  # bad journal lines, decisions for unknown items


def _draw(*parts: Any) -> float:
    """A seeded uniform number in [0, 1) from the parts (stable across runs and machines)."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2 ** 64


def select_items(proposals: list[dict[str, Any]], decided: Mapping[str, journal.Decision],
                 include_proposed: bool, excluded: Counter) -> list[dict[str, Any]]:
    """Items that enter, each with ``rmt``, ``rmt_source`` and ``review`` set."""
    chosen = []
    for item in proposals:
        decision = decided.get(item["id"])
        if decision is not None and decision.verdict in journal.VERIFIED:
            review = {"reviewer": decision.reviewer, "verdict": decision.verdict, "time": decision.time,
                      "note": decision.note}
            chosen.append({**item, "rmt": decision.rmt, "rmt_source": "verified", "review": review})
        elif decision is not None:
            excluded[f"review: {decision.verdict}"] += 1
        elif include_proposed and item["status"] == "proposed":
            chosen.append({**item, "rmt_source": "proposed", "review": None})
        else:
            excluded["not reviewed" if item["status"] == "proposed" else f"proposal: {item['status']}"] += 1
    return chosen


def assign_splits(items: list[dict[str, Any]], ratios: tuple[float, float, float], seed: int) -> dict[str, str]:
    """``video id -> split``: videos in seeded order, each to the split with the largest
    unmet quota for its items' tags (quota = ratio x items of that tag), ties broken by the
    split's overall unmet quota (so tags with one item each still fill every split)."""
    per_video: dict[str, Counter] = {}
    for item in items:
        per_video.setdefault(item["video_id"], Counter())[item["rmt"]] += 1
    totals = Counter(item["rmt"] for item in items)
    share = [r / sum(ratios) for r in ratios]
    filled = {split: Counter() for split in SPLITS}
    total = sum(totals.values())
    assignment = {}
    for video in sorted(per_video, key=lambda v: _draw(seed, "split", v)):
        tags = per_video[video]

        def need(k: int) -> tuple[float, float, int]:
            """Unmet quota of this video's tags, then of the whole split (ties: earlier split)."""
            split = SPLITS[k]
            by_tag = sum(n * (share[k] * totals[t] - filled[split][t]) / max(totals[t], 1) for t, n in tags.items())
            return by_tag, share[k] * total - sum(filled[split].values()), -k

        best = max((k for k in range(3) if share[k] > 0), key=need)
        assignment[video] = SPLITS[best]
        filled[SPLITS[best]].update(tags)
    return assignment


def balance(items: list[dict[str, Any]], seed: int, dropped: Counter) -> list[dict[str, Any]]:
    """The same number of items per RMT (the smallest tag's count), seeded choice."""
    by_tag: dict[str, list[dict[str, Any]]] = {}
    for item in items:
        by_tag.setdefault(item["rmt"], []).append(item)
    if not by_tag:
        return []
    keep = min(len(v) for v in by_tag.values())
    out = []
    for tag, group in by_tag.items():
        group = sorted(group, key=lambda it: _draw(seed, "balance", it["id"]))
        out += group[:keep]
        dropped[tag] += len(group) - keep
    return out


def _restricted(media: Mapping[str, Any], given: str) -> dict[str, Any]:
    """Media fields of a record holding only the ``given`` modalities."""
    wanted = modalities(given)
    video = "V" in wanted
    meta = media["video_meta"]
    return {
        "frames": media["frames"] if video else None,
        "frame_timestamps": media["frame_timestamps"] if video else None,
        "audio": media["audio"] if "A" in wanted else None,
        "subtitles": media["subtitles"] if "S" in wanted else None,
        "subtitle_source": media["subtitle_source"] if "S" in wanted else None,
        "video_meta": {k: meta[k] for k in ("duration", "fps", "width", "height")},
    }


def _record(item: Mapping[str, Any], media: Mapping[str, Any], split: str, given: str, **override: Any
            ) -> dict[str, Any]:
    record = {
        "id": item["id"], "video_id": item["video_id"], "video_path": media["video_path"],
        "video_sha256": media["video_sha256"], "task": item["task"], "question": item["question"],
        "options": list(item["options"]) if item["options"] is not None else None, "answer": item["answer"],
        "rmt": item["rmt"], "rmt_source": item["rmt_source"],
        "available_modalities": media["available_modalities"], "input_modalities": given,
        "condition": condition(item["rmt"], given).value if item["rmt"] else None, "split": split,
        "ablation": item.get("ablation"), "review": item.get("review"), **_restricted(media, given),
    }
    record.update(override)
    return record


def none_replaced(rows: list[dict[str, Any]], seed: int, none_share: float) -> set[str]:
    """Ids of the exact/superset rows whose correct option becomes None: the
    ``round(none_share * n)`` rows that come first in a seeded order (an exact share)."""
    candidates = sorted((r["id"] for r in rows if r["condition"] != "deficit"), key=lambda i: _draw(seed, "none", i))
    return set(candidates[:round(none_share * len(candidates))])


def qa_plus_row(record: dict[str, Any], seed: int, replace_correct: bool) -> dict[str, Any]:
    """The QA+ version of a qa row (see the module docstring)."""
    options, answer = list(record["options"]), record["answer"]
    wrong = [o for o in options if o != answer]
    if replace_correct or not wrong:
        gone = answer
    else:
        gone = wrong[int(_draw(seed, "drop", record["id"]) * len(wrong))]
    new_options = [o for o in options if o != gone] + [NONE_OPTION]
    new_answer = NONE_OPTION if replace_correct or record["condition"] == "deficit" else answer
    return {**record, "options": new_options, "answer": new_answer}


def config_rows(config: str, items: list[dict[str, Any]], media: Mapping[str, Mapping[str, Any]],
                splits: Mapping[str, str], seed: int, none_share: float) -> list[dict[str, Any]]:
    rows = []
    for item in items:
        m = media[item["video_id"]]
        split = splits[item["video_id"]]
        if config == "caption":
            if item["task"] == "caption":
                rows.append(_record(item, m, split, m["available_modalities"]))
            continue
        if item["task"] != "qa":
            continue
        if config == "qa_exact":
            rows.append(_record(item, m, split, item["rmt"]))
            continue
        for given in subsets(m["available_modalities"]):
            rows.append(_record(item, m, split, given, id=f"{item['id']}@{given}"))
    if config == "qa_plus":
        replaced = none_replaced(rows, seed, none_share)
        rows = [qa_plus_row(r, seed, r["id"] in replaced) for r in rows]
    return sorted(rows, key=lambda r: r["id"])


def build_bench(work_dir: str | Path, out_dir: str | Path, settings: BenchSettings = BenchSettings(),
                overwrite: bool = True) -> BenchReport:
    """Build the benchmark of ``work_dir`` into ``out_dir`` (replaced whole, atomically; a
    benchmark already there only with ``overwrite``), holding it for one writer (through a
    sibling lock file: the folder itself is swapped)."""
    out = Path(out_dir)
    with folder_lock(out, out.parent / f".{out.name}.maple.lock"):
        return _build(Path(work_dir), out, settings, overwrite)


def _build(work: Path, out: Path, settings: BenchSettings, overwrite: bool) -> BenchReport:
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "README.md").exists())):
        raise FolderTaken(f"{out} exists and is not a benchmark folder (no README.md): choose another --out; "
                          "build-bench replaces the whole folder")
    if (out / "README.md").exists() and not overwrite:
        raise FolderTaken(f"{out} holds a benchmark: pass --overwrite to rebuild it (the folder is replaced whole), "
                          "or choose another --out")
    proposals = WorkDir(work).read_proposals()
    report = BenchReport(out)
    journal_path = WorkDir(work).decisions
    known = {p["id"] for p in proposals}
    decisions = []
    for decision in WorkDir(work).read_decisions(report.faults):
        if decision.item in known:
            decisions.append(decision)
        else:
            report.faults.append(Fault(str(journal_path), None, "item",
                                       f"decision for unknown item {decision.item!r} skipped"))
    decided = journal.latest_by_item(decisions)
    items = select_items(proposals, decided, settings.include_proposed, report.excluded)
    media = load_media(work)
    missing = [it for it in items if it["video_id"] not in media]
    report.excluded["no extracted media"] += len(missing)
    items = [it for it in items if it["video_id"] in media]
    splits = assign_splits(items, settings.ratios, settings.seed)
    by_split = {s: [it for it in items if splits[it["video_id"]] == s] for s in SPLITS}
    by_split["test"] = balance(by_split["test"], settings.seed, report.dropped)
    if settings.balance_train:
        by_split["train"] = balance(by_split["train"], settings.seed, Counter())
    kept = [it for s in SPLITS for it in by_split[s]]
    if not kept:
        why = ", ".join(f"{why}: {n}" for why, n in sorted(report.excluded.items()) if n) or "no items"
        raise ValueError(f"nothing to build: no item qualifies ({why}); review items first (maple-data review) "
                         "or pass --include-proposed")
    schema = load_schema()
    with atomic_folder(out) as tmp:
        for config in CONFIGS:
            rows = config_rows(config, kept, media, splits, settings.seed, settings.none_share)
            for split in SPLITS:
                part = [r for r in rows if r["split"] == split]
                if not part:
                    continue
                for row in part:
                    problems = schema.validate(row)
                    if problems:
                        raise ValueError(f"{config}/{split} row {row['id']}: {problems[0]}")
                path = tmp / config / f"{split}-00000-of-00001.parquet"
                path.parent.mkdir(parents=True, exist_ok=True)
                table = pa.Table.from_pylist(part, schema=schema.arrow_schema)
                pq.write_table(table, path, compression="zstd", write_statistics=False)
                report.counts[f"{config}/{split}"] = Counter(r["rmt"] for r in part)
        report.missing_in_test = [t for t in TAGS if not report.counts.get("qa_exact/test", {}).get(t)]
        write_card(tmp, report, settings, work)
    return report
