"""policy_loss options (GSPO ratio, log-ratio clamp, entropy bonus, IS weights), TRL aggregation
names, argument checks, and the rollout-engine / trainer mismatch helpers."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from maple_rl.algorithms.losses import (
    AGGREGATIONS,
    logprob_mismatch,
    policy_loss,
    rollout_is_weights,
    seq_mean_token_mean,
    seq_mean_token_sum_norm,
    token_mean,
)
from maple_rl.training.config import AlgoConfig

MASK = torch.tensor([[1.0, 1.0], [1.0, 0.0]])


def test_gspo_sequence_ratio_value_gradient_and_clip_fraction_by_hand():
    # log ratios: row 0 (0.1, 0.3) -> log s_0 = 0.2; row 1 (-0.5, padding 9) -> log s_1 = -0.5
    old = torch.zeros(2, 2, dtype=torch.float64)
    logp = torch.tensor([[0.1, 0.3], [-0.5, 9.0]], dtype=torch.float64, requires_grad=True)
    adv = torch.tensor([1.0, -1.0], dtype=torch.float64)
    cfg = AlgoConfig(ratio_level="sequence", aggregation="seq-mean-token-mean")
    loss, m = policy_loss(logp, old, adv, MASK.double(), cfg)
    s0 = math.exp(0.2)  # 1.2214 < 1.28: unclipped, token loss -s0
    # row 1: A<0, s1 = e^-0.5 = 0.607 < 0.8: -min(-0.607, -0.8) = 0.8 (clipped, no gradient)
    assert loss.item() == pytest.approx((-s0 + 0.8) / 2)
    loss.backward()
    # d/dlogp_0t of (1/2 rows)(1/2 tokens)(-s0 exp(logp_t - sg logp_t)) = -s0 / 4; row 1 clipped; padding 0
    torch.testing.assert_close(logp.grad, torch.tensor([[-s0 / 4, -s0 / 4], [0.0, 0.0]], dtype=torch.float64))
    # sequences, not tokens: 1 of 2 sequences clipped low (tokens would give 1 of 3); token 0.3 alone would be high
    assert m["clipfrac_low"] == pytest.approx(0.5) and m["clipfrac_high"] == 0.0
    token_loss, tm = policy_loss(logp.detach(), old, adv, MASK.double(), AlgoConfig(aggregation="seq-mean-token-mean"))
    # token level: row 0 ratios e^.1 = 1.105 and e^.3 = 1.35 -> clipped to 1.28; row 1: 0.8
    assert token_loss.item() == pytest.approx((-(math.exp(0.1) + 1.28) / 2 + 0.8) / 2)
    assert tm["clipfrac_low"] == pytest.approx(1 / 3) and tm["clipfrac_high"] == pytest.approx(1 / 3)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 4), st.integers(1, 5), st.sampled_from(["token-mean", "seq-mean-token-mean",
                                                              "seq-mean-token-sum", "seq-mean-token-sum-norm"]),
       st.integers(0, 2**31 - 1))
def test_gspo_token_matches_the_broadcast_sequence_ratio_for_sequence_advantages(b, t, aggregation, seed):
    """TRL's sequence level: coef_i = exp(mean_t log ratio) broadcast over tokens, gradient through
    the mean. With one A per sequence, GSPO-token has the same loss and gradient."""
    g = torch.Generator().manual_seed(seed)
    logp = (0.3 * torch.randn(b, t, generator=g, dtype=torch.float64)).requires_grad_()
    old = 0.3 * torch.randn(b, t, generator=g, dtype=torch.float64)
    mask = (torch.rand(b, t, generator=g) < 0.7).double()
    mask[0, 0] = 1.0
    adv = torch.randn(b, generator=g, dtype=torch.float64)
    cfg = AlgoConfig(ratio_level="sequence", aggregation=aggregation)
    ours, _ = policy_loss(logp, old, adv, mask, cfg)
    (grad,) = torch.autograd.grad(ours, logp)
    coef = torch.exp(((logp - old) * mask).sum(-1, keepdim=True) / mask.sum(-1, keepdim=True).clamp(min=1))
    a = adv[:, None]
    per_token = torch.maximum(-a * coef, -a * coef.clamp(0.8, 1.28)).expand(b, t)
    reference = AGGREGATIONS.get(aggregation)(per_token, mask, torch.ones(b, dtype=torch.bool), t)
    (ref_grad,) = torch.autograd.grad(reference, logp)
    torch.testing.assert_close(ours, reference)
    torch.testing.assert_close(grad, ref_grad)


@pytest.mark.parametrize("level", ["token", "sequence"])
@pytest.mark.parametrize("dual_clip", [None, 3.0])
def test_float32_log_ratios_of_100_give_a_finite_loss_and_gradient(level, dual_clip):
    logp = torch.tensor([[100.0, -100.0], [100.0, 100.0]], requires_grad=True)
    old = torch.zeros(2, 2)
    for adv in (torch.tensor([1.0, 1.0]), torch.tensor([-1.0, -1.0])):
        cfg = AlgoConfig(ratio_level=level, dual_clip=dual_clip, aggregation="token-mean")
        loss, _ = policy_loss(logp, old, adv, torch.ones(2, 2), cfg)
        (grad,) = torch.autograd.grad(loss, logp)
        assert torch.isfinite(loss) and torch.isfinite(grad).all()
    # token level, A = -1, no dual clip: ratios clamp to e^20, e^-20, e^20, e^20:
    # losses e^20, -min(-e^-20, -0.8) = 0.8, e^20, e^20 -> token mean (3 e^20 + 0.8) / 4
    if level == "token" and dual_clip is None:
        assert loss.item() == pytest.approx((3 * math.exp(20) + 0.8) / 4, rel=1e-6)


def test_entropy_bonus_is_aggregated_and_stratum_weighted_like_the_loss_by_hand():
    logp = torch.zeros(2, 2)  # ratio 1: surrogate -A per token
    adv = torch.tensor([1.0, -2.0])
    entropy = torch.tensor([[1.0, 3.0], [2.0, 99.0]], requires_grad=True)  # 99 is padding
    cfg = AlgoConfig(entropy_coef=0.1, aggregation="seq-mean-token-mean")
    loss, m = policy_loss(logp, logp, adv, MASK, cfg, entropy=entropy)
    # surrogate (-1 + 2) / 2 = 0.5; entropy per sequence (1+3)/2 = 2 and 2 -> 2; 0.5 - 0.1 * 2
    assert loss.item() == pytest.approx(0.3) and m["entropy"] == pytest.approx(2.0)
    (grad,) = torch.autograd.grad(loss, entropy)  # -0.1 / (2 rows * 2 tokens) on row 0, -0.1 / 2 on row 1
    torch.testing.assert_close(grad, torch.tensor([[-0.025, -0.025], [-0.05, 0.0]]))
    tok, _ = policy_loss(logp, logp, adv, MASK, AlgoConfig(entropy_coef=0.1, aggregation="token-mean"),
                         entropy=entropy)
    assert tok.item() == pytest.approx((-1 - 1 + 2) / 3 - 0.1 * (1 + 3 + 2) / 3)  # 0 - 0.2
    strat, m = policy_loss(logp, logp, adv, MASK, cfg, entropy=entropy, strata=torch.tensor([0, 1]),
                           stratum_weights=torch.tensor([1.0, 3.0]))
    # L_0 = -1 - 0.1 * 2 = -1.2 ; L_1 = 2 - 0.1 * 2 = 1.8 ; (1 * -1.2 + 3 * 1.8) / 4
    assert strat.item() == pytest.approx(1.05) and m["loss/stratum_1"] == pytest.approx(1.8)
    with pytest.raises(ValueError, match="^entropy: required"):
        policy_loss(logp, logp, adv, MASK, cfg)


def test_trl_aggregation_names_resolve_to_the_same_functions():
    assert AGGREGATIONS.get("grpo") is seq_mean_token_mean
    assert AGGREGATIONS.get("dr_grpo") is seq_mean_token_sum_norm
    assert AGGREGATIONS.get("bnpo") is token_mean and AGGREGATIONS.get("dapo") is token_mean
    logp, adv = torch.zeros(2, 2), torch.tensor([1.0, -2.0])
    # dapo = token mean of -A: (-1 - 1 + 2) / 3 ; dr_grpo: (-2 / 4 + 2 / 4) / 2 with horizon 4
    assert policy_loss(logp, logp, adv, MASK, AlgoConfig(aggregation="dapo"))[0].item() == pytest.approx(0.0)
    assert policy_loss(logp, logp, adv, MASK, AlgoConfig(aggregation="dr_grpo"), horizon=4)[0].item() == 0.0
    assert policy_loss(logp, logp, adv, MASK, AlgoConfig(aggregation="grpo"))[0].item() == pytest.approx(0.5)


def test_is_weights_scale_the_surrogate_only_by_hand():
    logp = torch.zeros(2, 2, requires_grad=True)
    adv = torch.tensor([1.0, -2.0])
    w = torch.tensor([[0.5, 2.0], [1.5, 7.0]], requires_grad=True)  # 7 is padding
    cfg = AlgoConfig(aggregation="seq-mean-token-mean", kl_coef=0.1)
    loss, m = policy_loss(logp, logp.detach(), adv, MASK, cfg, is_weights=w, ref_logp=logp.detach() - 1.0)
    # surrogate: row 0 (-0.5 - 2) / 2 = -1.25, row 1 2 * 1.5 = 3 -> 0.875; k3 KL e^-1 per token, unweighted
    assert loss.item() == pytest.approx(0.875 + 0.1 * math.exp(-1))
    assert m["is_weight_mean"] == pytest.approx((0.5 + 2 + 1.5) / 3)
    loss.backward()
    # token weights of seq-mean-token-mean: 1/4 on row 0, 1/2 on row 1; d(-A w rho)/dlogp = -A w;
    # d k3/dlogp = 1 - e^-1 (times 0.1, not times w)
    kl = 0.1 * (1 - math.exp(-1))
    expected = torch.tensor([[(-0.5 + kl) / 4, (-2.0 + kl) / 4], [(3.0 + kl) / 2, 0.0]])
    torch.testing.assert_close(logp.grad, expected)
    assert w.grad is None  # detached


def test_logprob_mismatch_by_hand():
    trainer = torch.tensor([[-1.0, -2.0, -3.0, 100.0]])
    rollout = torch.tensor([[-1.0, -3.0, -2.0, -100.0]])  # last token is padding
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    m = logprob_mismatch(trainer, rollout, mask)
    # |diff| (0, 1, 1) -> 2/3 ; centred x (1, 0, -1), y (1, -1, 0): 1 / sqrt(2 * 2) = 0.5
    assert m == pytest.approx({"logprob_abs_diff": 2 / 3, "logprob_pearson": 0.5})
    const = torch.full((1, 4), -0.1)
    assert logprob_mismatch(const, const, mask)["logprob_pearson"] == 1.0  # constant and equal
    assert logprob_mismatch(const, rollout, mask)["logprob_pearson"] == 0.0  # one side constant: undefined -> 0
    assert logprob_mismatch(const, const - 1, mask) == {"logprob_abs_diff": pytest.approx(1.0),
                                                        "logprob_pearson": 0.0}  # both constant, unequal
    with pytest.raises(ValueError, match="mask selects no token"):
        logprob_mismatch(trainer, rollout, torch.zeros(1, 4))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-20, 0, width=32), min_size=2, max_size=12), st.floats(0.1, 5), st.floats(-3, 3))
def test_logprob_pearson_is_bounded_symmetric_and_affine_invariant(xs, scale, shift):
    x = torch.tensor([xs])
    y = scale * x + shift
    mask = torch.ones_like(x)
    r = logprob_mismatch(x, y, mask)["logprob_pearson"]
    assert math.isfinite(r) and -1 <= r <= 1
    if max(xs) - min(xs) > 0.1:
        assert r == pytest.approx(1.0, abs=1e-6)
    z = torch.flip(x, [-1])
    assert logprob_mismatch(x, z, mask)["logprob_pearson"] == pytest.approx(
        logprob_mismatch(z, x, mask)["logprob_pearson"], abs=1e-12)


def test_rollout_is_weights_by_hand():
    old = torch.zeros(4, 3, requires_grad=True)
    rollout = torch.tensor([[-1.0, 0.5, 0.0], [0.2, 0.3, 5.0], [1.0, 0.0, 0.0], [-1.0, -0.5, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0], [1.0, 1.0, 1.0], [1.0, 1.0, 1.0]])
    # old - rollout: (1, -.5, 0), (-.2, -.3, pad), (-1, 0, 0), (1, .5, 0)
    tok = rollout_is_weights(old, rollout, mask, "token_truncate", 2.0)
    e = math.exp
    expected = torch.tensor([[2.0, e(-0.5), 1.0], [e(-0.2), e(-0.3), 0.0], [e(-1), 1.0, 1.0], [2.0, e(0.5), 1.0]])
    torch.testing.assert_close(tok, expected)  # e^1 and e^1 capped at 2; padding 0
    assert not tok.requires_grad
    seq = rollout_is_weights(old, rollout, mask, "sequence_mask", 2.0)
    # sequence ratios e^.5 = 1.65 (kept), e^-.5 = 0.61 (kept, >= 1/2), e^-1 = 0.37 (< 1/2), e^1.5 = 4.5 (> 2)
    torch.testing.assert_close(seq, torch.tensor([[1.0, 1, 1], [1, 1, 0], [0, 0, 0], [0, 0, 0]]))
    with pytest.raises(ValueError, match="^threshold"):
        rollout_is_weights(old, rollout, mask, "token_truncate", 0.5)
    with pytest.raises(ValueError, match="^mode"):
        rollout_is_weights(old, rollout, mask, "sequence_truncate", 2.0)  # type: ignore[arg-type]


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 4), st.integers(1, 6), st.floats(1.0, 10.0), st.integers(0, 2**31 - 1))
def test_rollout_is_weights_bounds(b, t, threshold, seed):
    g = torch.Generator().manual_seed(seed)
    old, rollout = torch.randn(b, t, generator=g), torch.randn(b, t, generator=g)
    mask = (torch.rand(b, t, generator=g) < 0.7).float()
    mask[0, 0] = 1.0
    tok = rollout_is_weights(old, rollout, mask, "token_truncate", threshold)
    assert (tok >= 0).all() and (tok <= threshold * (1 + 1e-6)).all() and (tok[mask == 0] == 0).all()
    seq = rollout_is_weights(old, rollout, mask, "sequence_mask", threshold)
    assert ((seq == 0) | (seq == mask)).all() and (seq.amax(-1, keepdim=True) * mask == seq).all()
    for mode in ("token_truncate", "sequence_mask"):  # on-policy: every token keeps weight 1
        assert torch.equal(rollout_is_weights(old, old, mask, mode, threshold), mask)


BAD_ARGS = [
    ({"mask": torch.ones(2, 1)}, "^mask:"),
    ({"mask": torch.zeros(2, 2)}, "mask selects no token"),
    ({"logp": torch.zeros(0, 2), "old_logp": torch.zeros(0, 2), "mask": torch.zeros(0, 2),
      "advantages": torch.zeros(0)}, "mask selects no token"),
    ({"old_logp": torch.zeros(2, 3)}, "^old_logp:"),
    ({"ref_logp": torch.zeros(2)}, "^ref_logp:"),
    ({"entropy": torch.zeros(1, 2)}, "^entropy:"),
    ({"is_weights": torch.zeros(2, 1)}, "^is_weights:"),
    ({"advantages": torch.zeros(2, 1)}, "^advantages:"),
    ({"advantages": torch.zeros(3)}, "^advantages:"),
    ({"strata": torch.tensor([0, -1])}, "^strata:"),
    ({"strata": torch.tensor([[0], [1]])}, "^strata:"),
    ({"strata": torch.tensor([0.0, 1.0])}, "^strata:"),
    ({"strata": torch.tensor([0, 1]), "stratum_weights": torch.tensor([1.0, -0.5])}, "^stratum_weights:"),
    ({"strata": torch.tensor([0, 1]), "stratum_weights": torch.tensor([0.0, 0.0, 5.0])}, "^stratum_weights:"),
    ({"strata": torch.tensor([0, 5]), "stratum_weights": torch.ones(3)}, "^stratum_weights:"),
    ({"strata": torch.tensor([0, 1]), "stratum_weights": torch.ones(2, 1)}, "^stratum_weights:"),
    ({"logp": torch.zeros(2), "old_logp": torch.zeros(2), "mask": torch.ones(2)}, "^logp:"),
]


@pytest.mark.parametrize(("override", "match"), BAD_ARGS)
def test_policy_loss_refuses_bad_arguments_naming_them(override, match):
    args = {"logp": torch.zeros(2, 2), "old_logp": torch.zeros(2, 2), "advantages": torch.ones(2),
            "mask": torch.ones(2, 2)} | override
    with pytest.raises(ValueError, match=match):
        policy_loss(args.pop("logp"), args.pop("old_logp"), args.pop("advantages"), args.pop("mask"), **args)


def test_a_zero_weight_on_one_present_stratum_is_accepted():
    # ratio 1, A = 1: both stratum losses -1; (0 * -1 + 1 * -1) / (0 + 1)
    ok, _ = policy_loss(torch.zeros(2, 2), torch.zeros(2, 2), torch.ones(2), torch.ones(2, 2),
                        strata=torch.tensor([0, 1]), stratum_weights=torch.tensor([0.0, 1.0]))
    assert ok.item() == pytest.approx(-1.0)
