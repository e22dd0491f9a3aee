"""The KL penalty to a reference policy, decided in one place: whether there is one
(``algo.kl_coef > 0``), what the reference is (a frozen copy of the starting policy, or with
LoRA the policy with its adapters off), and where the penalty goes (``algo.kl_in``: per
token in the loss, or summed per response off the reward before the advantages)."""

from __future__ import annotations

import copy

import torch

from maple_data.models.prompts import Prompt
from maple_rl.algorithms.losses import KL_ESTIMATORS
from maple_rl.training.config import TrainConfig
from maple_rl.training.inputs import PolicyInputs


class KLReference:
    """The reference of a run. Built from the policy before it is wrapped for training; its
    frozen copy (``model``, None without KL and with LoRA) is checkpointed with the run."""

    def __init__(self, config: TrainConfig, acc, policy: torch.nn.Module) -> None:
        from accelerate.utils import DistributedType

        self.algo, self.acc = config.algo, acc
        self.model: torch.nn.Module | None = None
        if self.algo.kl_coef and not config.model.lora.rank:  # sharded like the policy under FSDP
            frozen = copy.deepcopy(policy).requires_grad_(False).eval()
            self.model = (acc.prepare_model(frozen, evaluation_mode=True)
                          if acc.distributed_type == DistributedType.FSDP else frozen.to(acc.device))

    @property
    def in_loss(self) -> bool:
        """The per-token penalty joins the policy loss."""
        return bool(self.algo.kl_coef) and self.algo.kl_in == "loss"

    @property
    def in_reward(self) -> bool:
        """The per-response penalty is taken off the rewards."""
        return bool(self.algo.kl_coef) and self.algo.kl_in == "reward"

    def restart_from(self, policy: torch.nn.Module) -> None:
        """The reference becomes ``policy``'s current weights (after the format warm-up: RL's start)."""
        if self.model is not None:
            self.model.load_state_dict(policy.state_dict())

    def logprobs(self, inputs: PolicyInputs, policy: torch.nn.Module, prompts: list[Prompt],
                 responses: torch.Tensor) -> torch.Tensor | None:
        """``(B, T)`` log-probs of ``responses`` under the reference (None without KL);
        ``policy`` is the unwrapped policy (LoRA: scored with its adapters disabled)."""
        if not self.algo.kl_coef:
            return None
        if self.model is not None:
            return inputs.score(self.model, prompts, responses).logp
        with policy.disable_adapter():
            return inputs.score(policy, prompts, responses).logp

    def penalised_rewards(self, inputs: PolicyInputs, policy: torch.nn.Module, prompts: list[Prompt],
                          responses: torch.Tensor, mask: torch.Tensor,
                          rewards: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``kl_in: reward``: ``(rewards - kl_coef * KL, KL)`` with KL ``(N,)`` float64 each
        response's estimate (``algo.kl_estimator``) summed over its tokens, no gradient;
        otherwise ``(rewards, None)``."""
        if not self.in_reward:
            return rewards, None
        estimate = KL_ESTIMATORS.get(self.algo.kl_estimator)
        size, out = self.algo.minibatch_size, []
        with torch.no_grad():
            for first in range(0, len(prompts), size):
                rows = slice(first, first + size)
                logp = inputs.score(policy, prompts[rows], responses[rows]).logp
                kl = estimate(logp, self.logprobs(inputs, policy, prompts[rows], responses[rows]))
                out.append((kl * mask[rows].to(kl.device)).sum(-1).double().cpu())
        kl = torch.cat(out)
        return rewards - self.algo.kl_coef * kl, kl
