"""Losses, zero-variance filtering, MSSR tracker, adaptive weights, sampler, mixture."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from maple_data.rmt import TAGS
from maple_rl.algorithms.filtering import refill, zero_variance_mask
from maple_rl.algorithms.losses import AGGREGATIONS, kl_k1, kl_k2, kl_k3, policy_loss, ppo_token_loss
from maple_rl.algorithms.mixture import best_mixture, features, fit_surrogate, pilot_design, project_simplex
from maple_rl.algorithms.mssr import AdaptiveRho, BetaTracker, entropy_shaped_advantages, token_entropy
from maple_rl.algorithms.weighting import AdaptiveWeights, clamp_mean_one, difficulty, target_distribution
from maple_rl.training.config import AlgoConfig, SamplingConfig, WeightsConfig
from maple_rl.training.sampler import StratifiedSampler


def test_ppo_clip_asymmetric_and_dual_by_hand():
    logp = torch.log(torch.tensor([[1.5, 0.5, 0.7, 5.0]]))  # old_logp = 0 -> ratio = (1.5, .5, .7, 5)
    old = torch.zeros(1, 4)
    adv = torch.tensor([[1.0, 1.0, -1.0, -1.0]])
    loss, _ = ppo_token_loss(logp, old, adv, 0.2, 0.28, None)
    # A>0, rho 1.5: -min(1.5, 1.28) = -1.28 ; A>0, rho .5: -min(.5, .8) = -.5
    # A<0, rho .7: -min(-.7, -.8) = .8 ; A<0, rho 5: -min(-5, -1.28) = 5
    assert torch.allclose(loss, torch.tensor([[-1.28, -0.5, 0.8, 5.0]]))
    dual, _ = ppo_token_loss(logp, old, adv, 0.2, 0.28, 3.0)  # A<0 loss capped at -c*A = 3
    assert torch.allclose(dual, torch.tensor([[-1.28, -0.5, 0.8, 3.0]]))


def test_aggregations_by_hand():
    loss = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    rows = torch.tensor([True, True])
    assert AGGREGATIONS.get("token-mean")(loss, mask, rows, 3) == pytest.approx(10 / 4)
    assert AGGREGATIONS.get("seq-mean-token-mean")(loss, mask, rows, 3) == pytest.approx((2 + 4) / 2)
    assert AGGREGATIONS.get("seq-mean-token-sum")(loss, mask, rows, 3) == pytest.approx((6 + 4) / 2)
    assert AGGREGATIONS.get("seq-mean-token-sum-norm")(loss, mask, rows, 8) == pytest.approx((6 / 8 + 4 / 8) / 2)


def test_stratum_weighted_average_by_hand():
    # ratio 1 everywhere: token loss = -A. rows: A = 1, 3 (stratum 0), 2 (stratum 5)
    logp = torch.zeros(3, 2)
    mask = torch.ones(3, 2)
    adv = torch.tensor([1.0, 3.0, 2.0])
    strata = torch.tensor([0, 0, 5])
    cfg = AlgoConfig(aggregation="seq-mean-token-mean")
    plain, _ = policy_loss(logp, logp, adv, mask, cfg)
    assert plain.item() == pytest.approx(-2.0)  # (-1 - 3 - 2) / 3
    equal, m = policy_loss(logp, logp, adv, mask, cfg, strata=strata)
    assert equal.item() == pytest.approx((-2.0 + -2.0) / 2)  # stratum means -2 and -2
    weights = torch.ones(7)
    weights[5] = 3.0
    adv2 = torch.tensor([1.0, 3.0, 4.0])
    weighted, m = policy_loss(logp, logp, adv2, mask, cfg, strata=strata, stratum_weights=weights)
    assert weighted.item() == pytest.approx((1 * -2.0 + 3 * -4.0) / 4)
    assert m["loss/stratum_5"] == pytest.approx(-4.0)
    no_avg, _ = policy_loss(logp, logp, adv2, mask, AlgoConfig(stratum_average=False), strata=strata,
                            stratum_weights=weights)
    assert no_avg.item() == pytest.approx((-1 - 3 - 3 * 4) / 3 / (5 / 3))  # weights (1,1,3), mean 5/3


def test_kl_estimators_and_metrics():
    logp, ref = torch.tensor([[-1.0, -2.0]]), torch.tensor([[-1.5, -1.0]])
    assert torch.allclose(kl_k1(logp, ref), torch.tensor([[0.5, -1.0]]))
    assert torch.allclose(kl_k2(logp, ref), torch.tensor([[0.125, 0.5]]))
    assert torch.allclose(kl_k3(logp, ref), torch.tensor([[math.exp(-0.5) + 0.5 - 1, math.exp(1.0) - 1 - 1]]))
    old = torch.zeros(1, 4)
    new = torch.log(torch.tensor([[1.5, 0.5, 0.7, 1.0]]))
    adv = torch.tensor([1.0])
    _, m = policy_loss(new, old, adv, torch.ones(1, 4), AlgoConfig(), entropy=torch.full((1, 4), 2.0))
    assert m["clipfrac_high"] == pytest.approx(0.25) and m["clipfrac_low"] == 0.0  # only A>0 here
    assert m["entropy"] == pytest.approx(2.0)
    assert m["approx_kl"] == pytest.approx(float(-new.mean()))
    loss_kl, mk = policy_loss(new, new, torch.zeros(1), torch.ones(1, 4), AlgoConfig(kl_coef=0.1),
                              ref_logp=new - 1.0)
    assert mk["kl_ref"] == pytest.approx(math.exp(-1) + 1 - 1) and loss_kl.item() == pytest.approx(0.1 * math.exp(-1))


def test_kl_penalty_gradient_is_the_policy_gradient_plus_the_kl_gradient_by_hand():
    """token-mean, on-policy (ratio 1, no clipping): dL/dlogp_t = (-A_i + beta (1 -
    exp(ref_t - logp_t))) * mask_t / sum(mask) for k3; for k1 the KL part is beta."""
    torch.manual_seed(0)
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    adv = torch.tensor([0.7, -1.2])
    ref = torch.randn(2, 3) - 1.0
    for estimator, kl_grad in (("k3", lambda lp: 1 - torch.exp(ref - lp)), ("k1", lambda lp: torch.ones_like(lp))):
        logp = (torch.randn(2, 3) - 1.0).requires_grad_()
        loss, _ = policy_loss(logp, logp.detach(), adv, mask, AlgoConfig(kl_coef=0.3, kl_estimator=estimator,
                                                                        aggregation="token-mean"), ref_logp=ref)
        loss.backward()
        expected = (-adv[:, None] + 0.3 * kl_grad(logp.detach())) * mask / mask.sum()
        torch.testing.assert_close(logp.grad, expected)


def test_zero_variance_and_refill():
    r = torch.tensor([1.0, 1.0, 0.0, 1.0, 0.0, 0.0])
    g = torch.tensor([0, 0, 1, 1, 2, 2])
    assert zero_variance_mask(r, g).tolist() == [True, True, False, False, True, True]
    # groups are (tag, rewards); each round replaces every flat group by a new one of its tag
    pools = iter([[("V", [1, 1]), ("VA", [1, 0]), ("S", [0, 0])], [("V", [0, 1]), ("S", [1, 0])]])
    asked: list[list[str]] = []

    def draw(tags):
        asked.append(tags)
        return next(pools) if tags else None  # None: nothing needed, stop

    groups = [("V", [1, 1]), ("VA", [0, 0]), ("A", [0, 1]), ("S", [1, 1])]
    result = refill(groups, [t for t, _ in groups], draw, lambda grp: grp[1], max_rounds=3)
    assert asked == [["V", "VA", "S"], ["V", "S"], []]  # round 3 finds nothing flat
    assert result.groups == [("V", [0, 1]), ("VA", [1, 0]), ("A", [0, 1]), ("S", [1, 0])]
    assert (result.rounds, result.replaced, result.zero_variance) == (2, 5, 0)
    short = refill([("V", [1, 1])], ["V"], lambda tags: [("V", [0, 0])], lambda grp: grp[1], max_rounds=1)
    assert (short.rounds, short.replaced, short.zero_variance) == (1, 1, 1)  # left flat, reported
    with pytest.raises(ValueError, match="draw returned 0 groups for 1 tags"):
        refill([("V", [1, 1])], ["V"], lambda tags: [], lambda grp: grp[1], max_rounds=1)
    with pytest.raises(ValueError, match="tags must give one RMT per group"):
        refill([("V", [1, 1])], [], draw, lambda grp: grp[1], max_rounds=1)


def test_beta_tracker_and_rho():
    rho = AdaptiveRho(target_kl=0.01, window=4)
    assert rho.rho == 0.96  # no history -> rho_max
    rho.observe(0.01)
    assert rho.rho == 0.875  # 2**-1 = .5 clamped to rho_min
    rho.load_state_dict({"history": [0.0005]})
    assert rho.rho == 0.96  # 2**-.05 = .966, clamped to rho_max
    rho.load_state_dict({"history": [0.001, 0.002]})
    assert rho.rho == pytest.approx(2 ** -0.15)  # mean KL .0015 -> .901, inside the bounds
    tracker = BetaTracker(AdaptiveRho(rho_min=0.875, rho_max=0.9))
    assert tracker.baseline("new") == 0.5
    tracker.init_prompt("p", 0.25)  # N0 = 8 -> (2, 6)
    assert tracker.params["p"] == (2.0, 6.0)
    tracker.update(["p"], [1.0])  # rho .9 (no KL yet): (1.8 + 1, 5.4 + 0)
    assert tracker.params["p"] == pytest.approx((2.8, 5.4))
    assert tracker.baseline("p") == pytest.approx(2.8 / 8.2)
    state = tracker.state_dict()
    other = BetaTracker()
    other.load_state_dict(state)
    assert other.baseline("p") == tracker.baseline("p")


def test_entropy_and_shaping():
    logits = torch.zeros(1, 1, 4)  # uniform over 4 -> entropy log 4
    assert token_entropy(logits).item() == pytest.approx(math.log(4))
    lp = torch.tensor([[math.log(0.5)]])
    assert token_entropy(logits, "sampled", lp).item() == pytest.approx(0.5 * math.log(2))
    shaped = entropy_shaped_advantages(torch.tensor([1.0, -0.1]), torch.tensor([[1.0, 0.1], [2.0, 2.0]]))
    # psi = min(.4 H, |A| / 2): row 0 -> min(.4, .5)=.4, min(.04, .5)=.04 ; row 1 -> min(.8, .05)=.05
    assert torch.allclose(shaped, torch.tensor([[1.4, 1.04], [-0.05, -0.05]]))


def test_difficulty_and_weights_by_hand():
    tgt = target_distribution(10)
    assert tgt.sum() == pytest.approx(1.0) and tgt[-1] == pytest.approx(1 - 0.9**100, rel=1e-9)
    # all rewards 1: histogram (0,..,0,n) smoothed -> easy: much lower difficulty than all 0
    assert difficulty([1.0] * 50) < difficulty([0.85] * 50) < difficulty([0.0] * 50)
    p = np.full(10, 1 / 10)
    assert difficulty([]) == pytest.approx(float(np.sum(p * np.log(p / tgt))))
    weights = AdaptiveWeights(WeightsConfig(warmup=2))
    weights.update(["V", "VAS"], [0.0, 1.0])
    assert set(weights.weights().values()) == {1.0}  # warm-up
    weights.update(["V", "VAS"], [0.0, 1.0])
    w = weights.weights()
    assert w["V"] > 1 > w["VAS"] and w["A"] == 1.0
    assert (w["V"] + w["VAS"]) / 2 == pytest.approx(1.0)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0.01, 50), min_size=1, max_size=7))
def test_clamped_weights_average_one_and_respect_bounds(raw):
    w = np.array(raw)
    out = clamp_mean_one(len(w) * w / w.sum(), 0.25, 4.0)
    assert out.mean() == pytest.approx(1.0, abs=1e-9) and out.min() >= 0.25 and out.max() <= 4.0


TAGS_DATA = [t for t in TAGS for _ in range(6)] + ["VAS"] * 10


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 20), st.integers(0, 50), st.sampled_from(["none", "static", "dynamic"]))
def test_sampler_quotas_and_resume(batch_size, cut, curriculum):
    cfg = SamplingConfig(batch_size=batch_size, curriculum=curriculum)
    a = StratifiedSampler(TAGS_DATA, cfg, total_steps=60, seed=7)
    a.set_weights({"V": 2.0})
    for _ in range(cut):
        a.next_batch()
    state = a.state_dict()
    expected = [a.next_batch() for _ in range(5)]
    b = StratifiedSampler(TAGS_DATA, cfg, total_steps=60, seed=7)
    b.load_state_dict(state)
    assert [b.next_batch() for _ in range(5)] == expected
    probs = a.probabilities()
    batch = a.next_batch()
    assert len(batch) == batch_size
    for tag, p in probs.items():  # quota within one of its (carried) expectation
        n = sum(TAGS_DATA[i] == tag for i in batch)
        assert abs(n - p * batch_size) < 2.0 + 1e-9


def test_sampler_modes_and_static_stages():
    homo = StratifiedSampler(TAGS_DATA, SamplingConfig(batch_size=8, batch_mode="homogeneous"))
    for _ in range(10):
        assert len({TAGS_DATA[i] for i in homo.next_batch()}) == 1
    static = StratifiedSampler(TAGS_DATA, SamplingConfig(batch_size=10, curriculum="static"), total_steps=9)
    assert [static.stage(s) for s in range(9)] == [1, 1, 1, 2, 2, 2, 3, 3, 3]
    first = static.next_batch()
    assert {len(TAGS_DATA[i]) for i in first} == {1}
    static.step = 4
    p = static.probabilities()
    assert p["VAS"] == 0 and sum(p[t] for t in ("V", "A", "S")) == pytest.approx(0.2)
    with pytest.raises(ValueError, match="total_steps"):
        StratifiedSampler(TAGS_DATA, SamplingConfig(curriculum="static"))


def test_mixture_design_fit_and_optimum():
    design = pilot_design(3)
    assert design.shape == (7, 3) and np.allclose(design.sum(1), 1)
    assert np.allclose(design[3], [0, 0.5, 0.5]) and np.allclose(design[6], [1 / 3] * 3)
    assert features(np.array([0.2, 0.3, 0.5])).tolist()[0] == pytest.approx(
        [1, 0.2, 0.3, 0.5, 0.04, 0.06, 0.1, 0.09, 0.15, 0.25])
    rng = np.random.default_rng(0)
    w = np.vstack([design, rng.dirichlet(np.ones(3), 12)])
    y = 1 - ((w - [0.6, 0.1, 0.3]) ** 2).sum(1)
    fit = fit_surrogate(w, y)
    assert fit.heldout_r2 > 0.999
    best, score = best_mixture(fit, w)
    assert np.allclose(best, [0.6, 0.1, 0.3], atol=1e-3) and score == pytest.approx(1.0, abs=1e-6)
    assert np.allclose(project_simplex(np.array([2.0, 0.0, -1.0])), [1, 0, 0])
    with pytest.raises(ValueError, match="pilot row 2"):
        fit_surrogate(np.array([[0.5, 0.5], [0.9, 0.3]] * 3), np.ones(6))
