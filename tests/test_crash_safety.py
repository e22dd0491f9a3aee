"""Nothing acknowledged is lost: build-bench killed at every file (readers see the old
benchmark or the new one), journals with a torn last line (the next record is kept, the
fragment reported), and the crash-safe write primitives."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from maple_data import decisions as journal
from maple_data.bench.build import BenchSettings, build_bench
from maple_data.bench.stats import collect
from maple_data.durable import Journal, atomic_folder, atomic_path, read_journal, write_atomic
from maple_data.media.extract import ExtractSettings, run_extract
from maple_data.media.frames import FrameSpec
from maple_data.workdir import WorkDir
from tests.crash import cli_command, fault_at, run
from tests.doubles import annotated_synthetic

FRAGMENT = b'{"item": "clip-00003-q0", "reviewer": "ann", "verd'


def digests(folder: Path) -> dict[str, str]:
    """``relative path -> sha256`` of every file under ``folder``."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_build_bench_killed_at_each_file_leaves_readers_the_old_benchmark_or_the_new_one(verified_work, tmp_path):
    out = tmp_path / "bench"
    build_bench(verified_work, out, BenchSettings(seed=0))
    old = digests(out)
    build_bench(verified_work, tmp_path / "reference", BenchSettings(seed=1))
    new = digests(tmp_path / "reference")
    assert old != new
    parquet_files = sum(name.endswith(".parquet") for name in new)
    kill_points = [("pyarrow.parquet:write_table", k, "kill-after", old) for k in range(1, parquet_files + 1)]
    kill_points += [("maple_data.bench.build:write_card", 1, "kill-before", old),  # every Parquet written, no card
                    ("maple_data.durable:swap_into_place", 1, "kill-before", old),  # complete, not yet in place
                    ("maple_data.durable:_exchange", 1, "kill-after", new)]  # in place, old copy not yet removed
    command = ("build-bench", verified_work, "-o", out, "--seed", "1", "--overwrite")
    for target, nth, fault, expected in kill_points:
        result = fault_at(target, nth, "maple_data.cli", *command, fault=fault)
        assert result.returncode == -9, (target, nth, result.stderr[-2000:])
        assert digests(out) == expected, (target, nth)
        assert collect(out)[2] == []  # a reader finds a complete, valid benchmark
        if expected is new:
            build_bench(verified_work, out, BenchSettings(seed=0))  # back to the old one for the next case
    result = run(cli_command("maple_data.cli", *command))
    assert result.returncode == 0, result.stderr
    assert digests(out) == new
    # nothing half-built left (the lock files that hold each benchmark for one writer stay, as lock files do)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".bench.maple.lock", ".reference.maple.lock", "bench",
                                                          "reference"]
    print(f"build-bench: {len(kill_points)} SIGKILLs, one at each file and step of the swap")


def test_build_bench_refuses_a_folder_that_is_not_a_benchmark_and_an_empty_selection(verified_work, tmp_path):
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not a benchmark folder"):
        build_bench(verified_work, other, BenchSettings())
    assert (other / "notes.txt").read_text() == "keep me"
    empty = tmp_path / "empty-work"
    shutil.copytree(verified_work, empty)
    WorkDir(empty).decisions.unlink()
    with pytest.raises(ValueError, match=r"nothing to build: no item qualifies \(not reviewed: \d+\); review"):
        build_bench(empty, tmp_path / "bench", BenchSettings())
    assert not (tmp_path / "bench").exists()


def tear(path: Path) -> int:
    """Append a torn fragment (a write cut by a crash); returns its line number."""
    lines = path.read_bytes().count(b"\n")
    with open(path, "ab") as handle:
        handle.write(FRAGMENT)
    return lines + 1


def test_decisions_journal_with_a_torn_tail_keeps_the_next_decision_and_reports_the_fragment(tmp_path):
    work = WorkDir(tmp_path)
    path = work.decisions
    work.append_decisions([journal.Decision.make("a", "ann", "accept", "V")])
    torn = tear(path)
    work.append_decisions([journal.Decision.make("b", "ann", "override", "VA")])  # acknowledged after the crash
    faults: list = []
    assert [d.item for d in work.read_decisions(faults)] == ["a", "b"]
    assert [(f.file, f.row) for f in faults] == [(str(path), torn)] and "not JSON" in faults[0].message


