"""RMT-tagged Arrow shards: an atomic, rotating writer and a filtering reader.

A shard folder holds ``<prefix>-<NNNNN>.arrow`` files (Arrow IPC streams, the format
``datasets`` caches use, so ``datasets.load_dataset(folder)`` and
``datasets.Dataset.from_file(path)`` read them with typed features) and, beside each,
a hidden stats sidecar ``.<prefix>-<NNNNN>.stats.json`` (rows per RMT, task and split,
the data file's size and SHA-256). Hidden files are ignored by ``datasets``.

Crash safety: a shard is written to a hidden ``.partial`` file, flushed and fsynced,
its sidecar is written the same way, and only then is it renamed into place, so a
reader never sees a half-written shard, also after ``kill -9``. Records still buffered
in an unfinished shard are lost on a crash; :meth:`ShardWriter.done_ids` tells a
resumed job which ids are already safely stored so it redoes only the rest.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from maple_data.durable import PARTIAL as PARTIAL_SUFFIX, fsync_dir, write_atomic
from maple_data.errors import MapleError
from maple_data.rmt import parse_rmt
from maple_data.schema import METADATA_NAME_KEY, RecordSchema, load_schema, schema_version_of

COUNTED_FIELDS = ("rmt", "task", "split", "available_modalities")  # per-value counts in the sidecar
SHARD_SUFFIX = ".arrow"
_SHARD_RE = re.compile(r"^(?P<prefix>.+)-(?P<index>\d{5})\.arrow$")


class ShardError(MapleError):
    """A shard that cannot be read or does not match the schema."""


class RecordError(MapleError, ValueError):
    """A record that breaks the schema; ``problems`` lists each field."""

    def __init__(self, record_id: Any, problems: list[Any]) -> None:
        self.record_id, self.problems = record_id, problems
        super().__init__(f"record {record_id!r}: " + "; ".join(map(str, problems)))


def stats_path(shard: Path) -> Path:
    """Hidden sidecar of a shard: ``.<stem>.stats.json`` next to it."""
    return shard.with_name(f".{shard.stem}.stats.json")


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def list_shards(folder: str | Path, prefix: str | None = None) -> list[Path]:
    """Complete shards in ``folder`` (not recursive), sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        match = _SHARD_RE.match(path.name)
        if match and (prefix is None or match["prefix"] == prefix):
            found.append(path)
    return sorted(found)


def next_index(folder: str | Path, prefix: str) -> int:
    """The index after the last published ``<prefix>-NNNNN`` shard in ``folder`` (0 when none)."""
    existing = list_shards(folder, prefix)
    return int(_SHARD_RE.match(existing[-1].name)["index"]) + 1 if existing else 0


def remove_unfinished(folder: str | Path, prefix: str) -> None:
    """Remove the files killed writers of ``prefix`` left: unfinished shards and stats
    sidecars, and sidecars of shards never published. Only while no writer of ``prefix``
    runs in ``folder``."""
    folder = Path(folder)
    for path in folder.iterdir():
        if path.name.lstrip(".").startswith(f"{prefix}-") and PARTIAL_SUFFIX in path.name:
            path.unlink()
    for sidecar in folder.glob(f".{prefix}-*.stats.json"):
        if not (folder / (sidecar.name[1:-len(".stats.json")] + SHARD_SUFFIX)).exists():
            sidecar.unlink()


def _record_size(record: Mapping[str, Any]) -> int:
    """Approximate stored bytes of a record (media dominates)."""
    size = 0
    for value in record.values():
        if isinstance(value, (bytes, str)):
            size += len(value)
        elif isinstance(value, Mapping):
            size += _record_size(value)
        elif isinstance(value, (list, tuple)):
            size += sum(_record_size({"v": v}) for v in value) + 8
        else:
            size += 8
    return size


