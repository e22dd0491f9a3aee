"""The extracted media shards (``WORK/extracted/media-NNNNN.arrow``, ``schemas/media-v1.yaml``):
their schema, the newest row of each video, compaction and loading. Reading them needs no
media decoder (annotation, review and `build-bench` run where PyAV is not installed)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa

from maple_data.schema import RecordSchema, load_schema
from maple_data.shards import ShardStats, ShardWriter, list_shards, read_batches, stats_path
from maple_data.workdir import WorkDir

SHARD_PREFIX = "media"


def media_schema() -> RecordSchema:
    return load_schema(1, "media")


def newest_rows(out_dir: Path, wanted: set[str] | None = None) -> tuple[list[Path], dict[str, tuple[int, int]]]:
    """The media shards and ``video id -> (shard index, row index)`` of each video's newest
    row (a later shard, then a later row, wins); reads only the id column."""
    schema = media_schema()
    shards = list_shards(out_dir, SHARD_PREFIX)
    newest: dict[str, tuple[int, int]] = {}
    for s_index, shard in enumerate(shards):
        for r_index, vid in enumerate(v for b in read_batches(shard, schema) for v in b.column("id").to_pylist()):
            if wanted is None or vid in wanted:
                newest[vid] = (s_index, r_index)
    return shards, newest


def compact(out_dir: Path) -> int:
    """Drop rows superseded by a newer row of the same video (a re-extraction); returns
    how many rows were dropped. Each affected shard is rewritten as a new shard, then the
    old one is removed; a crash in between leaves duplicates that the next run drops.
    Shards without a stale row are not read beyond their ids."""
    schema = media_schema()
    shards, newest = newest_rows(out_dir)
    kept = Counter(s for s, _ in newest.values())
    dropped = 0
    for s_index, shard in enumerate(shards):
        if kept[s_index] == ShardStats.load(shard).rows:
            continue  # no stale row: leave the shard unread
        table = pa.Table.from_batches(list(read_batches(shard, schema)), schema=schema.arrow_schema)
        keep = [newest[vid] == (s_index, r) for r, vid in enumerate(table.column("id").to_pylist())]
        with ShardWriter(out_dir, prefix=SHARD_PREFIX, max_rows=max(1, len(keep)), schema=schema) as writer:
            writer.write_many(table.filter(pa.array(keep)).to_pylist())
        shard.unlink()
        stats_path(shard).unlink(missing_ok=True)
        dropped += keep.count(False)
    return dropped


def load_media(work_dir: str | Path) -> dict[str, dict[str, Any]]:
    """``video id -> media row`` of an extraction (the newest row of each video)."""
    out_dir = WorkDir(work_dir).extracted
    rows: dict[str, dict[str, Any]] = {}
    schema = media_schema()
    for shard in list_shards(out_dir, SHARD_PREFIX):
        for batch in read_batches(shard, schema):
            for row in batch.to_pylist():
                rows[row["id"]] = row
    return rows
