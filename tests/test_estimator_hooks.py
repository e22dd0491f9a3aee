"""Estimator hooks: what the trainer gives an estimator each step, and what it keeps."""

from __future__ import annotations

import pytest
import torch

from maple_rl.algorithms.advantages import compute_advantages
from maple_rl.algorithms.estimator_hooks import ESTIMATOR_HOOKS, EstimatorHook, MixedHook, MssrHook, hook_for


def test_hooks_are_chosen_by_estimator_name_and_default_to_the_stateless_one():
    assert type(hook_for("mssr")) is MssrHook and type(hook_for("mixed")) is MixedHook
    assert all(type(hook_for(name)) is EstimatorHook for name in ("grpo", "mapo", "rloo", "dr_grpo", "batch"))
    assert hook_for("mssr") is not hook_for("mssr")  # a new state per run
    plain = hook_for("grpo")
    plain.observe(["a"], [1.0], {"approx_kl": 0.1})
    assert plain.options(["a"], [{"correct": 1.0}]) == {} and plain.state_dict() == {}
    with pytest.raises(ValueError, match="already registered"):
        ESTIMATOR_HOOKS.register("mssr")(MssrHook)


def test_mssr_hook_baselines_follow_observed_rewards_and_survive_a_checkpoint():
    hook = hook_for("mssr")
    ids = ["p", "q"]
    assert hook.options(ids, [{}, {}])["baselines"].tolist() == [0.5, 0.5]  # unseen prompts
    hook.observe(ids, [1.0, 0.0], {"approx_kl": -0.0})  # rho_max 0.96 without drift; prior Beta(1, 1)
    assert hook.options(ids, [{}, {}])["baselines"].tolist() == pytest.approx([1.96 / 2.92, 0.96 / 2.92])
    hook.observe(ids, [1.0, 1.0], {"approx_kl": 0.5, "kl_ref": 1.0})  # drift: the KL to the reference
    assert list(hook.tracker.rho.history) == [0.0, 1.0]
    restored = hook_for("mssr")
    restored.load_state_dict(hook.state_dict())
    assert torch.equal(restored.options(ids, [{}, {}])["baselines"], hook.options(ids, [{}, {}])["baselines"])
    rewards = torch.tensor([1.0, 0.0], dtype=torch.float64)
    advantages = compute_advantages("mssr", rewards, None, None, **hook.options(ids, [{}, {}]))
    assert advantages.shape == (2,) and advantages[0] > advantages[1]


def test_mixed_hook_counts_correct_answers_not_the_summed_reward():
    components = [{"correct": 1.0, "format": 0.2}, {"correct": 0.0, "format": 0.2}, {"correct": 1.0, "format": 0.0}]
    successes = hook_for("mixed").options(["a", "a", "a"], components)["successes"]
    assert successes.dtype == torch.float64 and successes.tolist() == [1.0, 0.0, 1.0]