class _HashingFile(io.RawIOBase):
    """A binary file that hashes what is written to it (no re-read to fill the sidecar)."""

    def __init__(self, path: Path) -> None:
        self._file = path.open("wb")
        self.digest = hashlib.sha256()

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self.digest.update(data)
        return self._file.write(data)

    def flush(self) -> None:
        self._file.flush()

    def fileno(self) -> int:
        return self._file.fileno()

    def close(self) -> None:
        if not self.closed:
            super().close()  # flushes while the file is still open
            self._file.close()


class ShardWriter:
    """Stream records into rotating, atomically published shards.

    Args:
        folder: output folder (created).
        prefix: shard file prefix; ``train``/``test`` prefixes give ``datasets`` splits.
        max_rows: rotate after this many records.
        max_bytes: rotate once the records of a shard reach about this many bytes.
        batch_rows: records buffered in memory before they go to the open stream.
        batch_bytes: ... or fewer, once the buffered records reach about this many bytes
            (media records are megabytes each: small batches keep memory flat, and the
            conversion reuses the same allocations instead of first-touching new ones).
        schema: the record schema (default: current version); every record is validated.
        index: publish exactly one shard, ``<prefix>-<index>``, whatever ``max_rows`` and
            ``max_bytes`` say, and leave the folder's unfinished files alone: for one of
            several concurrent writers into a folder, each given its own index by a
            coordinator (which removes killed writers' files, :func:`remove_unfinished`).

    Use as a context manager; on exit (also on an exception) the open shard is published.
    """

    def __init__(
        self,
        folder: str | Path,
        *,
        prefix: str = "shard",
        max_rows: int = 1000,
        max_bytes: int = 256 * 1024 * 1024,
        batch_rows: int = 64,
        batch_bytes: int = 8 * 1024 * 1024,
        schema: RecordSchema | None = None,
        index: int | None = None,
    ) -> None:
        if min(max_rows, max_bytes, batch_rows, batch_bytes) < 1:
            raise ValueError("max_rows, max_bytes, batch_rows and batch_bytes must be positive")
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.prefix, self.max_rows, self.max_bytes = prefix, max_rows, max_bytes
        self.batch_rows, self.batch_bytes = batch_rows, batch_bytes
        self.schema = schema or load_schema()
        self._arrow_schema = self.schema.arrow_schema
        self._fixed = index is not None
        if not self._fixed:
            remove_unfinished(self.folder, prefix)
        self._next_index = next_index(self.folder, prefix) if index is None else index
        self._stream: pa.ipc.RecordBatchStreamWriter | None = None
        self._sink: _HashingFile | None = None
        self._arrow_sink: pa.PythonFile | None = None
        self._path: Path | None = None
        self._buffer: list[dict[str, Any]] = []
        self._rows = self._bytes = self._buffered_bytes = 0
        self._counts: dict[str, Counter[str]] = {}
        self.published: list[Path] = []

    def done_ids(self) -> set[str]:
        """Ids of records already in published shards of this prefix."""
        return ShardReader(list_shards(self.folder, self.prefix), schema=self.schema).ids()

    def write(self, record: Mapping[str, Any]) -> None:
        """Validate and append one record (storage form; missing fields become null)."""
        full = self.schema.empty_record(**record) if set(record) != set(self.schema.field_names) else dict(record)
        problems = self.schema.validate(full)
        if problems:
            raise RecordError(full.get("id"), problems)
        if self._stream is None:
            self._open()
        self._buffer.append(full)
        size = _record_size(full)
        self._rows += 1
        self._bytes += size
        self._buffered_bytes += size
        for key in COUNTED_FIELDS:
            if key in full:
                self._counts.setdefault(key, Counter())[str(full[key])] += 1
        if len(self._buffer) >= self.batch_rows or self._buffered_bytes >= self.batch_bytes:
            self._drain()
        if (self._rows >= self.max_rows or self._bytes >= self.max_bytes) and not self._fixed:
            self.flush()

    def write_many(self, records: Iterable[Mapping[str, Any]]) -> None:
        for record in records:
            self.write(record)

    def _open(self) -> None:
        if self._fixed and self.published:
            raise RuntimeError(f"a writer given index {self._next_index - 1} publishes one shard only")
        name = f"{self.prefix}-{self._next_index:05d}{SHARD_SUFFIX}"
        self._path = self.folder / name
        self._sink = _HashingFile(self.folder / f".{name}{PARTIAL_SUFFIX}")
        self._arrow_sink = pa.PythonFile(self._sink, mode="w")  # kept: collecting it would close the file
        self._stream = pa.ipc.new_stream(self._arrow_sink, self._arrow_schema)

    def _drain(self) -> None:
        if self._buffer and self._stream is not None:
            self._stream.write_table(pa.Table.from_pylist(self._buffer, schema=self._arrow_schema))
            self._buffer, self._buffered_bytes = [], 0

    def flush(self) -> Path | None:
        """Publish the open shard (if it has rows); returns its path. When publishing
        fails (a full disk), the shard is abandoned as a ``.partial`` file (removed by the
        next writer; its records were never acknowledged) and the error propagates."""
        if self._stream is None:
            return None
        assert self._sink is not None and self._path is not None
        sink, path = self._sink, self._path
        try:
            self._drain()
            self._stream.close()
            sink.flush()
            os.fsync(sink.fileno())
            digest = sink.digest.hexdigest()
            sink.close()
            partial = self.folder / f".{path.name}{PARTIAL_SUFFIX}"
            stats = {
                "schema": self.schema.name,
                "schema_version": self.schema.version,
                "rows": self._rows,
                "bytes": partial.stat().st_size,
                "sha256": digest,
                "counts": {key: dict(sorted(c.items())) for key, c in self._counts.items()},
            }
            write_atomic(stats_path(path), json.dumps(stats, indent=1))
            os.replace(partial, path)
            fsync_dir(self.folder)
            self.published.append(path)
            self._next_index += 1
            return path
        finally:
            if not sink.closed:
                sink.close()
            self._stream = self._sink = self._arrow_sink = self._path = None
            self._buffer, self._rows, self._bytes, self._buffered_bytes = [], 0, 0, 0
            self._counts = {}

    def close(self) -> None:
        self.flush()

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class ShardStats:
    """Contents of a stats sidecar."""

    path: Path
    rows: int
    bytes: int
    sha256: str
    counts: dict[str, dict[str, int]]

    @classmethod
    def load(cls, shard: Path) -> ShardStats:
        raw = json.loads(stats_path(shard).read_text(encoding="utf-8"))
        return cls(shard, int(raw["rows"]), int(raw["bytes"]), str(raw["sha256"]), raw["counts"])


