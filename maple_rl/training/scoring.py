"""A step's samples: G responses per prompt from the rollout engine, their rewards, the
refill of zero-variance groups (DAPO dynamic sampling), the KL off the rewards where the
recipe puts it there, and the advantages with their RMT strata (steps 3-4 of
``docs/algorithms.md`` §11)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from maple_data.models.prompts import Prompt
from maple_data.rmt import tag_index
from maple_rl.algorithms.advantages import compute_advantages
from maple_rl.algorithms.estimator_hooks import EstimatorHook
from maple_rl.algorithms.filtering import RefillResult, refill, zero_variance_mask
from maple_rl.training.config import TrainConfig
from maple_rl.training.inputs import PolicyInputs, response_mask
from maple_rl.training.reference import KLReference
from maple_rl.training.rewards import reward_components, total_reward
from maple_rl.training.rollout import RolloutEngine, request_seed
from maple_rl.training.sampler import StratifiedSampler


@dataclass
class GroupSample:
    """One record's G sampled responses and their rewards."""

    record: dict[str, Any]
    prompt: Prompt
    responses: torch.Tensor  # (G, T) response token ids, right-padded
    texts: list[str]  # (G,) decoded responses
    components: list[dict[str, float]]  # (G,) reward components
    rewards: torch.Tensor  # (G,) float64
    logprobs: torch.Tensor | None = None  # (G, T) the engine's log-probs of the responses (None: not reported)


@dataclass
class Scored:
    """One batch's sampled responses with their rewards and advantages; rows are the
    N*G sequences (G per record, record-major)."""

    records: list[dict[str, Any]]  # (N,) the records, after any refill
    prompts: list[Prompt]  # (N*G,) the prompt of each sequence
    responses: torch.Tensor  # (N*G, T) response token ids
    texts: list[str]  # (N*G,) the decoded responses
    mask: torch.Tensor  # (N*G, T) 1 on response tokens up to and including EOS
    rewards: torch.Tensor  # (N*G,) float64
    advantages: torch.Tensor  # (N*G,)
    tag_ids: torch.Tensor  # (N*G,) RMT index of each sequence
    strata: torch.Tensor  # (N*G,) stratum of each sequence (all 0 without RMT strata)
    keep: torch.Tensor  # (N*G,) bool: trained on (not a zero-variance group, not a masked truncation)
    components: list[dict[str, float]]  # (N*G,) reward components
    zero_variance: torch.Tensor  # (N*G,) bool: in a group whose rewards are all equal
    truncated: torch.Tensor  # (N*G,) bool: no EOS within max_new_tokens
    refill_rounds: int = 0  # draw rounds refill used
    refilled: int = 0  # zero-variance groups it replaced
    kl: torch.Tensor | None = None  # (N*G,) KL to the reference taken off the rewards (algo.kl_in: reward)
    rollout_logp: torch.Tensor | None = None  # (N*G, T) the engine's log-probs (None when it reports none)


def _padded(parts: list[torch.Tensor], width: int, value: float) -> torch.Tensor:
    """``(sum rows, width)``: the ``(rows, T_i)`` parts right-padded with ``value`` and stacked."""
    return torch.cat([torch.nn.functional.pad(p, (0, width - p.shape[1]), value=value) for p in parts])


