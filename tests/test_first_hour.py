"""A newcomer's first hour: bad inputs caught early in the one-line form, nothing replaced
without asking, Ctrl-C saying what was kept, reports that say what they show. Every
command runs as a real child process, as a user types it."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from maple_data.bench.build import BenchSettings, build_bench
from maple_data.bench.stats import ANSWERS_NONE, collect
from maple_data.media.store import load_media
from maple_data.workdir import WorkDir
from maple_rl.evaluate import small_cell_warnings
from tests.crash import cli_command, fault_at, run
from tests.test_errors import one_error_line


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` and the hash of its bytes."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def bench(verified_work, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("first-hour") / "bench"
    build_bench(verified_work, out, BenchSettings(ratios=(0.7, 0.0, 0.3)))
    return out


def data(*args) -> list[str]:
    return cli_command("maple_data.cli", *args)


def test_bad_inputs_are_caught_before_any_work(synth_corpus, verified_work, bench, tmp_path):
    empty, texts = tmp_path / "empty", tmp_path / "texts"
    empty.mkdir()
    texts.mkdir()
    (texts / "notes.txt").write_text("not a video")
    cases = [  # (command, exit code, the start of its one line)
        (data("extract", empty, "-o", tmp_path / "w"), 2, f"error: Invalid value: no videos in {empty} (looked for mp4"),
        (data("extract", texts, "-o", tmp_path / "w"), 2, f"error: Invalid value: no videos in {texts}"),
        (data("extract", synth_corpus / "videos", "-o", tmp_path / "w", "--workers", "0"), 2,
         "error: Invalid value for '--workers'"),
        (data("annotate", synth_corpus / "videos", "--qa", tmp_path / "missing.jsonl", "-o", tmp_path / "w",
              "--model", "/nonexistent"), 1, f"error: no usable item of task qa,caption in {tmp_path / 'missing.jsonl'}"),
        (data("annotate", synth_corpus / "videos", "--qa", synth_corpus / "videos" / "qa.jsonl", "-o", tmp_path / "w",
              "--model", "/nonexistent", "--task", "summary"), 2, "error: Invalid value: --task must name qa"),
        (data("publish", bench, "--dry-run", "--repo-id", "bad id"), 2,
         "error: Invalid value: --repo-id 'bad id' is not a Hub repo id"),
    ]
    for command, code, start in cases:
        line = one_error_line(run(command), code)
        assert line.startswith(start), (command, line)
    assert not (tmp_path / "w").exists()  # neither extraction nor a model load began

    export = tmp_path / "export.json"
    export.write_text("[{\"data\": ")
    before = snapshot(verified_work)
    line = one_error_line(run(data("import-labelstudio", verified_work, export)))
    assert line.startswith(f"error: {export}: not valid JSON (line 1 column 11")
    assert snapshot(verified_work) == before


def test_synth_replaces_a_corpus_only_when_asked_and_leaves_no_orphan(tmp_path):
    out = tmp_path / "corpus"
    assert run(data("synth", out, "--n", "3", "--width", "64", "--height", "32", "--duration", "2")).returncode == 0
    before = snapshot(out)
    line = one_error_line(run(data("synth", out, "--n", "1")))
    assert line == (f"error: {out} holds a synthetic corpus: pass --overwrite to replace it (its videos, QA file "
                    "and ground truth), or choose another output folder")
    assert snapshot(out) == before
    assert run(data("synth", out, "--n", "1", "--width", "64", "--height", "32", "--duration", "2",
                    "--overwrite")).returncode == 0
    assert sorted(p.name for p in (out / "videos").iterdir()) == ["clip-00000.mp4", "clip-00000.srt", "qa.jsonl"]
    other = tmp_path / "other"
    other.mkdir()
    (other / "mine.txt").write_text("keep")
    line = one_error_line(run(data("synth", other, "--n", "1", "--overwrite")))
    assert line.startswith(f"error: {other} is not empty and holds no synthetic corpus")
    assert (other / "mine.txt").read_text() == "keep"


def test_build_bench_and_eval_replace_results_only_when_asked(verified_work, bench, tmp_path):
    copy = tmp_path / "bench"
    shutil.copytree(bench, copy)
    before = snapshot(copy)
    line = one_error_line(run(data("build-bench", verified_work, "-o", copy, "--ratios", "0.7,0,0.3")))
    assert line == (f"error: {copy} holds a benchmark: pass --overwrite to rebuild it (the folder is replaced "
                    "whole), or choose another --out")
    assert snapshot(copy) == before
    result = run(data("build-bench", verified_work, "-o", copy, "--ratios", "0.7,0,0.3", "--overwrite"))
    assert result.returncode == 0, result.stderr
    assert snapshot(copy) == before  # the same inputs and seed: the same bytes

    report = tmp_path / "report"
    report.mkdir()
    (report / "eval.json").write_text("{}")
    line = one_error_line(run(cli_command("maple_rl.cli", "eval", copy, "--model", "/nonexistent", "-o", report)))
    assert line == f"error: {report} holds an evaluation report: pass --overwrite to replace it, or choose another -o"
    assert (report / "eval.json").read_text() == "{}"


def test_ctrl_c_in_extract_is_one_line_and_the_same_command_finishes(synth_corpus, tmp_path):
    work = tmp_path / "work"
    args = ("extract", synth_corpus / "videos", "-o", work, "--frames", "2", "--shard-rows", "2")
    result = fault_at("maple_data.media.extract:extract_video", 5, "maple_data.cli", *args, fault="interrupt-after")
    assert result.returncode == 130, result.stderr
    assert result.stderr.splitlines()[-1] == ("interrupted: finished work is kept; run the same command again "
                                              "to continue")
    assert "Traceback" not in result.stderr
    kept = len(load_media(work))
    assert kept >= 4  # two full shards were published before the interrupt
    again = run(cli_command("maple_data.cli", *args))
    assert again.returncode == 0, again.stderr
    journal = [json.loads(x) for x in WorkDir(work).extract_journal.read_text().splitlines()]
    assert len(load_media(work)) == 14 and sum(e["status"] == "done" for e in journal) == 14


def test_stats_counts_the_rows_answering_none(bench):
    _, conditions, faults = collect(bench)
    assert not faults
    for key, counter in conditions.items():
        if key.startswith("qa_plus/"):
            assert counter[ANSWERS_NONE] >= counter["deficit"] > 0  # every deficit row answers None, and a share more
        else:
            assert counter[ANSWERS_NONE] == 0
    result = run(data("stats", bench))
    assert result.returncode == 0 and ANSWERS_NONE in result.stdout


def test_the_card_describes_only_the_configs_built(verified_work, bench, tmp_path):
    work = tmp_path / "work"
    shutil.copytree(verified_work, work)
    proposals = WorkDir(work).proposals
    proposals.write_text("".join(x + "\n" for x in proposals.read_text().splitlines() if '"task": "caption"' not in x))
    no_captions = tmp_path / "bench"
    build_bench(work, no_captions, BenchSettings(ratios=(0.7, 0.0, 0.3)))
    for folder, has_captions in ((bench, True), (no_captions, False)):
        card = (folder / "README.md").read_text()
        built = {p.parent.name for p in folder.glob("*/*.parquet")}
        assert ("caption" in built) == has_captions
        for config in ("qa_exact", "qa_all_combinations", "qa_plus", "caption"):
            assert (f"- `{config}`:" in card) == (config in built), (folder, config)


def test_small_eval_cells_are_warned_about():
    assert small_cell_warnings({t: 12 for t in ("V", "A", "S", "VA", "VS", "AS", "VAS")}) == []
    (warning,) = small_cell_warnings({"V": 1, "A": 12, "S": 12, "VA": 12, "VS": 12, "AS": 12})
    assert warning.startswith("fewer than 10 items in V (1), VAS (0): one item moves such a cell by more than 10 "
                              "points")


@pytest.mark.parametrize("args, code", [
    (["annotate", "VIDEOS", "--qa", "QA", "-o", "OUT", "--model", "m", "--rule", "bogus"], 2),
    (["annotate", "VIDEOS", "--qa", "QA", "-o", "OUT", "--model", "m", "--prior", "V=abc"], 2),
    (["review", "OUT", "--reviewer", "me"], 1),  # no proposals yet
    (["publish", "VIDEOS", "--repo-id", "me/bench", "--dry-run"], 2),  # not a benchmark folder
    (["extract", "VIDEOS", "-o", "OUT", "--frames", "0"], 2),
    (["build-bench", "OUT", "-o", "BENCH", "--ratios", "0.5,0.5"], 2),
    (["publish", "VIDEOS", "--dry-run"], 2),  # no --repo-id
])
def test_each_bad_input_of_the_first_hour_is_one_line(synth_corpus, tmp_path, args, code):
    where = {"VIDEOS": synth_corpus / "videos", "QA": synth_corpus / "videos" / "qa.jsonl", "OUT": tmp_path / "work",
             "BENCH": tmp_path / "bench"}
    (tmp_path / "work").mkdir()
    one_error_line(run(data(*(where.get(a, a) for a in args))), code)
    assert not any((tmp_path / "work").iterdir()) and not (tmp_path / "bench").exists()


def test_eval_prints_no_library_output_unless_verbose(rl_bench, tiny_omni, tmp_path):
    from tests.test_quickstart import LIBRARY_NOISE

    bench, _ = rl_bench
    args = ("eval", bench, "--model", tiny_omni, "--max-new-tokens", "2")
    quiet = run(cli_command("maple_rl.cli", *args, "-o", tmp_path / "quiet"))
    verbose = run(cli_command("maple_rl.cli", "--verbose", *args, "-o", tmp_path / "verbose"))
    assert quiet.returncode == 0 and verbose.returncode == 0, quiet.stderr + verbose.stderr
    assert not [x for x in quiet.stderr.splitlines() if LIBRARY_NOISE.search(x)], quiet.stderr
    assert [x for x in verbose.stderr.splitlines() if LIBRARY_NOISE.search(x)], verbose.stderr  # the filter hides some
