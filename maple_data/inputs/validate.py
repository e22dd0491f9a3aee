"""Check shards and QA input files; every fault names file, row and field."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa

from maple_data.faults import Fault
from maple_data.inputs.qa import read_qa_file
from maple_data.schema import RecordSchema
from maple_data.shards import SHARD_SUFFIX, ShardError, ShardStats, file_sha256, open_stream, schema_of, stats_path

QA_SUFFIXES = (".jsonl", ".csv")


def _rows(shard: Path, schema: RecordSchema, faults: list[Fault]) -> Iterator[dict]:
    """Rows of a shard; a stream that breaks off becomes a fault at the row it stopped."""
    row = 0
    reader = open_stream(shard, schema)
    while True:
        try:
            batch = reader.read_next_batch()
        except StopIteration:
            return
        except (pa.ArrowInvalid, OSError) as exc:
            faults.append(Fault(str(shard), row + 1, None, f"stream breaks off after {row} rows ({exc})"))
            return
        for record in batch.to_pylist():
            row += 1
            yield record


def validate_shard(shard: str | Path, schema: RecordSchema | None = None,
                   seen_ids: dict[str, str] | None = None) -> list[Fault]:
    """All faults of one shard: sidecar agreement, Arrow schema, and every record
    (against ``schema``, by default the kind and version the shard declares)."""
    shard = Path(shard)
    schema = schema or schema_of(shard)
    name, faults = str(shard), []
    stats: ShardStats | None = None
    if not stats_path(shard).exists():
        faults.append(Fault(name, None, None, f"stats sidecar {stats_path(shard).name} is missing"))
    else:
        try:
            stats = ShardStats.load(shard)
        except (ValueError, KeyError, TypeError) as exc:
            faults.append(Fault(name, None, None, f"stats sidecar is unreadable ({exc})"))
    if stats is not None and (shard.stat().st_size != stats.bytes or file_sha256(shard) != stats.sha256):
        faults.append(Fault(name, None, None, "file content does not match the SHA-256 in its stats sidecar "
                            "(corrupted or modified after it was written)"))
    try:
        rows = 0
        seen = {} if seen_ids is None else seen_ids
        for rows, record in enumerate(_rows(shard, schema, faults), start=1):
            for problem in schema.validate(record):
                faults.append(Fault(name, rows, problem.field, problem.message))
            rid = record.get("id")
            if isinstance(rid, str):
                if rid in seen:
                    faults.append(Fault(name, rows, "id", f"duplicate id {rid!r} (also in {seen[rid]})"))
                seen[rid] = f"{shard.name} row {rows}"
        if stats is not None and rows != stats.rows:
            faults.append(Fault(name, None, None, f"{rows} rows, but its stats sidecar says {stats.rows}"))
    except ShardError as exc:
        faults.append(Fault(name, None, None, str(exc).removeprefix(f"{shard}: ")))
    return faults


def validate_path(path: str | Path, videos_dir: str | Path | None = None) -> tuple[int, list[Fault]]:
    """Validate a shard, a folder of shards (recursively) or a QA file.

    Returns ``(items checked, faults)``; for a QA file, ``videos_dir`` defaults to the
    file's own folder.
    """
    path = Path(path)
    if not path.exists():
        return 0, [Fault(str(path), None, None, "no such file or folder")]
    if path.is_file() and path.suffix.lower() in QA_SUFFIXES:
        load = read_qa_file(path, videos_dir if videos_dir is not None else path.parent)
        return len(load.items), load.problems
    shards = sorted(path.rglob(f"*{SHARD_SUFFIX}")) if path.is_dir() else [path]
    shards = [s for s in shards if not s.name.startswith(".")]
    if not shards:
        return 0, [Fault(str(path), None, None, f"no *{SHARD_SUFFIX} shards and not a QA file "
                         f"({', '.join(QA_SUFFIXES)})")]
    faults: list[Fault] = []
    seen: dict[str, dict[str, str]] = {}  # ids per schema kind
    for shard in shards:
        if shard.suffix != SHARD_SUFFIX:
            faults.append(Fault(str(shard), None, None, f"not a shard (*{SHARD_SUFFIX}) nor a QA file"))
            continue
        schema = schema_of(shard)
        faults += validate_shard(shard, schema, seen.setdefault(schema.name, {}))
    return sum(map(len, seen.values())), faults
