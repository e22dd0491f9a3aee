"""The joint proposal rule and its adaptive search: the likelihood by hand, properties of the
posterior (sums to 1, noise-free evidence gives the true tag, consistent evidence never
lowers a tag's posterior), priors, captions and logprob levels, the search's budget and
resume, and `maple-data propose --rule`."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings, strategies as st
from typer.testing import CliRunner

from maple_data.annotate.ablation import AblationSettings, Item, item_likelihood, run_annotate
from maple_data.annotate.posterior import (
    UNANSWERABLE,
    Likelihood,
    columns,
    empirical_prior,
    hypotheses,
    log_beta_binomial,
    parse_prior,
    posterior,
    prior_vector,
)
from maple_data.annotate.proposal import ProposalConfig, propose, propose_joint
from maple_data.annotate.search import SubsetResult, reachable, run_search
from maple_data.cli import app
from maple_data.rmt import TAGS, is_subset, subsets
from maple_data.workdir import WorkDir
from tests.doubles import TableBackend

AVAILABLE = ["VAS", "VA", "VS", "AS", "V", "A", "S"]
JOINT = ProposalConfig(rule="joint")


def r(subset: str, correct: int, n: int) -> SubsetResult:
    return SubsetResult(subset, [1.0] * correct + [0.0] * (n - correct))


def noise_free(tag: str | None, available: str, n: int) -> dict[str, SubsetResult]:
    """Every subset of ``available`` answered n times: all correct where it holds ``tag``, all wrong elsewhere."""
    return {s: r(s, n if tag is not None and is_subset(tag, s) else 0, n) for s in subsets(available)}


# ---------------------------------------------------------------- the likelihood by hand


def test_worked_example_of_the_module_docstring():
    model = Likelihood.make(high=0.9, high_concentration=4, chance=0.25, chance_concentration=4)
    assert model.hold == pytest.approx((3.6, 0.4)) and model.chance == pytest.approx((1.0, 3.0))
    # m(2, 2 | 3.6, 0.4) = (3.6 / 4)(4.6 / 5) = 0.828; m(2, 2 | 1, 3) = (1 / 4)(2 / 5) = 0.1
    assert math.exp(log_beta_binomial(2, 2, 3.6, 0.4)) == pytest.approx(0.828)
    assert math.exp(log_beta_binomial(2, 2, 1.0, 3.0)) == pytest.approx(0.1)
    post = posterior({"V": (2.0, 2)}, "V", model)
    assert post == pytest.approx({"V": 0.828 / 0.928, UNANSWERABLE: 0.1 / 0.928})
    assert post["V"] == pytest.approx(0.8922, abs=5e-5)


def test_four_hypotheses_by_hand_with_and_without_contamination():
    model = Likelihood.make(0.9, 4, 0.25, 4)
    # available VS: V answered 1/1 (hold .9, chance .25), S answered 0/1 (hold .1, chance .75)
    # V: .9 * .75 = .675; S: .25 * .1 = .025; VS: .25 * .75 = .1875; unanswerable: .1875; sum 1.075
    post = posterior({"V": (1.0, 1), "S": (0.0, 1)}, "VS", model)
    assert post == pytest.approx({"V": .675 / 1.075, "S": .025 / 1.075, "VS": .1875 / 1.075,
                                  UNANSWERABLE: .1875 / 1.075})
    # contamination 0.2: L_hold(V) = .8 * .9 + .2 * .25 = .77, L_chance(V) = .8 * .25 + .2 * .9 = .38,
    # L_hold(S) = .8 * .1 + .2 * .75 = .23, L_chance(S) = .8 * .75 + .2 * .1 = .62
    mixed = Likelihood.make(0.9, 4, 0.25, 4, contamination=0.2)
    joint = {"V": .77 * .62, "S": .38 * .23, "VS": .38 * .62, UNANSWERABLE: .38 * .62}
    total = sum(joint.values())
    assert posterior({"V": (1.0, 1), "S": (0.0, 1)}, "VS", mixed) == pytest.approx(
        {h: v / total for h, v in joint.items()})


def test_the_joint_rule_reads_every_subset_where_the_threshold_rule_reads_one():
    # the example: V fails tau by a hair, VA, VS, VAS pass, A, S, AS fail: the evidence says V
    results = {"V": r("V", 5, 8), "A": r("A", 2, 8), "S": r("S", 1, 8), "VA": r("VA", 8, 8), "VS": r("VS", 7, 8),
               "AS": r("AS", 2, 8), "VAS": r("VAS", 8, 8)}
    assert propose(results, "VAS", ProposalConfig(rule="threshold")).rmt == "VA"
    joint = propose(results, "VAS", JOINT)
    assert (joint.status, joint.rmt) == ("proposed", "V")
    assert joint.confidence == pytest.approx(joint.posterior["V"]) and sum(joint.posterior.values()) == pytest.approx(1)


def test_flags_status_and_incomplete():
    assert propose_joint({}, "VAS", JOINT).status == "incomplete"
    p = propose_joint(noise_free(None, "VAS", 8), "VAS", JOINT)
    assert (p.status, p.rmt, p.flags) == ("unanswerable", None, ())
    # one answer each: VA vs VAS rests on a single answer of VA -> the runner-up is close (no low-k: the
    # posterior weighs the number of answers already)
    p = propose_joint(noise_free("VA", "VAS", 1), "VAS", JOINT)
    assert (p.rmt, p.flags) == ("VA", ("close",))
    # V holds by its own evidence, VA (which contains it) fails by its own: non-monotone
    results = noise_free("V", "VAS", 8) | {"VA": r("VA", 0, 8)}
    assert "non-monotone" in propose_joint(results, "VAS", JOINT).flags
    assert "non-monotone" not in propose_joint(noise_free("V", "VAS", 8), "VAS", JOINT).flags


# ---------------------------------------------------------------- properties

counts_strategy = st.dictionaries(st.sampled_from(TAGS), st.integers(0, 24).flatmap(
    lambda n: st.tuples(st.integers(0, n), st.just(n))), max_size=7)


@st.composite
def models(draw) -> Likelihood:
    """Any likelihood ``Likelihood.make`` accepts: a_hold >= a_chance, b_hold <= b_chance, eps < 1/2."""
    high, chance, kh = draw(st.floats(0.55, 0.99)), draw(st.floats(0.05, 0.5)), draw(st.floats(0.5, 40))
    kc = draw(st.floats(kh * (1 - high) / (1 - chance), kh * high / chance))
    return Likelihood.make(high, kh, chance, kc, draw(st.floats(0, 0.45)))


@settings(max_examples=300, deadline=None)
@given(counts_strategy, st.sampled_from(AVAILABLE), models(), st.booleans())
def test_posterior_sums_to_one(raw, available, model, weighted):
    counts = {s: (float(k), n) for s, (k, n) in raw.items() if is_subset(s, available)}
    prior = {h: 1.0 + i for i, h in enumerate((*TAGS, UNANSWERABLE))} if weighted else None
    post = posterior(counts, available, model, prior)
    assert list(post) == list(hypotheses(available))
    assert sum(post.values()) == pytest.approx(1.0, abs=1e-9) and all(p >= 0 for p in post.values())


@settings(max_examples=200, deadline=None)
@given(st.sampled_from([*TAGS, None]), st.sampled_from(AVAILABLE), st.integers(1, 16), models())
def test_noise_free_evidence_gives_the_true_answer(tag, available, n, model):
    if tag is not None and not is_subset(tag, available):
        tag = None
    p = propose_joint(noise_free(tag, available, n), available, JOINT, likelihood=model)
    assert (p.rmt, p.status) == (tag, "proposed" if tag else "unanswerable")


@pytest.mark.parametrize("rule", ["joint", "threshold"])
@pytest.mark.parametrize("tag", TAGS)
def test_noise_free_answers_lead_the_adaptive_search_to_the_true_tag(tag, rule):
    def sample(chosen: list[str], n: int) -> list[list[tuple[float, str]]]:
        return [[(float(is_subset(tag, s)), "x")] * n for s in chosen]

    settings_ = AblationSettings(model="m", samples=8, proposal=ProposalConfig(rule=rule))
    results, drawn = run_search("VAS", settings_, sample)
    assert propose(results, "VAS", settings_.proposal).rmt == tag
    assert drawn < 56 / 2


@settings(max_examples=400, deadline=None)
@given(counts_strategy, st.sampled_from([*TAGS, UNANSWERABLE]), st.sampled_from(TAGS), models())
def test_evidence_consistent_with_a_tag_never_lowers_its_posterior(raw, tag, subset, model):
    counts = {s: (float(k), n) for s, (k, n) in raw.items()}
    before = posterior(counts, "VAS", model)[tag]
    k, n = counts.get(subset, (0.0, 0))
    consistent = tag != UNANSWERABLE and is_subset(tag, subset)  # a correct answer where it holds, wrong elsewhere
    after = posterior(counts | {subset: (k + consistent, n + 1)}, "VAS", model)[tag]
    assert after >= before * (1 - 1e-9)


def test_settings_that_would_break_monotonicity_are_refused():
    with pytest.raises(ValueError, match="raise the chance concentration"):
        ProposalConfig(high_concentration=100.0)  # Beta(90, 10) vs Beta(2.5, 7.5): b_hold > b_chance
    with pytest.raises(ValueError, match="contamination"):
        ProposalConfig(contamination=0.5)
    with pytest.raises(ValueError, match="rule must be"):
        ProposalConfig(rule="vote")


# ---------------------------------------------------------------- priors, captions, levels


def test_priors_parse_and_move_the_posterior():
    assert parse_prior("uniform") is None and parse_prior("empirical") == {}
    assert parse_prior("va=2, S=1,unanswerable=0.5") == {"VA": 2.0, "S": 1.0, UNANSWERABLE: 0.5}
    for bad in ("V", "V=x", "V=-1", "Q=1", "V=0"):
        with pytest.raises(ValueError):
            parse_prior(bad)
    results = noise_free("VA", "VAS", 1)
    flat = propose_joint(results, "VAS", JOINT)
    leaning = propose_joint(results, "VAS", ProposalConfig(prior="VAS=20,VA=1,V=1,A=1,S=1,VS=1,AS=1,unanswerable=1"))
    assert leaning.posterior["VAS"] > flat.posterior["VAS"]
    model = JOINT.likelihood(4)
    items = [({s: (float(k), 8) for s, k in zip(subsets("VAS"), row)}, "VAS", model)
             for row in ([8, 0, 0, 8, 8, 0, 8],) * 6 + ([0, 0, 8, 0, 8, 8, 8],) * 2]  # 6 x V, 2 x S
    mix = empirical_prior(items)
    assert sum(mix.values()) == pytest.approx(1) and mix["V"] == pytest.approx(7 / 16, abs=1e-3)
    assert mix["S"] == pytest.approx(3 / 16, abs=1e-3) and mix["VA"] == pytest.approx(1 / 16, abs=1e-3)


def test_caption_scores_and_logprob_levels_use_the_same_rule():
    config = JOINT
    caption = item_likelihood(config, "caption", None, "sample")
    assert caption.chance == pytest.approx((2.0, 8.0)) and not caption.level  # caption_chance 0.2, kc 10
    assert item_likelihood(config, "qa", ["a", "b"], "sample").chance == pytest.approx((5.0, 5.0))
    assert item_likelihood(config, "qa", ["a", "b", "c", "d"], "logprob").level
    # continuous caption similarities: k is their sum (fractional Beta-Binomial)
    sims = {s: SubsetResult(s, [0.9, 0.8, 1.0] if is_subset("AS", s) else [0.1, 0.0, 0.2]) for s in TAGS}
    assert propose(sims, "VAS", config, likelihood=caption).rmt == "AS"
    assert math.exp(log_beta_binomial(2.7, 3, 1, 1)) == pytest.approx(
        math.gamma(3.7) * math.gamma(1.3) / math.gamma(5))
    # logprob: one probability of the correct option per subset, read as the accuracy itself
    level = item_likelihood(config, "qa", ["a", "b", "c", "d"], "logprob")
    probs = {s: SubsetResult(s, [0.93 if is_subset("VS", s) else 0.22]) for s in TAGS}
    p = propose(probs, "VAS", config, likelihood=level)
    assert p.rmt == "VS" and p.confidence > 0.97


def test_logprob_levels_are_observed_once_per_subset():
    options = ("1", "2", "3", "4")

    def sample(chosen: list[str], n: int) -> list[list[tuple[float, str]]]:
        assert n == 1
        return [[(0.95 if is_subset("A", s) else 0.25, "")] for s in chosen]

    settings_ = AblationSettings(model="m", scoring="logprob", samples=1)
    level = item_likelihood(settings_.proposal, "qa", options, "logprob")
    results, drawn = run_search("VAS", settings_, sample, likelihood=level)
    assert all(x.n == 1 for x in results.values()) and drawn == len(results) <= 7
    assert propose(results, "VAS", settings_.proposal, likelihood=level).rmt == "A"


# ---------------------------------------------------------------- search: budget, journal, resume


@settings(max_examples=150, deadline=None)
@given(st.lists(st.lists(st.integers(0, 1), min_size=56, max_size=56), min_size=7, max_size=7),
       st.sampled_from(AVAILABLE), st.integers(1, 3), st.sampled_from([0.9, 0.97, 0.999]))
def test_joint_search_keeps_to_its_budget_and_reports_each_subset_once(bits, available, chunk, target):
    streams = {tag: [float(x) for x in b] for tag, b in zip(TAGS, bits)}
    taken = dict.fromkeys(TAGS, 0)

    def sample(chosen: list[str], n: int) -> list[list[tuple[float, str]]]:
        out = []
        for s in chosen:
            out.append([(x, str(x)) for x in streams[s][taken[s]:taken[s] + n]])
            taken[s] += n
        return out

    reported: list[str] = []
    config = AblationSettings(model="m", samples=8, chunk=chunk, proposal=ProposalConfig(target=target))
    results, drawn = run_search(available, config, sample, on_result=lambda res: reported.append(res.subset))
    budget = 8 * len(columns(available))
    assert drawn == sum(res.n for res in results.values()) == sum(taken.values()) <= budget
    assert sorted(reported) == sorted(results) and len(set(reported)) == len(reported)
    assert all(res.answers == [str(x) for x in res.scores] for res in results.values())
    model = config.proposal.likelihood(4)
    counts = {s: (sum(res.scores), res.n) for s, res in results.items()}
    out_of_reach = reachable(counts, available, model, dict.fromkeys(columns(available), budget - drawn),
                             prior_vector(available)).max() < target
    assert max(posterior(counts, available, model).values()) >= target or drawn == budget or out_of_reach


def test_joint_search_resumes_from_stored_results():
    tag = "VS"

    def sample(chosen: list[str], n: int) -> list[list[tuple[float, str]]]:
        return [[(float(is_subset(tag, s)), "x")] * n for s in chosen]

    config = AblationSettings(model="m", samples=8)
    full, drawn = run_search("VAS", config, sample)
    again, more = run_search("VAS", config, sample, done=full)
    assert more == 0 and {s: x.scores for s, x in again.items()} == {s: x.scores for s, x in full.items()}
    partial = {s: SubsetResult(s, x.scores[:1], x.answers[:1]) for s, x in full.items()}
    extended, extra = run_search("VAS", config, sample, done=partial)
    assert extra > 0 and propose(extended, "VAS", config.proposal).rmt == tag
    assert all(partial[s].n == 1 for s in partial)  # the caller's results are not modified


# ---------------------------------------------------------------- files and CLI


@pytest.fixture
def annotated_items(synth_corpus):
    from maple_data.inputs.qa import read_qa_file

    qa = read_qa_file(synth_corpus / "videos" / "qa.jsonl", synth_corpus / "videos")
    items = {q.id: Item.from_qa(q) for q in qa.items if q.task == "qa"}
    truth = {json.loads(line)["id"]: json.loads(line)["rmt"]
             for line in (synth_corpus / "ground_truth.jsonl").read_text().splitlines()}
    return items, truth


def test_propose_switches_rules_without_a_model_and_stores_the_posterior(synth_corpus, tmp_path, annotated_items):
    from maple_data.media.extract import ExtractSettings, run_extract
    from maple_data.media.frames import FrameSpec

    items, truth = annotated_items
    work = tmp_path / "work"
    run_extract(synth_corpus / "videos", work, ExtractSettings(frames=FrameSpec(count=2)))
    backend = TableBackend(items, truth)
    run_annotate(items.values(), work, backend, AblationSettings(model="table", samples=16, search="exhaustive",
                                                                 proposal=ProposalConfig(rule="threshold")))
    calls = backend.calls
    runner = CliRunner()
    for rule in ("joint", "threshold", "joint"):
        result = runner.invoke(app, ["propose", str(work), "--rule", rule, "--prior", "empirical"])
        assert result.exit_code == 0, result.output
        lines = [json.loads(x) for x in (work / "proposals.jsonl").read_text().splitlines()]
        assert {x["id"]: x["rmt"] for x in lines} == {i: truth[i] for i in items}
        assert {x["rule"] for x in lines} == {rule}
        for x in lines:
            assert sum(x["posterior"].values()) == pytest.approx(1, abs=1e-3)
            assert max(x["posterior"], key=x["posterior"].get) == x["rmt"]
            if rule == "joint":
                assert x["confidence"] == pytest.approx(x["posterior"][x["rmt"]], abs=1e-4)
    assert backend.calls == calls  # no model calls
    assert "warning" not in result.output  # exhaustive results serve every rule
    bad = runner.invoke(app, ["propose", str(work), "--rule", "vote"])
    assert bad.exit_code != 0 and "rule must be one of threshold, joint" in bad.output
    stored = WorkDir(work).read_ablation_settings()["proposal"]
    assert stored["rule"] == "threshold" and stored["target"] == ProposalConfig().target
    legacy = {k: stored[k] for k in ("tau", "delta", "min_samples")}  # settings written before the joint rule
    assert ProposalConfig.from_dict(legacy).rule == "threshold"


def test_annotate_with_the_joint_search_resumes_and_learns_the_mix(synth_corpus, tmp_path, annotated_items):
    from maple_data.annotate.ablation import read_results, run_propose
    from maple_data.media.extract import ExtractSettings, run_extract
    from maple_data.media.frames import FrameSpec

    items, truth = annotated_items
    work = tmp_path / "work"
    run_extract(synth_corpus / "videos", work, ExtractSettings(frames=FrameSpec(count=2)))
    settings_ = AblationSettings(model="table", samples=16, proposal=ProposalConfig(prior="empirical"))
    first = run_annotate(list(items.values())[:5], work, TableBackend(items, truth), settings_)
    backend = TableBackend(items, truth)
    summary = run_annotate(items.values(), work, backend, settings_)
    assert first.model_calls > 0 and summary.evaluated == 9  # the 5 finished items draw nothing more
    lines = [json.loads(x) for x in (work / "ablation" / "results-000-of-001.jsonl").read_text().splitlines()]
    stored = read_results(WorkDir(work), settings_.result_key)
    assert len(lines) == sum(len(v) for v in stored.values())  # one journal line per (item, subset)
    assert backend.calls + first.model_calls == sum(x.n for v in stored.values() for x in v.values())
    _, counts = run_propose(work)
    changed = CliRunner().invoke(app, ["propose", str(work), "--prior", "uniform"])
    assert "the adaptive search stopped early under other settings (prior: empirical -> uniform)" in " ".join(changed.output.split())
    assert "warning" not in CliRunner().invoke(app, ["propose", str(work)]).output
    run_propose(work)
    proposals = [json.loads(x) for x in (work / "proposals.jsonl").read_text().splitlines()]
    assert {p["id"]: p["rmt"] for p in proposals} == {i: truth[i] for i in items}
    assert sum(counts[t] for t in TAGS) == 14