class Rollouts:
    """Sampling and scoring of a run's steps. ``policy()`` is the unwrapped policy; ``step()``
    the current step (it seeds the sampling streams); :meth:`policy_changed` marks the engine's
    weights stale (synced before its next generation)."""

    def __init__(self, config: TrainConfig, acc, inputs: PolicyInputs, engine: RolloutEngine,
                 sampler: StratifiedSampler, items: list[dict[str, Any]], estimator_hook: EstimatorHook,
                 reference: KLReference, policy: Callable[[], torch.nn.Module], step: Callable[[], int]) -> None:
        self.config, self.acc, self.inputs, self.engine = config, acc, inputs, engine
        self.sampler, self.items, self.estimator_hook, self.reference = sampler, items, estimator_hook, reference
        self.policy, self.step = policy, step
        self.stale = True

    def policy_changed(self) -> None:
        self.stale = True

    def rollout(self, records: list[dict[str, Any]], prompt_ids: Sequence[int]) -> list[GroupSample]:
        """G sampled responses per record, with their rewards; ``prompt_ids`` are the
        records' indices in the step's global batch (they seed the sampling streams)."""
        cfg = self.config
        G = cfg.rollout.group_size
        if not records:
            return []
        if self.stale:
            self.engine.sync_weights(self.policy())
            self.stale = False
        prompts = [self.inputs.prompt(rec) for rec in records]
        sampled = self.engine.generate(prompts, G, [request_seed(cfg.seed, self.step(), k) for k in prompt_ids])
        responses, logprobs = sampled.responses, sampled.logprobs
        texts = self.inputs.encoder.tokenizer.batch_decode(responses, skip_special_tokens=True)
        groups = []
        for k, (record, prompt) in enumerate(zip(records, prompts)):
            rows = slice(k * G, (k + 1) * G)
            comps = [reward_components(text, record, cfg.reward) for text in texts[rows]]
            rewards = torch.tensor([total_reward(c, cfg.reward) for c in comps], dtype=torch.float64)
            groups.append(GroupSample(record, prompt, responses[rows], texts[rows], comps, rewards,
                                      None if logprobs is None else logprobs[rows]))
        return groups

    def _draw_like(self, tags: list[str], round_: int) -> list[GroupSample] | None:
        """Refill's draw: one new group per tag. Every rank draws the same global list of
        replacements from its copy of the sampler (their states stay equal) and keeps the
        ones for its own tags; None once no rank needs any."""
        from accelerate.utils import gather_object

        per_rank = gather_object([tags]) if self.acc.num_processes > 1 else [tags]
        if not any(per_rank):
            return None
        drawn = [self.sampler.take(tag, 1)[0] for wanted in per_rank for tag in wanted]
        first = sum(len(wanted) for wanted in per_rank[:self.acc.process_index])
        ids = range(first, first + len(tags))  # prompt ids past the batch's, one range per round
        size = self.config.sampling.batch_size
        return self.rollout([self.items[drawn[i]] for i in ids], [size * (round_ + 1) + i for i in ids])

    def sample_and_score(self, records: list[dict[str, Any]], prompt_ids: Sequence[int] | None = None) -> Scored:
        """G responses per record, zero-variance groups refilled (``algo.refill_rounds``),
        rewards and advantages (nothing is updated). ``prompt_ids``: the records' indices
        in the global batch (default: this rank's share of it)."""
        cfg = self.config
        if prompt_ids is None:
            prompt_ids = [self.acc.process_index + k * self.acc.num_processes for k in range(len(records))]
        groups = self.rollout(records, prompt_ids)
        rounds = iter(range(cfg.algo.refill_rounds))
        refilled = refill(groups, [g.record["rmt"] for g in groups], lambda tags: self._draw_like(tags, next(rounds)),
                          lambda g: g.rewards.tolist(), cfg.algo.refill_rounds)
        return self.score(refilled.groups, refilled)

    def score(self, groups: list[GroupSample], refilled: RefillResult | None = None) -> Scored:
        """Advantages, masks and filters of a step's groups."""
        cfg, G, eos_id, pad_id = self.config, self.config.rollout.group_size, self.inputs.eos_id, self.inputs.pad_id
        records = [g.record for g in groups]
        width = max(g.responses.shape[1] for g in groups)  # refill rounds sample responses of other lengths
        responses = _padded([g.responses for g in groups], width, pad_id)
        rollout_logp = None if any(g.logprobs is None for g in groups) else _padded(
            [g.logprobs for g in groups], width, 0.0)
        texts = [t for g in groups for t in g.texts]
        comps = [c for g in groups for c in g.components]
        group_ids = torch.arange(len(records)).repeat_interleave(G)
        tag_ids = torch.tensor([tag_index(rec["rmt"]) for rec in records]).repeat_interleave(G)
        strata = tag_ids if cfg.algo.stratify_by == "rmt" else torch.zeros_like(tag_ids)
        options = dict(cfg.algo.estimator_options) | self.estimator_hook.options(
            [rec["id"] for rec in records for _ in range(G)], comps)
        rewards = torch.cat([g.rewards for g in groups])
        zero_variance = zero_variance_mask(rewards, group_ids) if G > 1 else torch.zeros(len(texts), dtype=torch.bool)
        truncated = ~(responses == eos_id).any(dim=1)
        keep = ~zero_variance if cfg.algo.early_filter else torch.ones(len(texts), dtype=torch.bool)
        if cfg.algo.mask_truncated_completions:  # rewarded (the group's statistics), never trained on
            keep &= ~truncated
        prompts, mask = [g.prompt for g in groups for _ in range(G)], response_mask(responses, eos_id, pad_id)
        rewards, kl = self.reference.penalised_rewards(self.inputs, self.policy(), prompts, responses, mask, rewards)
        advantages = compute_advantages(cfg.algo.estimator, rewards, group_ids if G > 1 else None, strata, **options)
        return Scored(records, prompts, responses, texts, mask, rewards, advantages, tag_ids, strata, keep, comps,
                      zero_variance, truncated, refilled.rounds if refilled else 0,
                      refilled.replaced if refilled else 0, kl, rollout_logp)