def open_stream(shard: Path, schema: RecordSchema) -> pa.ipc.RecordBatchStreamReader:
    """Open a shard, checking it is an Arrow stream of a supported schema version."""
    try:
        reader = pa.ipc.open_stream(pa.memory_map(str(shard), "r"))
    except (pa.ArrowInvalid, OSError) as exc:
        raise ShardError(f"{shard}: not a readable Arrow IPC stream ({exc})") from exc
    version = schema_version_of(reader.schema)
    if version is None:
        raise ShardError(f"{shard}: no maple schema version in its metadata (not a maple shard?)")
    name = (reader.schema.metadata or {}).get(METADATA_NAME_KEY, b"").decode()
    if name and name != schema.name:
        raise ShardError(f"{shard}: holds {name} rows, expected {schema.name}")
    if version != schema.version:
        raise ShardError(f"{shard}: schema version {version}, expected {schema.version}")
    problems = schema.check_arrow_schema(reader.schema)
    if problems:
        raise ShardError(f"{shard}: " + "; ".join(map(str, problems)))
    return reader


def read_batches(shard: Path, schema: RecordSchema) -> Iterator[pa.RecordBatch]:
    """The record batches of a shard; a shard that is truncated or corrupt part-way is a
    :class:`ShardError` naming the file."""
    reader = open_stream(shard, schema)
    try:
        yield from reader
    except (pa.ArrowInvalid, OSError) as exc:
        raise ShardError(f"{shard}: corrupt or truncated Arrow stream ({exc}); delete it and re-run the step "
                         "that wrote it") from exc


