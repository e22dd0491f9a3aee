"""Advantage estimators against hand-worked values, plus invariants (hypothesis)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from maple_rl.algorithms.advantages import ADVANTAGE_ESTIMATORS, compute_advantages

EPS = 1e-6
# two groups of G = 4: group 0 rewards (1, 0, 0, 1), group 1 (1, 1, 1, 0)
R = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.0])
GID = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])


def close(a, b, tol=1e-5):
    assert torch.allclose(torch.as_tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64), atol=tol), (a, b)


def test_grpo_population_and_unbiased():
    # group 0: mean 0.5, population std 0.5 -> +-1 ; group 1: mean .75, pop std sqrt(.1875)=.4330
    s1 = math.sqrt(0.1875)
    close(compute_advantages("grpo", R, GID),
          [0.5 / (0.5 + EPS), -0.5 / (0.5 + EPS), -0.5 / (0.5 + EPS), 0.5 / (0.5 + EPS),
           0.25 / (s1 + EPS), 0.25 / (s1 + EPS), 0.25 / (s1 + EPS), -0.75 / (s1 + EPS)])
    # unbiased: group 0 var = 4*.25/3 = 1/3 -> std .57735 ; group 1 var = .75/3 = .25 -> std .5
    adv = compute_advantages("grpo", R, GID, std="unbiased")
    close(adv[:2], [0.5 / (math.sqrt(1 / 3) + EPS), -0.5 / (math.sqrt(1 / 3) + EPS)])
    close(adv[4:], [0.5, 0.5, 0.5, -1.5], tol=1e-4)


def test_grpo_equals_verl_formula_with_unbiased_std():
    torch.manual_seed(0)
    r = torch.rand(24)
    g = torch.arange(24) // 6
    verl = torch.cat([(r[g == k] - r[g == k].mean()) / (r[g == k].std() + EPS) for k in range(4)])
    close(compute_advantages("grpo", r, g, std="unbiased"), verl.tolist())


def test_dr_grpo_rloo_batch():
    close(compute_advantages("dr_grpo", R, GID), [0.5, -0.5, -0.5, 0.5, 0.25, 0.25, 0.25, -0.75])
    # rloo: G/(G-1) * (r - mean) = 4/3 * ...
    close(compute_advantages("rloo", R, GID), [2 / 3, -2 / 3, -2 / 3, 2 / 3, 1 / 3, 1 / 3, 1 / 3, -1.0])
    # batch: batch mean .625, population var = .625 * .375 = .234375 -> std .484123
    sd = math.sqrt(0.234375)
    close(compute_advantages("batch", R, GID), [x / (sd + EPS) for x in [0.5, -0.5, -0.5, 0.5, 0.25, 0.25, 0.25, -0.75]])


def test_mapo_stratum_modes():
    strata = torch.tensor([0, 0, 0, 0, 6, 6, 6, 6])  # group 0 is a V stratum, group 1 VAS
    r = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.0])
    # one group per stratum: stratum mode == grpo
    close(compute_advantages("mapo", r, GID, strata, norm="stratum"), compute_advantages("grpo", r, GID).tolist())
    # two groups in one stratum: stratum mean over all 8 (0.625), pop std 0.484123
    same = torch.zeros(8, dtype=torch.long)
    sd = math.sqrt(0.234375)
    close(compute_advantages("mapo", r, GID, same, norm="stratum"),
          [(x - 0.625) / (sd + EPS) for x in r.tolist()])
    # group_then_stratum: centred (.5,-.5,-.5,.5,.25,.25,.25,-.75); pop std over all 8 = sqrt(.75/8 + ... )
    c = torch.tensor([0.5, -0.5, -0.5, 0.5, 0.25, 0.25, 0.25, -0.75], dtype=torch.float64)
    sdc = math.sqrt(float((c**2).mean()))  # mean is 0: (4*.25 + 3*.0625 + .5625)/8 = .21875
    assert abs(sdc - math.sqrt(0.21875)) < 1e-12
    close(compute_advantages("mapo", r, GID, same, norm="group_then_stratum"), (c / (sdc + EPS)).tolist())
    close(compute_advantages("mapo", r, GID, strata, norm="none"), c.tolist())
    with pytest.raises(ValueError, match="needs strata"):
        compute_advantages("mapo", r, GID, None, norm="stratum")


def test_mixed_advantage_hand_values():
    # group 0: p = .5 -> lambda = 0 -> GRPO with Bessel std
    # group 1: p = .75 -> lambda = 1 - 4*.75*.25 = .25; mu = .75, sigma (Bessel) = .5
    adv = compute_advantages("mixed", R, GID)
    close(adv[:4], compute_advantages("grpo", R, GID, std="unbiased")[:4].tolist())
    expect = [0.75 * 0.25 / (0.5 + EPS) + 0.25 * 0.25 / (0.75 + EPS)] * 3 + \
             [0.75 * -0.75 / (0.5 + EPS) + 0.25 * -0.75 / (0.75 + EPS)]
    close(adv[4:], expect)


def test_mixed_is_apd_at_certainty():
    # p in {0, 1}: lambda = 1 -> APD (r - mu)/(mu + eps); with binary rewards that is 0
    r = torch.tensor([0.5, 0.25, 0.0, 0.25])  # no reward reaches 1 -> p = 0 -> APD
    g = torch.zeros(4, dtype=torch.long)
    close(compute_advantages("mixed", r, g), [(x - 0.25) / (0.25 + EPS) for x in r.tolist()])


def test_mixed_success_rate_comes_from_the_correctness_reward():
    # rewards = correct + 0.1 * format; group 0: correct (1,1,0,0), format (1,1,1,0) -> p = .5, lambda = 0
    # group 1: correct (1,1,1,0), format all 1 -> p = .75, lambda = .25
    correct = torch.tensor([1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0])
    r = correct + 0.1 * torch.tensor([1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0])
    adv = compute_advantages("mixed", r, GID, successes=correct)
    # group 0: r (1.1, 1.1, .1, 0), mu .575, Bessel var (2 * .525^2 + .475^2 + .575^2) / 3 = 1.1075 / 3
    sd0 = math.sqrt(1.1075 / 3)
    close(adv[:4], [0.525 / (sd0 + EPS), 0.525 / (sd0 + EPS), -0.475 / (sd0 + EPS), -0.575 / (sd0 + EPS)])
    # group 1: r (1.1, 1.1, 1.1, .1), mu .85, Bessel std sqrt((3 * .0625 + .5625) / 3) = .5
    hi = 0.75 * 0.25 / (0.5 + EPS) + 0.25 * 0.25 / (0.85 + EPS)
    lo = 0.75 * -0.75 / (0.5 + EPS) + 0.25 * -0.75 / (0.85 + EPS)
    close(adv[4:], [hi, hi, hi, lo])
    close([hi, lo], [0.4485294, -1.3455882])
    # the old rule (success = reward exactly 1) saw p = 0 everywhere: pure APD (r - mu) / mu
    apd = [(x - 0.575) / 0.575 for x in r[:4].tolist()] + [(x - 0.85) / 0.85 for x in r[4:].tolist()]
    assert not torch.allclose(adv.double(), torch.tensor(apd, dtype=torch.float64), atol=0.1)
    close(compute_advantages("mixed", r, GID, successes=correct.bool()), adv.tolist())  # bool works alike
    # without successes the summed reward is thresholded: (.8, .6, .2, 0) >= .5 -> p = .5 -> GRPO
    shaped, g = torch.tensor([0.8, 0.6, 0.2, 0.0]), torch.zeros(4, dtype=torch.long)
    close(compute_advantages("mixed", shaped, g, success_threshold=0.5),
          compute_advantages("grpo", shaped, g, std="unbiased").tolist())
    with pytest.raises(ValueError, match="successes must have shape"):
        compute_advantages("mixed", r, GID, successes=correct[:4])


def test_mssr_global_normalisation():
    r = torch.tensor([1.0, 0.0, 1.0, 0.0])
    v = torch.tensor([0.5, 0.5, 0.75, 0.25])
    raw = [0.5, -0.5, 0.25, -0.25]  # mean 0, population var (.25+.25+.0625+.0625)/4 = .15625
    close(compute_advantages("mssr", r, None, baselines=v), [x / math.sqrt(0.15625) for x in raw])
    # all-equal raw advantages: var floored at 1e-6 -> zeros, not NaN
    close(compute_advantages("mssr", torch.ones(3), None, baselines=torch.zeros(3)), [0.0, 0.0, 0.0])


def test_edge_cases():
    with pytest.raises(ValueError, match="at least 2 rollouts per prompt"):
        compute_advantages("grpo", torch.tensor([1.0, 0.0, 1.0]), torch.tensor([0, 0, 1]))
    with pytest.raises(ValueError, match="reward of sample 2 is nan"):
        compute_advantages("grpo", torch.tensor([1.0, 0.0, float("nan"), 1.0]), torch.tensor([0, 0, 1, 1]))
    with pytest.raises(ValueError, match="reward of sample 0 is inf"):
        compute_advantages("mapo", torch.tensor([float("inf"), 0.0]), torch.tensor([0, 0]), torch.tensor([1, 1]))
    for name in ("grpo", "dr_grpo", "batch", "rloo", "mixed"):  # all equal -> all zero, finite
        adv = compute_advantages(name, torch.ones(4), torch.tensor([0, 0, 1, 1]))
        assert torch.equal(adv, torch.zeros(4)), name
    with pytest.raises(KeyError, match="unknown advantage estimator 'ppo'"):
        compute_advantages("ppo", R, GID)
    assert set(ADVANTAGE_ESTIMATORS.names()) == {"grpo", "dr_grpo", "batch", "rloo", "mapo", "mixed", "mssr",
                                                  "stratified"}


def test_group_of_one_names_group_ids():
    with pytest.raises(ValueError, match=r"at least 2 rollouts per prompt; group_ids \[1\] have 1"):
        compute_advantages("mixed", torch.tensor([1.0, 0.0, 1.0]), torch.tensor([0, 0, 1]))


def test_empty_batch_is_refused():
    none = torch.zeros(0, dtype=torch.long)
    for name, options in (("grpo", {}), ("mapo", {"norm": "stratum"}), ("mssr", {"baselines": torch.zeros(0)})):
        with pytest.raises(ValueError, match=r"rewards is empty \(N = 0\)"):
            compute_advantages(name, torch.zeros(0), none, none, **options)


def test_negative_strata_are_refused_whether_or_not_the_estimator_reads_them():
    strata = torch.tensor([0, 0, 0, 0, -1, -1, -1, -1])
    for norm in ("stratum", "group"):
        with pytest.raises(ValueError, match="strata must be non-negative RMT indices; sample 4 has -1"):
            compute_advantages("mapo", R, GID, strata, norm=norm)
    with pytest.raises(ValueError, match="strata must be non-negative"):
        ADVANTAGE_ESTIMATORS.get("mapo")(R, GID, strata, norm="group_then_stratum")


def test_ids_must_be_integers_of_the_rewards_shape():
    with pytest.raises(ValueError, match="strata must be an integer tensor, got dtype torch.float32"):
        compute_advantages("mapo", R, GID, GID.float(), norm="stratum")
    with pytest.raises(ValueError, match="group_ids must be an integer tensor, got dtype torch.float32"):
        compute_advantages("grpo", R, GID.float())
    with pytest.raises(ValueError, match=r"group_ids must have shape \(8,\), got \(4,\)"):
        compute_advantages("rloo", R, GID[:4])
    with pytest.raises(ValueError, match=r"strata must have shape \(8,\), got \(2,\)"):
        compute_advantages("grpo", R, GID, torch.tensor([0, 1]))


@st.composite
def stratified_batches(draw):
    n_groups = draw(st.integers(1, 8))
    g = draw(st.integers(2, 6))
    rewards = draw(st.lists(st.floats(0, 1, allow_nan=False), min_size=n_groups * g, max_size=n_groups * g))
    group_strata = draw(st.lists(st.integers(0, 6), min_size=n_groups, max_size=n_groups))
    gid = torch.arange(n_groups).repeat_interleave(g)
    return torch.tensor(rewards, dtype=torch.float64), gid, torch.tensor(group_strata)[gid]


@settings(max_examples=200, deadline=None)
@given(stratified_batches(), st.sampled_from(["group", "stratum", "group_then_stratum", "batch", "none"]))
def test_mapo_zero_mean_within_each_stratum(batch, norm):
    r, gid, strata = batch
    adv = compute_advantages("mapo", r, gid, strata, norm=norm)
    assert torch.isfinite(adv).all()
    for s in torch.unique(strata):
        assert abs(float(adv[strata == s].mean())) < 1e-6


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from([0.0, 1.0]), min_size=2, max_size=12).filter(lambda x: sum(x) * 2 == len(x)))
def test_mixed_equals_grpo_at_half_success(rewards):
    r = torch.tensor(rewards)
    g = torch.zeros(len(r), dtype=torch.long)
    close(compute_advantages("mixed", r, g), compute_advantages("grpo", r, g, std="unbiased").tolist())


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 6).flatmap(lambda half: st.tuples(
    st.lists(st.floats(0, 2, allow_nan=False), min_size=2 * half, max_size=2 * half),
    st.permutations([1.0] * half + [0.0] * half))))
def test_mixed_equals_grpo_when_half_are_correct_whatever_the_shaped_reward(batch):
    rewards, correct = batch
    r, g = torch.tensor(rewards, dtype=torch.float64), torch.zeros(len(rewards), dtype=torch.long)
    close(compute_advantages("mixed", r, g, successes=torch.tensor(correct)),
          compute_advantages("grpo", r, g, std="unbiased").tolist())
