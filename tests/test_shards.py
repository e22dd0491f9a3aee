"""Shard IO: datasets round trip, rotation, sidecars, filters, atomicity, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from datasets import Dataset, load_dataset

from maple_data.media_bytes import decode_audio, decode_image
from maple_data.rmt import TAGS
from maple_data.schema import load_schema
from maple_data.shards import RecordError, ShardReader, ShardWriter, list_shards, stats_path
from tests.conftest import make_record


def write(folder: Path, records, **kw) -> list[Path]:
    with ShardWriter(folder, **kw) as writer:
        writer.write_many(records)
    return writer.published


def test_datasets_loads_shards_with_typed_features(tmp_path):
    records = [make_record(i, TAGS[i % 7]) for i in range(10)]
    write(tmp_path, records, max_rows=4)
    declared = load_schema().features
    ds = load_dataset(str(tmp_path), split="train")
    assert ds.features == declared
    assert sorted(ds["id"]) == [r["id"] for r in records]
    first = Dataset.from_file(str(list_shards(tmp_path)[0]))
    assert first.features == declared
    row = next(r for r in ds if r["id"] == "item-0003")
    source = records[3]
    # frames decode to PIL images equal to the JPEG we stored
    assert [np.asarray(img).shape for img in row["frames"]] == [(24, 32, 3)] * 2
    assert np.array_equal(np.asarray(row["frames"][1]), decode_image(source["frames"][1]["bytes"]))
    # audio keeps its bytes: FLAC round trip is exact at 16-bit
    assert row["audio"]["bytes"] == source["audio"]["bytes"]
    samples, rate = decode_audio(row["audio"]["bytes"])
    expected = (0.2 * np.sin(np.arange(1600) * (0.05 + 0.01 * 3))).astype(np.float32)
    assert rate == 16_000
    assert np.array_equal(np.round(samples * 32768), np.round(expected * 32768))
    assert row["subtitles"] == [{"start": 0.0, "end": 1.0, "text": "cue 3"}]


def test_rotation_by_rows_and_bytes_and_sidecars(tmp_path):
    published = write(tmp_path / "rows", [make_record(i) for i in range(10)], max_rows=4)
    assert [p.name for p in published] == ["shard-00000.arrow", "shard-00001.arrow", "shard-00002.arrow"]
    assert [json.loads(stats_path(p).read_text())["rows"] for p in published] == [4, 4, 2]
    by_bytes = write(tmp_path / "bytes", [make_record(i, n_frames=4) for i in range(10)], max_bytes=6_000)
    assert len(by_bytes) >= 3
    assert sum(json.loads(stats_path(p).read_text())["rows"] for p in by_bytes) == 10


def test_reader_filters_and_counts_from_sidecars(tmp_path):
    records = [make_record(i, TAGS[i % 7], task="qa" if i % 3 else "caption", split="test" if i < 7 else "train")
               for i in range(21)]
    write(tmp_path, records, max_rows=5)
    reader = ShardReader(tmp_path)
    assert reader.counts("rmt") == {t: 3 for t in TAGS}
    assert reader.counts("task") == {"qa": 14, "caption": 7}
    assert reader.counts("split") == {"test": 7, "train": 14}
    va = list(ShardReader(tmp_path, rmt="av"))
    assert [r["id"] for r in va] == ["item-0003", "item-0010", "item-0017"]
    assert {r["id"] for r in ShardReader(tmp_path, rmt=["V", "A"], split="test")} == {"item-0000", "item-0001"}
    assert len(list(ShardReader(tmp_path, task="caption", split="train"))) == 4
    assert ShardReader(tmp_path).ids() == {r["id"] for r in records}


def test_writer_rejects_invalid_record_with_field_names(tmp_path):
    bad = make_record(1) | {"rmt": "X", "answer": "maybe"}
    with ShardWriter(tmp_path) as writer:
        with pytest.raises(RecordError, match=r"rmt: expected one of V, A, S, VA, VS, AS, VAS, got 'X'"):
            writer.write(bad)
        writer.write(make_record(2))
    assert ShardReader(tmp_path).ids() == {"item-0002"}


def test_writer_resumes_after_existing_shards(tmp_path):
    write(tmp_path, [make_record(i) for i in range(3)])
    with ShardWriter(tmp_path) as writer:
        assert writer.done_ids() == {"item-0000", "item-0001", "item-0002"}
        writer.write(make_record(3))
    assert [p.name for p in list_shards(tmp_path)] == ["shard-00000.arrow", "shard-00001.arrow"]


SLOW_WRITER = """
import sys, time
from pathlib import Path
from maple_data.shards import ShardWriter
from tests.conftest import make_record
folder, total = Path(sys.argv[1]), int(sys.argv[2])
with ShardWriter(folder, max_rows=5, batch_rows=2) as writer:
    done = writer.done_ids()
    for i in range(total):
        record = make_record(i)
        if record["id"] in done:
            continue
        writer.write(record)
        print(i, flush=True)
        time.sleep(0.02)
"""


def test_sigkill_mid_shard_leaves_only_complete_shards_and_resume_continues(tmp_path):
    folder, total = tmp_path / "shards", 40
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    proc = subprocess.Popen([sys.executable, "-c", SLOW_WRITER, str(folder), str(total)],
                            stdout=subprocess.PIPE, text=True, env=env)
    written = 0
    while written < 13:  # two shards published (10 rows), third one open with 3 rows
        line = proc.stdout.readline()
        assert line, "writer exited early"
        written = int(line) + 1
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    shards = list_shards(folder)
    assert [s.name for s in shards] == ["shard-00000.arrow", "shard-00001.arrow"]
    assert any(p.name.endswith(".partial") for p in folder.iterdir())  # the open shard, invisible
    assert len(load_dataset(str(folder), split="train")) == 10
    subprocess.run([sys.executable, "-c", SLOW_WRITER, str(folder), str(total)], check=True,
                   stdout=subprocess.DEVNULL, env=env)
    ids = [r["id"] for r in ShardReader(folder)]
    assert sorted(ids) == [f"item-{i:04d}" for i in range(total)]  # each exactly once
    assert not any(p.name.endswith(".partial") for p in folder.iterdir())