def test_decision_lines_with_wrong_types_are_reported_not_crashed_on(tmp_path):
    work = WorkDir(tmp_path)
    path = work.decisions
    work.append_decisions([journal.Decision.make("a", "ann", "accept", "V")])
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps({"item": "b", "reviewer": "ann", "verdict": "accept", "rmt": "V", "time": 12345})
                     + "\n" + json.dumps({"item": 5, "reviewer": "ann", "verdict": "reject"}) + "\n")
    faults: list = []
    assert [d.item for d in work.read_decisions(faults)] == ["a"]
    assert [(f.row, f.message) for f in faults] == [
        (2, "not a decision (time must be a string, got 12345)"),
        (3, "not a decision (item must be a string, got 5)")]


def test_extract_journal_with_a_torn_tail_keeps_later_records(synth_corpus, tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ("clip-00000.mp4", "clip-00001.mp4"):
        shutil.copy(synth_corpus / "videos" / name, videos / name)
    settings = ExtractSettings(frames=FrameSpec(count=2))
    run_extract(videos, tmp_path / "work", settings)
    path = WorkDir(tmp_path / "work").extract_journal
    torn = tear(path)
    shutil.copy(synth_corpus / "videos" / "clip-00002.mp4", videos / "clip-00002.mp4")
    summary = run_extract(videos, tmp_path / "work", settings)
    assert (summary.done, summary.skipped) == (1, 2)
    faults: list = []
    entries = Journal.read(path, faults)
    assert [e["path"] for e in entries if e.get("status") == "done"][-1] == "clip-00002.mp4"
    assert [f.row for f in faults] == [torn]


def test_ablation_results_journal_with_a_torn_tail_keeps_later_results(tmp_path):
    from maple_data.annotate.ablation import AblationSettings, read_results, run_annotate
    from tests.doubles import TableBackend

    work, items, _ = annotated_synthetic(tmp_path, n=2, seed=5)
    results = WorkDir(work).parts("results")[0]
    before = Journal.read(results)
    torn = tear(results)
    truth = {i: "VAS" for i in items}
    settings = AblationSettings(model="table-2", samples=16)  # another model: every subset evaluated again
    run_annotate(items.values(), work, TableBackend(items, truth), settings)
    faults: list = []
    after = Journal.read(results, faults)
    assert after[:len(before)] == before and len(after) > len(before)
    assert [f.row for f in faults] == [torn]
    assert sum(len(v) for v in read_results(WorkDir(work), settings.result_key).values()) == len(after) - len(before)


def test_write_atomic_and_atomic_folder_leave_the_old_content_on_error(tmp_path):
    target = tmp_path / "file.json"
    write_atomic(target, "old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["file.json"]
    folder = tmp_path / "folder"
    with atomic_folder(folder) as tmp:
        (tmp / "a").write_text("1")
    with pytest.raises(RuntimeError):
        with atomic_folder(folder) as tmp:
            (tmp / "a").write_text("2")
            raise RuntimeError("killed")
    assert (folder / "a").read_text() == "1" and sorted(p.name for p in tmp_path.iterdir()) == ["file.json", "folder"]
    with atomic_folder(folder) as tmp:
        (tmp / "b").write_text("3")
    assert sorted(p.name for p in folder.iterdir()) == ["b"]


def test_read_journal_reports_every_skipped_line(tmp_path):
    path = tmp_path / "j.jsonl"
    path.write_bytes(b'{"a": 1}\n[1, 2]\n\nnot json\n{"b": 2}\n{"c"')
    faults: list = []
    assert read_journal(path, faults) == [(1, {"a": 1}), (5, {"b": 2})]
    assert [(f.row, f.message.split(" (")[0]) for f in faults] == [
        (2, "not a JSON object"), (4, "not JSON"), (6, "incomplete last line")]
