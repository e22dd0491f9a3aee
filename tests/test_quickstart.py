"""The README's Quickstart, run as written (learning lane: its first line pretrains the
shipped model, or takes it from the cache).

The ```bash block under "## Quickstart" is run line by line, unchanged, by one real
``bash -e`` in a fresh folder, offline (``HF_HUB_OFFLINE=1``). A line whose trailing comment
starts with one of :data:`SKIP_MARKERS` (``# interactive``: waits for a person;
``# needs a Hub token``: goes online) is left out; every other line must succeed. Then the
outcomes a reader relies on are checked: a non-empty benchmark with its dataset card, the
triage reviewer in the decisions, both eval reports with >= 10 items per RMT, an RL gain on
the compositions over the start, and no library warnings from train and eval. The run's time,
the proposals' agreement and the compositions' accuracy before and after RL go to
``tests/artifacts/quickstart.json``: the README's figures come from there.

Locally, against a model already cached: ``pytest -m learning --learning --learning-cache
~/.cache/maple tests/test_quickstart.py`` (an unfinished pretraining there is resumed first).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SKIP_MARKERS = ("interactive", "needs a Hub token")  # `# <marker>...` at the end of a README line
TIMEOUT_S = 4 * 3600  # a safety net only (a cold pretraining on a loaded 2-core machine fits)
TAIL_LINES = 40
COMPOSITIONS = ("VA", "VS", "AS", "VAS")
LIBRARY_NOISE = re.compile(r"\[transformers\]|Loading weights|Writing model shards|UserWarning|it/s\]")
ARTIFACTS = ROOT / "tests" / "artifacts"


@dataclass
class Line:
    number: int  # line number in README.md
    text: str  # the command as written (continuation lines joined with newlines)
    skip: str | None  # the marker that leaves it out, if any


def quickstart_lines(readme: str) -> list[Line]:
    """The commands of the ```bash block under "## Quickstart" (comments and blank lines
    dropped; a backslash continuation kept with its line)."""
    section = re.search(r"^## Quickstart\n(.*?)(?=^## )", readme, re.DOTALL | re.MULTILINE)
    assert section, "README.md has no '## Quickstart' section"
    block = re.search(r"^```bash\n(.*?)^```", section.group(1), re.DOTALL | re.MULTILINE)
    assert block, "the README's Quickstart has no ```bash block"
    first = readme[:section.start(1) + block.start(1)].count("\n") + 1
    lines: list[Line] = []
    pending: list[str] = []
    for offset, raw in enumerate(block.group(1).splitlines()):
        if not pending and (not raw.strip() or raw.lstrip().startswith("#")):
            continue
        pending.append(raw)
        if raw.endswith("\\"):
            continue
        text = "\n".join(pending)
        start = first + offset - len(pending) + 1
        pending = []
        lines.append(Line(start, text, marker_of(text)))
    return lines


def marker_of(command: str) -> str | None:
    """The skip marker of a command: its trailing comment (a ``#`` at the start of a word,
    outside quotes, as bash reads it) starting with one of SKIP_MARKERS."""
    last = command.splitlines()[-1]
    quote, escaped = None, False
    for i, char in enumerate(last):
        if escaped:
            escaped = False
        elif char == "\\" and quote != "'":
            escaped = True
        elif quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or last[i - 1].isspace()):
            comment = last[i:].lstrip("#").strip()
            return next((m for m in SKIP_MARKERS if comment.startswith(m)), None)
    return None


def script_for(commands: list[Line], logs: Path) -> str:
    """One bash script running each command as written, in order: step N's stdout and
    stderr go to logs/N.out and logs/N.err; a step whose status is not 0 stops the script
    with it (also a failing first half of `a && b`, which `bash -e` alone lets pass)."""
    parts = ["set -o pipefail"]
    for n, line in enumerate(commands):
        parts += [f"echo {n} > {shlex.quote(str(logs / 'started'))}",
                  "{", line.text, f"}} > {shlex.quote(str(logs / f'{n}.out'))} 2> {shlex.quote(str(logs / f'{n}.err'))}",
                  'status=$?; if [ "$status" != 0 ]; then exit "$status"; fi']
    parts.append(f"echo done > {shlex.quote(str(logs / 'started'))}")
    return "\n".join(parts) + "\n"


def tail(path: Path, n: int = TAIL_LINES) -> str:
    if not path.exists():
        return "(none)"
    lines = path.read_text(errors="replace").splitlines()
    return "\n".join(lines[-n:]) or "(empty)"


def test_marker_parsing():
    """The convention itself, on its own: trailing comments only, prefixes only."""
    readme = ("## Quickstart\n\n```bash\n# a comment\nMODEL=$(x --p)   # or: MODEL=y, needs a Hub token\n"
              "a --reviewer alice   # interactive: serves a page\n"
              "b --repo-id x/y   # needs a Hub token\nc '# interactive'\nd \\\n  --e   # interactive\n```\n\n## Next\n")
    got = [(line.number, line.text, line.skip) for line in quickstart_lines(readme)]
    assert got == [(5, "MODEL=$(x --p)   # or: MODEL=y, needs a Hub token", None),
                   (6, "a --reviewer alice   # interactive: serves a page", "interactive"),
                   (7, "b --repo-id x/y   # needs a Hub token", "needs a Hub token"),
                   (8, "c '# interactive'", None),
                   (9, "d \\\n  --e   # interactive", "interactive")]


