"""``maple-data stats``: counts and validation of a benchmark folder or shards."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from maple_data.bench.build import NONE_OPTION
from maple_data.faults import Fault
from maple_data.inputs.validate import validate_shard
from maple_data.schema import load_schema
from maple_data.shards import SHARD_SUFFIX, ShardReader

ANSWERS_NONE = "answers None"  # a key of the conditions counter: rows whose correct answer is the None option


def tally_condition(counter: Counter, row: dict) -> None:
    """Count a row's condition (exact / superset / deficit) and, apart, whether its correct
    answer is the None option (QA+: deficit rows and a share of exact/superset rows)."""
    counter[str(row["condition"])] += 1
    if row.get("answer") == NONE_OPTION:
        counter[ANSWERS_NONE] += 1


def collect(path: str | Path) -> tuple[dict[str, Counter], dict[str, Counter], list[Fault]]:
    """``(rows per key per RMT, rows per key per condition and ANSWERS_NONE, faults)``; a key is
    ``config/split`` for Parquet files (``<config>/<split>-*.parquet``) and the shard name
    for Arrow shards. Every row is checked against the record schema."""
    path = Path(path)
    counts: dict[str, Counter] = {}
    conditions: dict[str, Counter] = {}
    faults: list[Fault] = []
    schema = load_schema()
    files = sorted(path.rglob("*.parquet")) if path.is_dir() else [path]
    if path.is_dir() and not files:
        files = sorted(p for p in path.rglob(f"*{SHARD_SUFFIX}") if not p.name.startswith("."))
    if not files:
        return counts, conditions, [Fault(str(path), None, None, "no .parquet files or shards found")]
    for file in files:
        if file.suffix == ".parquet":
            key = f"{file.parent.name}/{file.name.split('-')[0]}"
            number = 0
            try:
                problems = schema.check_arrow_schema(pq.read_schema(file))
                faults += [Fault(str(file), None, p.field, p.message) for p in problems]
                rows = (r for batch in pq.ParquetFile(file).iter_batches() for r in batch.to_pylist()) \
                    if not problems else iter(())
                for number, row in enumerate(rows, 1):
                    faults += [Fault(str(file), number, p.field, p.message) for p in schema.validate(row)]
                    counts.setdefault(key, Counter())[str(row["rmt"])] += 1
                    tally_condition(conditions.setdefault(key, Counter()), row)
            except (pa.ArrowException, OSError) as exc:
                faults.append(Fault(str(file), number + 1 if number else None, None,
                                    f"unreadable Parquet ({' '.join(str(exc).split())})"))
        else:
            key = file.stem
            faults += validate_shard(file)
            for row in ShardReader(file):
                counts.setdefault(key, Counter())[str(row["rmt"])] += 1
                tally_condition(conditions.setdefault(key, Counter()), row)
    return counts, conditions, faults
