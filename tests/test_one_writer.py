"""One writer per folder: `annotate`, `build-bench` and `train` stop at once, in one line
naming the holder, while another process holds their folder, and start normally once that
process is gone, however it ended (SIGKILL leaves no stale lock). Journals written by
several processes at once (two review servers) keep every line whole."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

from maple_data.durable import FolderBusy, Journal, folder_lock, read_journal
from tests.crash import cli_command, run

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
HOLD = """
import sys
from pathlib import Path
from maple_data.durable import folder_lock
folder, lock_file = sys.argv[1], (sys.argv[2] or None)
with folder_lock(folder, lock_file):
    print("held", flush=True)
    sys.stdin.read()  # until the test kills this process
"""


@contextmanager
def held(folder: Path, lock_file: Path | None = None) -> Iterator[subprocess.Popen]:
    """Another process holding ``folder``; SIGKILLed on exit."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder), str(lock_file or "")], env=ENV,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        yield proc
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file's bytes (the lock file, which names its last holder, aside)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != ".maple.lock"}


def assert_refused(done: subprocess.CompletedProcess, folder: Path, holder: subprocess.Popen) -> None:
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1, done.stderr
    assert lines[0].startswith(f"error: {folder} is in use by another maple process (pid {holder.pid}: -c "), lines


def test_a_held_folder_refuses_a_second_holder_until_its_holder_dies(tmp_path):
    folder = tmp_path / "work"
    with held(folder) as holder:
        with pytest.raises(FolderBusy, match=f"pid {holder.pid}"):
            with folder_lock(folder):
                pass
    first, second = ExitStack(), ExitStack()  # SIGKILLed: free at once; re-entrant in a process,
    first.enter_context(folder_lock(folder))   # held until its last holder lets go, in any order
    second.enter_context(folder_lock(folder))
    first.close()
    assert held_elsewhere(folder)
    second.close()
    assert not held_elsewhere(folder)


def held_elsewhere(folder: Path) -> bool:
    """Whether another process finds ``folder`` held (it tries once, without waiting)."""
    probe = "import sys\nfrom maple_data.durable import FolderBusy, folder_lock\ntry:\n    with folder_lock(sys.argv[1]):" \
            "\n        print('free')\nexcept FolderBusy:\n    print('busy')"
    done = subprocess.run([sys.executable, "-c", probe, str(folder)], env=ENV, capture_output=True, text=True)
    return done.stdout.strip() == "busy"


def test_annotate_build_bench_and_train_refuse_a_held_folder_then_run(verified_work, rl_bench, tiny_omni, tmp_path):
    work = tmp_path / "work"
    shutil.copytree(verified_work, work)
    before = snapshot(work)
    videos = verified_work.parent / "corpus" / "videos"
    annotate = cli_command("maple_data.cli", "annotate", videos, "--qa", videos / "qa.jsonl", "-o", work, "--model",
                           tiny_omni, "--device", "cpu", "--samples", "1", "--max-new-tokens", "1")
    bench = tmp_path / "bench"
    build = cli_command("maple_data.cli", "build-bench", work, "-o", bench)
    with held(work) as holder:
        assert_refused(run(annotate), work, holder)
        assert_refused(run(cli_command("maple_data.cli", "extract", videos, "-o", work)), work, holder)
        assert snapshot(work) == before
    with held(bench, tmp_path / ".bench.maple.lock") as holder:
        assert_refused(run(build), bench, holder)
        assert not (bench / "README.md").exists()
    done = run(build)
    assert done.returncode == 0 and (bench / "README.md").exists(), done.stderr

    out = tmp_path / "run"
    train = cli_command("maple_rl.cli", "train", rl_bench[0], "--recipe", "mupo", "--model", tiny_omni, "-o", out,
                        "--set", "steps=1", "--set", "rollout.group_size=2", "--set", "rollout.max_new_tokens=2",
                        "--set", "sampling.batch_size=2", "--set", "format_warmup_steps=0")
    with held(out) as holder:
        assert_refused(run(train), out, holder)
        assert not (out / "metrics.jsonl").exists()
    done = run(train)
    assert done.returncode == 0 and (out / "final" / "config.json").exists(), done.stderr


APPEND = """
import sys
from maple_data.durable import Journal
path, writer, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
for k in range(n):
    with Journal(path) as journal:  # a fresh handle per append, as the review server's
        journal.append([{"writer": writer, "k": k, "pad": "x" * (k % 7) * 300}])
"""


def test_journal_appends_from_several_processes_keep_every_line_whole(tmp_path):
    path = tmp_path / "decisions.jsonl"
    writers = [subprocess.Popen([sys.executable, "-c", APPEND, str(path), f"w{i}", "300"], env=ENV)
               for i in range(3)]
    assert [w.wait() for w in writers] == [0, 0, 0]
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b"" and all(lines[:-1]), "a blank line"
    faults: list = []
    records = [r for _, r in read_journal(path, faults)]
    assert faults == [] and len(records) == 900
    assert {(r["writer"], r["k"]) for r in records} == {(f"w{i}", k) for i in range(3) for k in range(300)}


def test_a_torn_tail_is_ended_by_the_next_append_of_any_process(tmp_path):
    path = tmp_path / "j.jsonl"
    path.write_bytes(b'{"a": 1}\n{"torn"')
    with Journal(path) as journal:
        journal.append([{"b": 2}])
    assert path.read_bytes() == b'{"a": 1}\n{"torn"\n{"b": 2}\n'
    assert [r for _, r in read_journal(path, [])] == [{"a": 1}, {"b": 2}]
