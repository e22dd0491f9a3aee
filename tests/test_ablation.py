"""Ablation inference and RMT proposals: answer parsing, the proposal rule with each flag,
curtailed adaptive search, resumable journals, `propose` without inference."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from maple_data.annotate.ablation import (
    AblationSettings,
    Item,
    evaluate_item,
    read_results,
    run_annotate,
    run_propose,
    score_answer,
)
from maple_data.annotate.proposal import ProposalConfig, propose
from maple_data.annotate.search import SubsetResult, fail_decided, pass_threshold, run_search, search_stages
from maple_data.answers import format_options, parse_choice, token_f1
from maple_data.inputs.qa import read_qa_file
from maple_data.media.extract import ExtractSettings, run_extract
from maple_data.media.store import load_media
from maple_data.media.frames import FrameSpec
from maple_data.models.prompts import build_prompt
from maple_data.rmt import TAGS
from maple_data.workdir import WorkDir
from tests.doubles import TableBackend

OPTIONS = ["red", "green", "blue", "dark blue"]


@pytest.mark.parametrize("text, expected", [
    ("B", 1), ("(B)", 1), ("B.", 1), ("C) blue", 2), ("Answer: B", 1), ("the answer is (c).", 2),
    ("Final answer: D", 3), ("\\boxed{A}", 0), ("It is red.", 0), ("dark blue", 3), ("blue", 2),
    ("A cat sleeps", None), ("The answer is a cat", None), ("red or green", None), ("E", None), ("", None),
])
def test_parse_choice(text, expected):
    assert parse_choice(text, OPTIONS) == expected


def test_token_f1_by_hand():
    # pred {a, red, circle}, ref {red, circle, two, beeps}: common 2 -> P 2/3, R 2/4 -> F1 = 4/7
    assert token_f1("A red circle!", "red circle, two beeps") == pytest.approx(4 / 7)
    assert token_f1("", "") == 1.0 and token_f1("x", "") == 0.0
    assert format_options(["x", "y"]) == "A. x\nB. y"


def r(subset: str, correct: int, n: int) -> SubsetResult:
    return SubsetResult(subset, [1.0] * correct + [0.0] * (n - correct))


def test_proposal_rule_and_its_flags_on_constructed_cases():
    config = ProposalConfig(rule="threshold", tau=0.75, delta=0.15, min_samples=4)
    # minimal passing subset, confidence = min((7/8 - .75)/.25, (.75 - 2/8)/.75) = min(0.5, 0.6667)
    clean = {"VAS": r("VAS", 8, 8), "V": r("V", 2, 8), "A": r("A", 1, 8), "S": r("S", 2, 8),
             "VA": r("VA", 7, 8), "VS": r("VS", 2, 8), "AS": r("AS", 3, 8)}
    p = propose(clean, "VAS", config)
    assert (p.status, p.rmt, p.flags) == ("proposed", "VA", ())
    assert p.confidence == pytest.approx(0.5)
    # unanswerable: full below tau; confidence (0.75 - 0.5) / 0.75
    p = propose({"VAS": r("VAS", 4, 8)}, "VAS", config)
    assert (p.status, p.rmt) == ("unanswerable", None) and p.confidence == pytest.approx(1 / 3)
    # tie: V and S both pass; V wins on accuracy
    p = propose({"VAS": r("VAS", 8, 8), "V": r("V", 8, 8), "S": r("S", 7, 8)}, "VAS", config)
    assert (p.rmt, p.flags) == ("V", ("tie",))
    # equal accuracy tie -> canonical order (A before S)
    assert propose({"VAS": r("VAS", 8, 8), "S": r("S", 8, 8), "A": r("A", 8, 8)}, "VAS", config).rmt == "A"
    # non-monotone: V passes, VA fails
    p = propose({"VAS": r("VAS", 8, 8), "V": r("V", 8, 8), "VA": r("VA", 2, 8)}, "VAS", config)
    assert (p.rmt, p.flags) == ("V", ("non-monotone",))
    # low K on the deciding subset
    assert propose({"VAS": r("VAS", 2, 2)}, "VAS", config).flags == ("low-k",)
    # delta: S passes tau but is more than delta below full
    p = propose({"VAS": r("VAS", 10, 10), "S": r("S", 8, 10)}, "VAS", ProposalConfig(rule="threshold", tau=0.75,
                                                                                      delta=0.15))
    assert p.rmt == "VAS"
    # a video without audio: full is VS
    assert propose({"VS": r("VS", 8, 8), "S": r("S", 8, 8)}, "VS", config).rmt == "S"
    assert propose({"V": r("V", 8, 8)}, "VAS", config).status == "incomplete"


def test_fail_decided_and_pass_threshold_by_hand():
    # threshold 0.75 of 8 -> 6 correct needed
    assert fail_decided([0, 0, 0], 8, 0.75)  # at most 5 reachable
    assert not fail_decided([1, 1, 0, 0], 8, 0.75)  # 2 + 4 = 6 still reachable
    assert not fail_decided([1] * 6, 8, 0.75)  # passing subsets are never cut short
    config = ProposalConfig(tau=0.75, delta=0.15)
    assert pass_threshold({"VAS": r("VAS", 8, 8)}, "VAS", config) == pytest.approx(0.85)  # 1.0 - 0.15
    assert pass_threshold({"VAS": r("VAS", 6, 8)}, "VAS", config) == 0.75  # tau dominates


def stream_sampler(streams: dict[str, list[float]]):
    taken = dict.fromkeys(streams, 0)

    def sample(subsets, n):
        out = []
        for s in subsets:
            out.append([(x, "") for x in streams[s][taken[s]:taken[s] + n]])
            taken[s] += n
        return out

    return sample


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(st.integers(0, 1), min_size=8, max_size=8), min_size=7, max_size=7),
       st.sampled_from(["VAS", "VS", "A"]), st.integers(1, 3))
def test_adaptive_search_proposes_exactly_what_exhaustive_search_does(bits, available, chunk):
    streams = {tag: [float(x) for x in b] for tag, b in zip(TAGS, bits)}
    proposals, calls = [], []
    for mode in ("exhaustive", "adaptive"):
        config = AblationSettings(model="m", samples=8, search=mode, chunk=chunk,
                                  proposal=ProposalConfig(rule="threshold"))
        results, drawn = run_search(available, config, stream_sampler(streams))
        proposals.append(propose(results, available, config.proposal))
        calls.append(drawn)
    (ex, ad), (ex_calls, ad_calls) = proposals, calls
    assert (ad.status, ad.rmt) == (ex.status, ex.rmt)
    assert ad_calls <= ex_calls


def test_search_stages():
    assert search_stages("VAS", "exhaustive") == [list(TAGS)]
    assert search_stages("VAS", "adaptive") == [["VAS"], ["V", "A", "S"], ["VA", "VS", "AS"]]
    assert search_stages("VS", "adaptive") == [["VS"], ["V", "S"]]


def test_prompt_carries_only_its_subset(synth_corpus, tmp_path):
    run_extract(synth_corpus / "videos", tmp_path, ExtractSettings(frames=FrameSpec(count=4)))
    media = load_media(tmp_path)["clip-00000"]
    full = build_prompt("Which?", ["x", "y"], media, "VAS")
    assert [p["type"] for p in full.messages[1]["content"]] == ["video", "audio", "text"]
    assert len(full.frames) == 4 and full.audio.dtype == np.float32
    assert full.messages[1]["content"][2]["text"].startswith("Subtitles:\n[")
    only_a = build_prompt("Which?", ["x", "y"], media, "A")
    assert [p["type"] for p in only_a.messages[1]["content"]] == ["audio", "text"]
    assert only_a.frames is None and "Subtitles" not in only_a.messages[1]["content"][1]["text"]
    assert only_a.messages[1]["content"][1]["text"] == "Which?\nA. x\nB. y\n" + \
        "Answer with the option's letter from the given choices directly."


@pytest.fixture
def annotated(synth_corpus, tmp_path):
    """Extracted synthetic corpus, its QA items and true tags."""
    run_extract(synth_corpus / "videos", tmp_path / "work", ExtractSettings(frames=FrameSpec(count=4)))
    qa = read_qa_file(synth_corpus / "videos" / "qa.jsonl", synth_corpus / "videos")
    items = {q.id: Item.from_qa(q) for q in qa.items if q.task == "qa"}
    truth = {json.loads(line)["id"]: json.loads(line)["rmt"]
             for line in (synth_corpus / "ground_truth.jsonl").read_text().splitlines()}
    return tmp_path / "work", items, truth


@pytest.mark.parametrize("rule", ["threshold", "joint"])
@pytest.mark.parametrize("search", ["adaptive", "exhaustive"])
def test_table_backend_reproduces_the_synthetic_ground_truth(annotated, search, rule):
    work, items, truth = annotated
    backend = TableBackend(items, truth)
    settings = AblationSettings(model="table", samples=16, search=search, proposal=ProposalConfig(rule=rule))
    summary = run_annotate(items.values(), work, backend, settings)
    assert summary.items == 14 and not summary.missing_media
    _, counts = run_propose(work)
    proposals = [json.loads(x) for x in (work / "proposals.jsonl").read_text().splitlines()]
    assert {p["id"]: p["rmt"] for p in proposals} == {i: truth[i] for i in items}
    assert {p["rmt"] for p in proposals} == set(TAGS)  # all 7 tags covered
    evaluated = [sum(e["evaluated"] for e in p["ablation"]["results"]) for p in proposals]
    assert evaluated == [7] * 14 if search == "exhaustive" else max(evaluated) <= 7
    if search == "exhaustive":
        assert summary.model_calls == 14 * 7 * 16
    else:
        assert summary.model_calls < 14 * 7 * 16 / 2


def test_propose_with_another_threshold_needs_no_model(annotated):
    work, items, truth = annotated
    settings = AblationSettings(model="table", samples=16, search="exhaustive", proposal=ProposalConfig(rule="threshold"))
    run_annotate(items.values(), work, TableBackend(items, truth), settings)
    _, strict = run_propose(work)
    _, lenient = run_propose(work, ProposalConfig(rule="threshold", tau=0.05, delta=1.0))  # chance passes: smaller tags
    assert strict != lenient
    assert sum(v for k, v in lenient.items() if k in ("V", "A", "S")) > sum(
        v for k, v in strict.items() if k in ("V", "A", "S"))


def test_annotate_resumes_without_recomputing_finished_subsets(annotated):
    work, items, truth = annotated
    settings = AblationSettings(model="table", samples=16, search="exhaustive")
    first = list(items.values())[:5]
    run_annotate(first, work, TableBackend(items, truth), settings)
    backend = TableBackend(items, truth)
    summary = run_annotate(items.values(), work, backend, settings)
    assert summary.resumed_subsets == 5 * 7
    assert backend.calls == 9 * 7 * 16  # only the 9 new items
    stored = read_results(WorkDir(work), settings.result_key)
    assert len(stored) == 14 and all(len(v) == 7 for v in stored.values())
    lines = (work / "ablation" / "results-000-of-001.jsonl").read_text().splitlines()
    assert len(lines) == 14 * 7  # no duplicates


def test_num_shards_split_the_items_and_propose_merges_them(annotated):
    work, items, truth = annotated
    settings = AblationSettings(model="table", samples=16)
    sizes = [run_annotate(items.values(), work, TableBackend(items, truth), settings, num_shards=3,
                          shard_index=k).items for k in range(3)]
    assert sum(sizes) == 14 and all(sizes)
    _, counts = run_propose(work)
    assert sum(counts[t] for t in TAGS) == 14


def test_score_answer_for_both_tasks():
    qa = Item("i", "v", "qa", "Q?", ("red", "green"), "green")
    assert score_answer(qa, "B") == 1.0 and score_answer(qa, "A") == 0.0 and score_answer(qa, "?") == 0.0
    cap = Item("c", "v", "caption", "Describe.", None, "a red circle")
    assert score_answer(cap, "a red circle") == 1.0


def test_evaluate_item_logprob_uses_one_forward_pass_per_subset(annotated):
    work, items, truth = annotated
    item = next(iter(items.values()))
    media = load_media(work)[item.video_id]

    class Probs(TableBackend):
        def option_probs(self, prompts, options):
            self.calls += len(prompts)
            return [[1.0 / len(o)] * len(o) for o in options]

    backend = Probs(items, truth)
    results, calls = evaluate_item(item, media, backend, AblationSettings(model="p", scoring="logprob",
                                                                          search="exhaustive"))
    assert calls == backend.calls == 7 and all(r.scores == [0.25] for r in results.values())
