"""The error boundary of both command lines: each expected failure is one line on stderr
naming the file / row / key, a non-zero exit and no traceback (``--debug`` shows it).
Every command runs as a real child process, as a user types it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from maple_data.bench.build import BenchSettings, build_bench
from maple_data.errors import describe
from maple_data.media.store import load_media
from maple_data.workdir import EXTRACTED, WorkDir
from tests.crash import ROOT, cli_command, fault_at, run


def one_error_line(result, exit_code: int = 1) -> str:
    """The single ``error:`` line of a failed command (asserts exit code, no traceback)."""
    output = result.stdout + result.stderr
    assert result.returncode == exit_code, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output[-3000:]
    return errors[0]


@pytest.fixture(scope="module")
def bench(verified_work, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("errors") / "bench"
    build_bench(verified_work, out, BenchSettings(ratios=(0.7, 0.0, 0.3)))
    return out


def test_disk_full_during_extract_is_one_line_and_a_rerun_finishes_the_job(synth_corpus, tmp_path):
    work = tmp_path / "work"
    args = ("extract", synth_corpus / "videos", "-o", work, "--frames", "2", "--shard-rows", "5")
    result = fault_at("maple_data.shards:write_atomic", 2, "maple_data.cli", *args, fault="disk-full")
    line = one_error_line(result)  # the second shard's stats file could not be written
    assert line.startswith(f"error: No space left on device: {work / EXTRACTED / '.media-00001.stats.json'}")
    assert line.endswith("(free some space and run the same command again: finished work is kept and resumed)")
    assert len(load_media(work)) == 5  # the shard published before the disk filled up is kept
    assert run(cli_command("maple_data.cli", *args)).returncode == 0
    assert len(load_media(work)) == 14


def test_corrupt_media_shard_in_build_bench_names_the_file(verified_work, tmp_path):
    work = tmp_path / "work"
    shutil.copytree(verified_work, work)
    shard = sorted((work / EXTRACTED).glob("media-*.arrow"))[0]
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])  # cut mid-stream
    line = one_error_line(run(cli_command("maple_data.cli", "build-bench", work, "-o", tmp_path / "bench")))
    assert line.startswith(f"error: {shard}: corrupt or truncated Arrow stream")
    assert not (tmp_path / "bench").exists()


def test_malformed_yaml_recipe_names_file_line_and_column(bench, tmp_path):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("algo:\n  estimator: mapo\n  clip: [1, 2\nsteps: 3\n")
    line = one_error_line(run(cli_command("maple_rl.cli", "train", bench, "--recipe", recipe)))
    assert line.startswith(f"error: invalid YAML in {recipe} line 4 column 6:")


def test_decisions_with_wrong_field_types_are_reported_and_the_build_goes_on(verified_work, tmp_path):
    work = tmp_path / "work"
    shutil.copytree(verified_work, work)
    first = json.loads(WorkDir(work).decisions.read_text().splitlines()[0])
    with open(WorkDir(work).decisions, "a", encoding="utf-8") as handle:
        handle.write(json.dumps({**first, "time": 12345}) + "\n" + json.dumps({**first, "item": 5}) + "\n")
    lines = len(WorkDir(work).decisions.read_text().splitlines())
    for command in (("build-bench", work, "-o", tmp_path / "bench"), ("review-stats", work)):
        result = run(cli_command("maple_data.cli", *command))
        assert result.returncode == 0 and "Traceback" not in result.stdout + result.stderr, result.stderr
        assert f"decisions.jsonl:{lines - 1} [-] not a decision (time must be a string, got 12345)" in result.stdout
        assert f"decisions.jsonl:{lines} [-] not a decision (item must be a string, got 5)" in result.stdout


def test_stats_on_a_corrupt_parquet_names_the_file(bench, tmp_path):
    copy = tmp_path / "bench"
    shutil.copytree(bench, copy)
    broken = copy / "qa_exact" / "test-00000-of-00001.parquet"
    broken.write_bytes(b"PAR1 not really")
    result = run(cli_command("maple_data.cli", "stats", copy))
    assert result.returncode == 1 and "Traceback" not in result.stdout + result.stderr
    assert f"{broken} [-] unreadable Parquet" in result.stdout


def test_train_on_an_extraction_folder_is_one_line(verified_work):
    line = one_error_line(run(cli_command("maple_rl.cli", "train", verified_work / EXTRACTED)))
    assert "holds maple-media rows, expected maple-record" in line


def test_annotate_with_a_missing_model_folder_fails_before_extracting(synth_corpus, tmp_path):
    result = run(cli_command("maple_data.cli", "annotate", synth_corpus / "videos", "--qa",
                             synth_corpus / "videos" / "qa.jsonl", "-o", tmp_path / "work", "--model", "/nonexistent"))
    line = one_error_line(result)
    assert line.startswith("error: model folder /nonexistent not found; pass a local model folder")
    assert not (tmp_path / "work").exists()


def test_a_hub_model_offline_fails_fast_naming_hf_hub_offline(bench, tmp_path):
    result = run(cli_command("maple_rl.cli", "train", bench, "--out", tmp_path / "run", "--set",
                             "model.path=someone/not-cached-model"), HF_HUB_OFFLINE="1")
    line = one_error_line(result)
    assert "someone/not-cached-model is not a local folder nor in the Hub cache, and HF_HUB_OFFLINE is set" in line
    assert "maple-rl pretrain --print-path" in line


def test_debug_shows_the_traceback(verified_work):
    result = run(cli_command("maple_rl.cli", "--debug", "train", verified_work / EXTRACTED))
    assert result.returncode == 1 and "Traceback" in result.stderr and "ShardError" in result.stderr


def test_describe_is_one_line_for_multi_line_messages():
    assert describe(ValueError("first\n  second\n")) == "first second"
    assert describe(OSError(13, "Permission denied", "/x")) == "Permission denied: /x (check the file's permissions)"


@pytest.mark.parametrize("module, args, code, expected", [
    ("maple_data.cli", ["extract", "/nonexistent", "-o", "work"], 2,
     "error: Invalid value: videos folder not found: /nonexistent (see maple-data extract --help)"),
    ("maple_data.cli", ["extract", "README.md", "-o", "work"], 2,
     "error: Invalid value: README.md is a file, not a folder: give the folder that holds the videos "
     "(see maple-data extract --help)"),
    ("maple_data.cli", ["extract", "videos"], 2, "error: Missing option '--out' / '-o'. (see maple-data extract --help)"),
    ("maple_data.cli", ["synth", "out", "--n", "0"], 2,
     "error: Invalid value: n must be at least 1 (see maple-data synth --help)"),
    ("maple_rl.cli", ["train"], 2, "error: Missing argument 'DATA'. (see maple-rl train --help)"),
    ("maple_rl.cli", ["train", "bench", "--recipe", "mapoo"], 1,
     "error: recipe mapoo not found: give a YAML file or a shipped recipe name (mapo, mapo-adaptive, "
     "mixed-advantage, mssr, mupo)"),
])
def test_usage_errors_are_one_line_like_every_other_error(module, args, code, expected):
    """No boxed Usage text: a bad option or argument is one `error:` line naming the command's
    --help, exit 2 (Click's code for usage errors); recipes suggested are training recipes."""
    result = subprocess.run(cli_command(module, *args), cwd=ROOT, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=600)
    assert result.returncode == code and result.stderr.strip() == expected and result.stdout == "", result


def test_every_exception_class_of_maple_derives_from_maple_error():
    """One root: a caller can catch MapleError for every failure maple itself defines."""
    import importlib
    import inspect
    import pkgutil

    import maple_data
    import maple_rl
    from maple_data.errors import MapleError

    found, outside = [], []
    for package in (maple_data, maple_rl):
        for module in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
            try:
                loaded = importlib.import_module(module.name)
            except ImportError:  # an optional extra (ray, vllm, whisper) that is not installed
                continue
            for name, cls in inspect.getmembers(loaded, inspect.isclass):
                if cls.__module__ == loaded.__name__ and issubclass(cls, BaseException):
                    found.append(f"{module.name}.{name}")
                    if not issubclass(cls, MapleError):
                        outside.append(found[-1])
    assert len(found) >= 10 and not outside, outside
