"""A disk that really fills up (a tmpfs, the ``small_disk`` fixture) under `extract`,
`annotate` and `build-bench` (`train`: tests/test_train.py): one ENOSPC line naming what was
being written, exit 1; once space is freed the same command finishes with every record of
an undisturbed run, none twice."""

from __future__ import annotations

import pyarrow.parquet as pq

from maple_data.durable import read_journal
from maple_data.media.store import SHARD_PREFIX, media_schema
from maple_data.shards import list_shards, read_batches
from maple_data.workdir import WorkDir
from tests.crash import cli_command, fault_at, run
from tests.test_errors import one_error_line

HINT = "(free some space and run the same command again: finished work is kept and resumed)"


def fill_then_free(small_disk, target: str, nth: int, *args) -> str:
    """Run ``args`` with the disk filled before the ``nth`` call of ``target``; its error
    line. The space is freed afterwards."""
    filler = small_disk / "filler"
    line = one_error_line(fault_at(target, nth, "maple_data.cli", *args, fault="fill-disk",
                                   MAPLE_TEST_FILLER=str(filler)))
    filler.unlink()
    assert line.endswith(HINT), line
    return line


def test_extract(synth_corpus, small_disk):
    work = small_disk / "work"
    args = ("extract", synth_corpus / "videos", "-o", work, "--frames", "2", "--shard-rows", "5")
    line = fill_then_free(small_disk, "maple_data.shards:write_atomic", 2, *args)
    assert line.startswith(f"error: No space left on device: {work / 'extracted'}/"), line
    assert run(cli_command("maple_data.cli", *args)).returncode == 0
    ids = [v for shard in list_shards(WorkDir(work).extracted, SHARD_PREFIX)
           for batch in read_batches(shard, media_schema()) for v in batch.column("id").to_pylist()]
    assert len(ids) == len(set(ids)) == 14


def test_annotate(synth_corpus, tiny_omni, small_disk):
    work = small_disk / "work"
    videos = synth_corpus / "videos"
    args = ("annotate", videos, "--qa", videos / "qa.jsonl", "-o", work, "--model", tiny_omni, "--device", "cpu",
            "--samples", "2", "--max-new-tokens", "2", "--frames", "2", "--search", "exhaustive",
            "--allow-failures")
    results = WorkDir(work).part("results", 0, 1)
    line = fill_then_free(small_disk, "maple_data.durable:Journal.append", 40, *args)
    assert line.startswith(f"error: No space left on device: {work}/"), line
    assert run(cli_command("maple_data.cli", *args)).returncode == 0
    faults: list = []
    done = [(r["item"], r["subset"]) for _, r in read_journal(results, faults)]
    assert len(faults) <= 1 and all(f.message.startswith("not JSON") for f in faults), faults  # the cut line
    items = len((videos / "qa.jsonl").read_text().splitlines())
    assert len(done) == len(set(done)) == 7 * items  # every (item, subset) once, exhaustive search


def test_build_bench(verified_work, small_disk, tmp_path):
    undisturbed = tmp_path / "bench"
    assert run(cli_command("maple_data.cli", "build-bench", verified_work, "-o", undisturbed)).returncode == 0
    bench = small_disk / "bench"
    args = ("build-bench", verified_work, "-o", bench)
    line = fill_then_free(small_disk, "pyarrow.parquet:write_table", 3, *args)
    assert line.startswith(f"error: No space left on device: {bench}"), line
    assert not bench.exists()
    assert run(cli_command("maple_data.cli", *args)).returncode == 0
    tables = sorted(p.relative_to(undisturbed) for p in undisturbed.rglob("*.parquet"))
    assert tables == sorted(p.relative_to(bench) for p in bench.rglob("*.parquet"))
    for name in tables:
        assert pq.read_table(bench / name).equals(pq.read_table(undisturbed / name))
