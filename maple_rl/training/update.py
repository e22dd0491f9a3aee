"""The policy update of a step (step 5 of ``docs/algorithms.md`` §11): old log-probs
(compared with the engine's, optionally importance-corrected for the difference), then
``ppo_epochs`` passes over minibatches of the kept sequences, AdamW with gradient clipping
every ``gradient_accumulation_steps`` minibatches. Every rank steps equally often, so DDP's
collectives match when ranks hold different numbers of minibatches."""

from __future__ import annotations

from collections import Counter

import torch

from maple_data.rmt import TAGS
from maple_rl.algorithms.losses import logprob_mismatch, policy_loss, rollout_is_weights
from maple_rl.algorithms.mssr import entropy_shaped_advantages
from maple_rl.errors import ConfigError
from maple_rl.training.config import TrainConfig
from maple_rl.training.inputs import PolicyInputs
from maple_rl.training.reference import KLReference
from maple_rl.training.scoring import Scored

LOSS_METRICS = ("loss", "clipfrac_high", "clipfrac_low", "approx_kl", "kl_ref", "entropy",
                "is_weight_mean", "router_aux_loss")  # per minibatch, averaged


class PolicyUpdate:
    """Updates the prepared ``model`` with ``optimizer`` from a step's :class:`Scored` samples."""

    def __init__(self, config: TrainConfig, acc, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 inputs: PolicyInputs, reference: KLReference) -> None:
        self.config, self.algo, self.acc = config, config.algo, acc
        self.model, self.optimizer, self.inputs, self.reference = model, optimizer, inputs, reference

    def __call__(self, scored: Scored, stratum_weights: dict[str, float]) -> dict[str, float]:
        """The step's update; returns its metrics (loss terms averaged over minibatches,
        ``grad_norm``, ``updates``, ``tokens`` over every rank, ``old_logprob_passes``). The
        minibatches of the step's first optimizer update run on the policy that sampled, so with
        ``algo.old_logprobs=auto`` their old log-probs are the training forward's own, detached
        (TRL's rule; bit for bit the separate pass's values): a separate no-grad pass runs only
        for minibatches trained after an update."""
        algo = self.algo
        rows = torch.nonzero(scored.keep).flatten().tolist()
        chunks = [rows[i:i + algo.minibatch_size] for i in range(0, len(rows), algo.minibatch_size)]
        n_global = int(self.acc.gather(torch.tensor([len(chunks)], device=self.acc.device)).max())
        accum = max(1, algo.gradient_accumulation_steps)
        before_update = min(accum, len(chunks)) if algo.old_logprobs == "auto" else 0
        weights = (torch.tensor([stratum_weights[t] for t in TAGS], dtype=torch.float64)
                   if algo.stratify_by == "rmt" else torch.ones(len(TAGS), dtype=torch.float64))
        self.model.train()
        old, ref = self._before_update(scored, chunks, before_update)
        totals: Counter = Counter()
        updates = 0
        for _ in range(algo.ppo_epochs):
            for first in range(0, n_global, accum):  # every rank steps equally often (DDP collectives match)
                group = range(first, min(first + accum, n_global))
                self.optimizer.zero_grad()
                for k in group:
                    loss = (self._minibatch_loss(scored, chunks[k], k, old, ref, weights, totals)
                            if k < len(chunks) else self._idle_loss(scored))
                    self.acc.backward(loss / len(group))
                totals["grad_norm"] += float(self.acc.clip_grad_norm_(self.model.parameters(),
                                                                     self.config.optim.max_grad_norm))
                self.optimizer.step()
                updates += 1
        out = self._summary(totals, scored, rows, old, updates)
        out["old_logprob_passes"] = len(chunks) - before_update  # no-grad forwards for pi_old (0: all from training)
        out["tokens"] = float(self.acc.reduce(torch.tensor(float(scored.mask[rows].sum()) if rows else 0.0,
                                                           device=self.acc.device), reduction="sum"))
        out["updates"] = updates
        return out

    def _before_update(self, scored: Scored, chunks: list[list[int]], before_update: int):
        """Per minibatch, pi_old's log-probs (None for the first ``before_update``: their
        training forward gives them) and the reference's (None unless the KL is in the loss)."""
        old: list[torch.Tensor | None] = [None] * len(chunks)
        ref: list[torch.Tensor | None] = []
        policy = self.acc.unwrap_model(self.model)
        with torch.no_grad():
            for k, chunk in enumerate(chunks):
                prompts = [scored.prompts[i] for i in chunk]
                if k >= before_update:
                    old[k] = self.inputs.score(policy, prompts, scored.responses[chunk]).logp
                ref.append(self.reference.logprobs(self.inputs, policy, prompts, scored.responses[chunk])
                           if self.reference.in_loss else None)
        return old, ref

    def _minibatch_loss(self, scored: Scored, chunk: list[int], k: int, old: list, ref: list,
                        stratum_weights: torch.Tensor, totals: Counter) -> torch.Tensor:
        """The policy loss of minibatch ``k`` (rows ``chunk``); fills ``old[k]`` on its first
        forward and adds its metrics to ``totals``."""
        algo = self.algo
        logp, entropy, router_aux = self.inputs.score(self.model, [scored.prompts[i] for i in chunk],
                                                      scored.responses[chunk], router_aux=True)
        if old[k] is None:  # no update yet: the training forward is pi_old's
            old[k] = logp.detach()
        mask = scored.mask[chunk].to(logp.device)
        adv = scored.advantages[chunk].to(logp.device)
        if algo.entropy_shaping:  # MSSR: (B,) -> (B, T), shaped by each token's entropy
            adv = entropy_shaped_advantages(adv, entropy, algo.entropy_shaping_alpha, algo.entropy_shaping_kappa)
        loss, metrics = policy_loss(logp, old[k], adv, mask, algo, horizon=self.config.rollout.max_new_tokens,
                                    strata=scored.strata[chunk].to(logp.device),
                                    stratum_weights=stratum_weights.to(logp.device), ref_logp=ref[k],
                                    entropy=entropy, is_weights=self._is_weights(old[k], scored, chunk))
        if router_aux is not None:  # a MoE policy: logged, and added with router_aux_coef
            metrics["router_aux_loss"] = float(router_aux.detach())
            loss = loss + algo.router_aux_coef * router_aux.to(loss.device)
        for key in LOSS_METRICS:
            totals[key] += metrics.get(key, 0.0)
        totals["n"] += 1
        return loss

    def _idle_loss(self, scored: Scored) -> torch.Tensor:
        """Nothing left on this rank: a forward with zero loss keeps DDP's collectives in step."""
        return self.inputs.score(self.model, scored.prompts[:1], scored.responses[:1]).logp.sum() * 0.0

    def _is_weights(self, old: torch.Tensor, scored: Scored, chunk: list[int]) -> torch.Tensor | None:
        """The ``algo.rollout_is`` importance weights ``pi_old / pi_rollout`` of a minibatch (None when off)."""
        mode = self.algo.rollout_is
        if mode == "none":
            return None
        if scored.rollout_logp is None:
            raise ConfigError(f"algo.rollout_is={mode} needs the engine's log-probs; "
                              f"{self.config.rollout.engine} returned none (sampling at temperature 0?)")
        return rollout_is_weights(old, scored.rollout_logp[chunk].to(old.device), scored.mask[chunk].to(old.device),
                                  mode, self.algo.rollout_is_threshold)

    def _summary(self, totals: Counter, scored: Scored, rows: list[int], old: list,
                 updates: int) -> dict[str, float]:
        """The loss metrics averaged over minibatches (those the recipe has), the engine-vs-trainer
        log-prob mismatch on the trained tokens, and the mean gradient norm."""
        n = max(totals.pop("n", 0), 1)
        family = self.inputs.family
        optional = {"kl_ref": self.reference.in_loss, "is_weight_mean": self.algo.rollout_is != "none",
                    "router_aux_loss": family is not None and family.moe}
        out = {key: totals[key] / n for key in LOSS_METRICS if optional.get(key, True)}
        if scored.rollout_logp is not None and old:
            out |= logprob_mismatch(torch.cat(old).cpu(), scored.rollout_logp[rows], scored.mask[rows])
        out["grad_norm"] = totals["grad_norm"] / max(updates, 1)
        return out
