"""`maple-data build-bench` / `stats` / `publish`: selection from the decision journal,
leak-free stratified splits, balance, QA+ rules, offline `load_dataset` of every config,
byte-identical rebuilds."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import datasets
import pytest
import yaml
from typer.testing import CliRunner

from maple_data import decisions as journal
from maple_data.bench.build import CONFIGS, NONE_OPTION, BenchSettings, assign_splits, build_bench, qa_plus_row
from maple_data.cli import app
from maple_data.errors import MapleError
from maple_data.rmt import TAGS, is_subset
from maple_data.workdir import WorkDir
from tests.doubles import annotated_synthetic


@pytest.fixture(scope="module")
def reviewed_work(tmp_path_factory) -> Path:
    """42 synthetic videos annotated by the table backend; every proposal accepted by
    alice except the first three QA items: one overridden to VAS, one judged unanswerable,
    one left unreviewed."""
    work, _, proposals = annotated_synthetic(tmp_path_factory.mktemp("bench-src"), n=42, seed=5)
    qa_ids = [p["id"] for p in proposals if p["task"] == "qa"]
    decisions = []
    for p in proposals:
        if p["id"] == qa_ids[0]:
            decisions.append(journal.Decision.make(p["id"], "alice", "override", "VAS", proposed=p["rmt"]))
        elif p["id"] == qa_ids[1]:
            decisions.append(journal.Decision.make(p["id"], "alice", "unanswerable", proposed=p["rmt"]))
        elif p["id"] != qa_ids[2]:
            decisions.append(journal.Decision.make(p["id"], "alice", "accept", p["rmt"], proposed=p["rmt"]))
    WorkDir(work).append_decisions(decisions)
    return work


def test_decision_journal_last_wins_and_torn_lines(tmp_path):
    work = WorkDir(tmp_path)
    path = work.decisions
    work.append_decisions([journal.Decision("i1", "bob", "accept", "va", time="2026-01-01T00:00:00Z"),
                          journal.Decision("i1", "amy", "reject", time="2026-01-02T00:00:00Z"),
                          journal.Decision("i1", "bob", "override", "S", time="2026-01-03T00:00:00Z")])
    with path.open("a") as handle:
        handle.write('{"item": "i2", "revi')  # crash mid-write
    decisions = work.read_decisions()
    assert len(decisions) == 3 and decisions[0].rmt == "VA"
    assert journal.latest_by_reviewer(decisions)[("i1", "bob")].rmt == "S"
    assert journal.latest_by_item(decisions)["i1"].verdict == "override"
    with pytest.raises(ValueError, match="needs an rmt"):
        journal.Decision("x", "bob", "accept")


def test_splits_never_share_a_video_and_follow_the_ratios():
    items = [{"id": f"i{k}", "video_id": f"v{k // 2}", "rmt": TAGS[k % 7]} for k in range(700)]
    splits = assign_splits(items, (0.8, 0.1, 0.1), seed=1)
    assert set(splits) == {f"v{k}" for k in range(350)}  # one split per video
    per_split = Counter(splits[it["video_id"]] for it in items)
    assert per_split["train"] == pytest.approx(560, abs=8) and per_split["test"] == pytest.approx(70, abs=8)
    for tag in TAGS:  # stratified: every tag near its 80/10/10 share
        tagged = Counter(splits[it["video_id"]] for it in items if it["rmt"] == tag)
        assert tagged["test"] == pytest.approx(10, abs=3)
    assert assign_splits(items, (0.8, 0.1, 0.1), seed=1) == splits


def test_qa_plus_rows():
    base = {"id": "x@V", "options": ["red", "green", "blue", "pink"], "answer": "green"}
    deficit = qa_plus_row({**base, "condition": "deficit"}, 0, False)
    assert deficit["answer"] == NONE_OPTION and len(deficit["options"]) == 4 and "green" in deficit["options"]
    replaced = qa_plus_row({**base, "condition": "exact"}, 0, True)
    assert replaced["answer"] == NONE_OPTION and "green" not in replaced["options"]
    kept = qa_plus_row({**base, "condition": "superset"}, 0, False)
    assert kept["answer"] == "green" and kept["options"][-1] == NONE_OPTION and len(kept["options"]) == 4


def test_build_bench_loads_offline_with_typed_features_and_keeps_the_rules(reviewed_work, tmp_path):
    bench = tmp_path / "bench"
    report = build_bench(reviewed_work, bench, BenchSettings(seed=3))
    assert report.excluded == Counter({"review: unanswerable": 1, "not reviewed": 1})
    card = (bench / "README.md").read_text()
    header = yaml.safe_load(card.split("---")[1])
    assert [c["config_name"] for c in header["configs"]] == sorted(CONFIGS)
    assert (bench / "tag_distribution.png").read_bytes()[:4] == b"\x89PNG"
    assert 'datasets.load_dataset("path/to/this/folder", "qa_exact", split="test")' in card  # not a made-up repo id
    assert "the joint rule: the answer with the largest posterior" in card and "Human review" not in card
    assert "- Review: 83 items decided by 1 reviewer name(s) (alice): accept 81, override 1, unanswerable 1; " \
           "0 of them bulk-accepted" in card
    loaded = {}
    for config in CONFIGS:
        dd = datasets.load_dataset(str(bench), config, cache_dir=str(tmp_path / "cache"))
        assert set(dd) == {"train", "validation", "test"}
        assert isinstance(dd["train"].features["frames"].feature, datasets.Image)
        loaded[config] = dd
    exact = loaded["qa_exact"]
    videos = {s: set(exact[s]["video_id"]) for s in exact}
    assert not (videos["train"] & videos["test"]) and not (videos["train"] & videos["validation"])
    assert len(set(Counter(exact["test"]["rmt"]).values())) == 1  # balanced test split
    assert report.missing_in_test == [t for t in TAGS if t not in set(exact["test"]["rmt"])]
    assert ("The qa_exact test split has no item of" in card) == bool(report.missing_in_test)
    row = exact["train"][0]
    assert row["input_modalities"] == row["rmt"] and row["condition"] == "exact"
    assert (row["frames"] is not None) == ("V" in row["rmt"]) and (row["audio"] is not None) == ("A" in row["rmt"])
    combos = loaded["qa_all_combinations"]["train"]
    assert len(combos) == 7 * len(exact["train"])
    for r in combos:
        expected = "exact" if r["input_modalities"] == r["rmt"] else \
            "superset" if is_subset(r["rmt"], r["input_modalities"]) else "deficit"
        assert r["condition"] == expected
    plus = [r for s in loaded["qa_plus"] for r in loaded["qa_plus"][s]]
    assert all(r["options"][-1] == NONE_OPTION for r in plus)
    assert all(r["answer"] == NONE_OPTION for r in plus if r["condition"] == "deficit")
    kept = [r for r in plus if r["condition"] != "deficit"]
    share = sum(r["answer"] == NONE_OPTION for r in kept) / len(kept)
    assert len(kept) >= 100 and abs(share - 0.25) <= 0.02
    assert all(len(r["options"]) == 4 for r in plus)  # the items' 4 options, None included
    captions = loaded["caption"]["train"]
    assert all(r["task"] == "caption" and r["input_modalities"] == "VAS" for r in captions)


def test_rebuild_is_byte_identical_and_stats_validates(reviewed_work, tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    build_bench(reviewed_work, first, BenchSettings(seed=7))
    build_bench(reviewed_work, second, BenchSettings(seed=7))
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert files and all((first / f).read_bytes() == (second / f).read_bytes() for f in files)
    result = CliRunner().invoke(app, ["stats", str(first)])
    assert result.exit_code == 0, result.output
    assert "qa_all_combinations" in result.output and "deficit" in result.output


def test_overrides_set_the_tag_and_include_proposed_admits_unreviewed_items(reviewed_work, tmp_path):
    proposals = [json.loads(x) for x in (reviewed_work / "proposals.jsonl").read_text().splitlines()]
    overridden, _, unreviewed = [p["id"] for p in proposals if p["task"] == "qa"][:3]
    report = build_bench(reviewed_work, tmp_path / "bench", BenchSettings(include_proposed=True, ratios=(1, 0, 0)))
    assert "not reviewed" not in report.excluded
    rows = datasets.load_dataset(str(tmp_path / "bench"), "qa_exact", split="train", cache_dir=str(tmp_path / "c"))
    assert [r["rmt_source"] for r in rows if r["id"] == unreviewed] == ["proposed"]
    assert all(r["rmt_source"] == "verified" for r in rows if r["id"] != unreviewed)
    row = next(r for r in rows if r["id"] == overridden)
    assert (row["rmt"], row["review"]["verdict"], row["review"]["reviewer"]) == ("VAS", "override", "alice")


def test_bad_journal_lines_are_reported_with_file_and_line_and_skipped(reviewed_work, tmp_path):
    import shutil

    work = tmp_path / "work"
    shutil.copytree(reviewed_work, work)
    with WorkDir(work).decisions.open("a") as handle:
        handle.write("this is not json\n")
        handle.write(json.dumps({"item": "no-such-item", "reviewer": "bob", "verdict": "reject"}) + "\n")
        handle.write(json.dumps({"item": "clip-00003-qa", "reviewer": "bob", "verdict": "override",
                                 "rmt": "VX"}) + "\n")
        handle.write(json.dumps({"item": "clip-00003-qa", "reviewer": "bob", "verdict": "maybe"}) + "\n")
    lines = len(WorkDir(work).decisions.read_text().splitlines())
    result = CliRunner().invoke(app, ["build-bench", str(work), "-o", str(tmp_path / "bench")])
    assert result.exit_code == 0, result.output
    assert f"decisions.jsonl:{lines - 3} [-] not JSON" in result.output
    assert "decision for unknown item 'no-such-item' skipped" in result.output
    assert f"decisions.jsonl:{lines - 1} [-] not a decision" in result.output and "VX" in result.output
    assert f"decisions.jsonl:{lines} [-] not a decision (verdict must be one of" in result.output
    assert "excluded: review: unanswerable: 1 item(s)" in result.output


def test_publish_checks_the_folder_and_needs_a_token(reviewed_work, tmp_path, monkeypatch):
    bench = tmp_path / "bench"
    build_bench(reviewed_work, bench)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))  # no cached login
    result = CliRunner().invoke(app, ["publish", str(bench), "--repo-id", "someone/maple-bench"])
    assert result.exit_code == 2 and "token" in result.output.lower()
    dry = CliRunner().invoke(app, ["publish", str(bench), "--repo-id", "someone/maple-bench", "--dry-run"])
    assert dry.exit_code == 0 and "README.md" in dry.output and "qa_plus/train-00000-of-00001.parquet" in dry.output
    # no network: the Hub endpoint is a closed local port; one line, and the token never shows
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "1")
    secret = "hf_SECRETtoken1234567890"
    result = CliRunner().invoke(app, ["publish", str(bench), "--repo-id", "someone/maple-bench", "--token", secret])
    failure = str(result.exception)  # the error boundary (run_cli) prints it as one `error:` line
    assert isinstance(result.exception, MapleError) and failure.startswith("publish failed") and secret not in failure
    assert secret not in result.output
    (bench / "qa_exact" / "test-00000-of-00001.parquet").unlink()
    result = CliRunner().invoke(app, ["publish", str(bench), "--repo-id", "someone/maple-bench", "--token", "x"])
    assert result.exit_code == 2 and "qa_exact/test-*.parquet" in result.output
