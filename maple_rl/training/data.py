"""Training and evaluation items from a benchmark folder (Parquet, one config) or record
shards, as plain dicts in storage form (media stay encoded until a prompt is built)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from maple_data.shards import SHARD_SUFFIX, ShardReader
from maple_rl.errors import DataError, MissingFile

COLUMNS = ("id", "video_id", "task", "question", "options", "answer", "rmt", "available_modalities",
           "input_modalities", "condition", "frames", "frame_timestamps", "audio", "subtitles")


def load_items(path: str | Path, config: str = "auto", split: str = "train", task: str | None = "qa"
               ) -> list[dict[str, Any]]:
    """Records of ``split`` (and ``task``) sorted by id. ``path``: a benchmark folder (its
    ``<config>/<split>-*.parquet``), a shard folder or one shard file.

    ``config="auto"`` (training): one row per item holding every available modality, so
    the trainer can give a sample its RMT's modalities or all of them: the full-input rows
    of ``qa_all_combinations`` for qa items (ids without the ``@subset`` suffix), the
    ``caption`` config for caption items."""
    path = Path(path)
    if config == "auto":
        config = "caption" if task == "caption" else "qa_all_combinations"
        rows = load_items(path, config, split, task)
        full = [dict(r, id=r["id"].split("@")[0]) for r in rows
                if r["input_modalities"] in (None, r["available_modalities"])]
        return sorted(full, key=lambda r: r["id"])
    files = sorted((path / config).glob(f"{split}-*.parquet")) if path.is_dir() else []
    if files:
        rows = [r for f in files for r in pq.read_table(f, columns=list(COLUMNS)).to_pylist()]
    elif path.is_file() or (path.is_dir() and any(path.glob(f"*{SHARD_SUFFIX}"))):
        rows = [{k: r[k] for k in COLUMNS} for r in ShardReader(path, split=split if path.is_dir() else None)]
    else:
        raise MissingFile(f"no {config}/{split}-*.parquet and no *{SHARD_SUFFIX} shards under {path}")
    rows = [r for r in rows if task is None or r["task"] == task]
    if not rows:
        raise DataError(f"{path}: no {task or ''} items in split {split!r}")
    missing = [r["id"] for r in rows if r["rmt"] is None]
    if missing:
        raise DataError(f"{path}: items without an RMT (first: {missing[0]}); train on verified benchmarks")
    return sorted(rows, key=lambda r: r["id"])


def media_of(record: dict[str, Any]) -> dict[str, Any]:
    """The media-row view of a record that :func:`maple_data.models.prompts.build_prompt` reads."""
    return {k: record.get(k) for k in ("frames", "frame_timestamps", "audio", "subtitles")}