def schema_of(shard: Path) -> RecordSchema:
    """The schema (kind and version) a shard declares in its metadata; the record schema
    when the shard cannot be opened (its reader will then report why)."""
    try:
        metadata = pa.ipc.open_stream(pa.memory_map(str(shard), "r")).schema.metadata or {}
    except (pa.ArrowInvalid, OSError):
        return load_schema()
    name = metadata.get(METADATA_NAME_KEY, b"maple-record").decode()
    kind = name.removeprefix("maple-")
    version = schema_version_of(pa.schema([], metadata=metadata))
    try:
        return load_schema(version or 1, kind)
    except ValueError:
        return load_schema()


class ShardReader:
    """Read records from one shard, a list of shards, or a folder of shards.

    Args:
        source: a shard file, a folder (its published shards, not recursive) or a list.
        rmt / task / split: keep only records with these values (a tag is parsed, so
            ``"av"`` means ``VA``; lists allowed).
    """

    def __init__(
        self,
        source: str | Path | Iterable[str | Path],
        *,
        rmt: str | Iterable[str] | None = None,
        task: str | Iterable[str] | None = None,
        split: str | Iterable[str] | None = None,
        schema: RecordSchema | None = None,
    ) -> None:
        if isinstance(source, (str, Path)):
            path = Path(source)
            if path.is_dir():
                self.shards = list_shards(path)
            elif path.is_file():
                self.shards = [path]
            else:
                raise FileNotFoundError(f"no shard or shard folder at {path}")
        else:
            self.shards = [Path(p) for p in source]
        self.schema = schema or load_schema()
        self.filters: dict[str, list[str]] = {}
        if rmt is not None:
            tags = [rmt] if isinstance(rmt, str) else list(rmt)
            self.filters["rmt"] = [parse_rmt(t) for t in tags]
        for key, value in (("task", task), ("split", split)):
            if value is not None:
                self.filters[key] = [value] if isinstance(value, str) else list(value)

    def batches(self, columns: list[str] | None = None) -> Iterator[pa.RecordBatch]:
        """Record batches after filtering, optionally only some columns."""
        for shard in self.shards:
            for batch in read_batches(shard, self.schema):
                mask = None
                for key, allowed in self.filters.items():
                    cond = pc.is_in(batch.column(key), value_set=pa.array(allowed, pa.string()))
                    mask = cond if mask is None else pc.and_(mask, cond)
                if mask is not None:
                    batch = batch.filter(pc.fill_null(mask, False))
                if columns is not None:
                    batch = batch.select(columns)
                if batch.num_rows:
                    yield batch

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """Records as dicts in storage form (media as ``{"bytes", "path"}``)."""
        for batch in self.batches():
            yield from batch.to_pylist()

    def ids(self) -> set[str]:
        """Ids of the (filtered) records; reads only the id column's buffers."""
        return {i for b in self.batches(["id"]) for i in b.column(0).to_pylist()}

    def stats(self) -> list[ShardStats]:
        """The sidecar of each shard."""
        return [ShardStats.load(s) for s in self.shards]

    def counts(self, by: str = "rmt") -> Counter[str]:
        """Records per value of ``by`` (rmt, task or split) from the sidecars, without
        touching media. Filters do not apply here: use ``Counter`` over iteration for that."""
        total: Counter[str] = Counter()
        for s in self.stats():
            total.update(s.counts.get(by, {}))
        return total