@pytest.mark.learning
def test_the_readme_quickstart_runs_as_written_offline(tmp_path, learning_cache):
    lines = quickstart_lines((ROOT / "README.md").read_text())
    commands = [line for line in lines if not line.skip]
    assert commands, lines
    # the review page serves until a person stops it: unmarked, it would hang this test
    serving = [line for line in commands if "maple-data review" in line.text and "--accept-confident" not in line.text]
    assert not serving, f"mark these README lines `# interactive`: {serving}"

    where = tmp_path / "quickstart"
    logs = tmp_path / "logs"
    where.mkdir()
    logs.mkdir()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MAPLE_CACHE": str(learning_cache),
           # the console scripts of the Python running the tests, first
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    env.pop("MAPLE_DEBUG", None)
    began = time.monotonic()
    script = script_for(commands, logs)
    (tmp_path / "quickstart.sh").write_text(script)
    shell = subprocess.Popen(["bash", "-e", str(tmp_path / "quickstart.sh")], cwd=where, env=env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        _, shell_err = shell.communicate(timeout=TIMEOUT_S)
        status: int | None = shell.returncode
    except subprocess.TimeoutExpired:  # the whole process group: bash and the command it waits for
        os.killpg(shell.pid, signal.SIGKILL)
        _, shell_err = shell.communicate()
        status = None
    started = tail(logs / "started", 1)
    if status != 0 or started != "done":
        step = int(started) if started.isdigit() else None
        line = commands[step] if step is not None else None
        pytest.fail("the README's Quickstart failed"
                    + (f" (timed out after {TIMEOUT_S} s)" if status is None else f" (exit status {status})")
                    + (f" at README.md:{line.number}:\n  {line.text}\n" if line else f"; last step started: {started}\n")
                    + (f"--- its stderr (last {TAIL_LINES} lines) ---\n{tail(logs / f'{step}.err')}\n"
                       f"--- its stdout (last {TAIL_LINES} lines) ---\n{tail(logs / f'{step}.out')}\n"
                       if step is not None else "")
                    + f"--- bash's own stderr ---\n{shell_err[-2000:] or '(empty)'}\n(every step's output: {logs})",
                    pytrace=False)

    # the benchmark: rows in every config's test split, a dataset card naming the configs
    import pyarrow.parquet as pq

    from maple_rl.evaluate import MIN_CELL_ITEMS  # eval warns below it

    bench = where / "bench"
    card = bench / "README.md"
    assert card.is_file() and "configs:" in card.read_text(), f"no dataset card in {bench}"
    tests = sorted(bench.glob("*/test-*.parquet"))
    assert tests, f"no test split in {bench}: {sorted(p.relative_to(bench) for p in bench.rglob('*'))}"
    rows = {str(p.relative_to(bench)): pq.read_metadata(p).num_rows for p in tests}
    assert all(rows.values()), f"empty test splits: {rows}"
    assert any(p.startswith("qa_all_combinations/") for p in rows), rows  # the config the eval line reads

    # the bulk reviewer of the README's triage line is named in its decisions
    decisions = [json.loads(x) for x in (where / "work" / "decisions.jsonl").read_text().splitlines() if x.strip()]
    triage = [d for d in decisions if d["reviewer"] == "triage"]
    assert triage and all(d["verdict"] == "accept" and d.get("bulk") for d in triage), decisions[:5]

    # RL wrote a model; eval reports of the start and of the trained model over the test split,
    # every RMT cell with enough items to mean something, no warning about it
    assert (where / "runs" / "mapo" / "final" / "config.json").is_file()
    results = {}
    for name, report in (("start", where / "runs" / "start-eval"), ("rl", where / "runs" / "mapo" / "eval")):
        assert (report / "eval.md").is_file(), f"no eval report in {report}"
        result = results[name] = json.loads((report / "eval.json").read_text())
        assert result["config"] == "qa_exact" and result["split"] == "test", result
        assert result["rows"] == rows["qa_exact/test-00000-of-00001.parquet"], (result, rows)
        assert min(result["items_per_rmt"].values()) >= MIN_CELL_ITEMS and not result["warnings"], result
    # train and eval print no library warnings or progress bars of their own (transformers, torch)
    for n, line in enumerate(commands):
        if line.text.startswith(("maple-rl train", "maple-rl eval")):
            noise = [x for x in (logs / f"{n}.err").read_text().splitlines() if LIBRARY_NOISE.search(x)]
            assert not noise, f"README.md:{line.number} printed library output: {noise[:5]}"
    compositions = {name: statistics.mean(r["per_rmt"][t] for t in COMPOSITIONS) for name, r in results.items()}
    elapsed = time.monotonic() - began
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "quickstart.json").write_text(json.dumps(
        {"seconds": round(elapsed), "compositions": compositions, "per_rmt": {k: r["per_rmt"] for k, r in results.items()},
         "agreement": agreement(where)}, indent=1))
    print(f"quickstart: {elapsed:.0f} s; compositions' accuracy {compositions['start']:.3f} at the start, "
          f"{compositions['rl']:.3f} after RL (tests/artifacts/quickstart.json)")
    # RL raises the compositions' accuracy over its start. The margin is two of 48 items on this
    # install (0.521 -> 0.562): runs are deterministic on one install, so this holds run to run, and
    # a change that moves RL's trajectory or the data can flip it, which is then said here with the
    # figures (benchmarks/README.md: at this size a gain is not reliable)
    assert compositions["rl"] > compositions["start"], (
        f"RL did not raise the compositions' accuracy over its start: {compositions}")


def agreement(where: Path) -> float:
    """Share of proposals equal to the generator's true tag."""
    truth = {r["id"]: r["rmt"] for r in map(json.loads, (where / "demo" / "ground_truth.jsonl").read_text().splitlines())}
    proposals = [json.loads(x) for x in (where / "work" / "proposals.jsonl").read_text().splitlines() if x.strip()]
    return sum(p["rmt"] == truth[p["id"]] for p in proposals) / len(proposals)
