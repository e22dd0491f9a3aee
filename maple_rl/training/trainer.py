"""``maple-rl train``: stratified MAPO (and the estimators it is compared with) on an omni
model, with accelerate (single process, DDP or FSDP via ``accelerate launch``).

One step:
1. the stratified sampler draws the global batch of prompts (same seed on every rank);
   rank r takes every world_size-th prompt, so ranks never share a sample;
2. each prompt is built with only its RMT's modalities (``data.input_modalities: rmt``)
   or everything available (``all``), with the annotation prompt convention;
3. G responses per prompt are sampled (``rollout.engine``: hf generate, or a colocated
   vLLM engine whose weights are synced from the policy before the next rollout);
4. rewards (each component logged) -> early zero-variance filter (groups whose G rewards
   are equal are dropped before any log-prob or backward work) -> advantages from the
   estimator registry, with RMT strata;
5. old log-probs are recomputed by the trainer (at the sampling temperature, as TRL and
   verl; compared with the engine's own when it returns them, and optionally importance-
   corrected for the difference: ``algo.rollout_is``), then ``ppo_epochs`` passes over
   minibatches of the policy loss (per-stratum averaging with the stratum weights),
   AdamW with grad clipping every ``gradient_accumulation_steps`` minibatches; the LR
   schedule steps once per step;
6. adaptive weights and the curriculum are updated from the step's rewards.
Checkpoints (model, optimizer, scheduler, sampler, weights, tracker, step, RNG states)
every ``save_every`` steps, at the end, and on SIGINT, each renamed into place once complete;
``resume`` continues from the newest complete one (an interrupted write is ignored and removed).

:class:`Trainer` is the loop; each step's work is a part with one job (``maple_rl.training``):
``inputs`` (prompts, encoding, token scores), ``scoring`` (steps 3-4), ``reference`` (the KL
penalty, wherever the recipe puts it), ``update`` (step 5), ``checkpoint`` and ``metrics``.
"""

from __future__ import annotations

import signal
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import torch

from maple_data.durable import folder_lock
from maple_data.models.omni_folder import thinker_family
from maple_data.models.omni_inputs import OmniEncoder
from maple_rl.algorithms.estimator_hooks import hook_for
from maple_rl.algorithms.weighting import AdaptiveWeights
from maple_rl.errors import ConfigError
from maple_rl.training.checkpoint import Checkpoints, StepCounter
from maple_rl.training.config import TrainConfig, to_dict
from maple_rl.training.data import load_items
from maple_rl.training.inputs import PolicyInputs
from maple_rl.training.metrics import MetricsLog, gather_outcome, step_metrics
from maple_rl.training.policy import freeze_encoders, load_policy, optimizer_and_schedule, policy_dtype, with_lora
from maple_rl.training.reference import KLReference
from maple_rl.training.rollout import HFRollout, RolloutEngine, SamplingSpec, VLLMRollout
from maple_rl.training.run_folder import resumes
from maple_rl.training.sampler import StratifiedSampler
from maple_rl.training.scoring import Rollouts
from maple_rl.training.update import PolicyUpdate
from maple_rl.training.warmup import format_warmup


class Trainer:
    """A training run; ``run()`` trains to ``config.steps``."""

    def __init__(self, config: TrainConfig, *, resume: bool = False, overwrite: bool = False) -> None:
        """``resume`` / ``overwrite``: how to start in a run folder that holds a run
        (:mod:`maple_rl.training.run_folder`); the folder is held for this process until :meth:`run`
        ends (the main process holds it)."""
        from accelerate import Accelerator
        from accelerate.utils import DistributedDataParallelKwargs, set_seed

        self.config = config
        self.acc = Accelerator(cpu=not torch.cuda.is_available(),
                               kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
        set_seed(config.seed)
        if config.sampling.batch_size < self.acc.num_processes:
            raise ConfigError(f"sampling.batch_size ({config.sampling.batch_size}) must be at least the number of "
                              f"processes ({self.acc.num_processes}): every rank needs a prompt per step")
        self.held = ExitStack()
        if self.acc.is_main_process:
            self.held.enter_context(folder_lock(Path(config.output_dir)))
        resume_run = resumes(Path(config.output_dir), to_dict(config), resume=resume, overwrite=overwrite)
        self.items = load_items(config.data.path, config.data.config, config.data.split, config.data.task)
        model, forward_args = load_policy(config.model.path, policy_dtype(config.model.dtype))
        family = thinker_family(model)  # None for a text-only model
        freeze_encoders(model, config.model.freeze, family)
        if config.model.lora.rank:
            model = with_lora(model, config.model.lora)
        self.reference = KLReference(config, self.acc, model)  # RL's starting policy, before any wrapping
        if config.model.gradient_checkpointing:
            model.gradient_checkpointing_enable()
        self.model, self.optimizer, self.scheduler = self.acc.prepare(model, *optimizer_and_schedule(model, config))
        self.inputs = PolicyInputs(config, OmniEncoder(config.model.path, family=family), family, forward_args,
                                   self.acc.device, self.policy().dtype)
        self.sampler = StratifiedSampler([r["rmt"] for r in self.items], config.sampling, total_steps=config.steps,
                                         seed=config.seed)
        self.weights = AdaptiveWeights(config.weights)
        self.estimator_hook = hook_for(config.algo.estimator)  # e.g. MSSR's value tracker
        self.counter = StepCounter()
        for obj in (self.sampler, self.weights, self.estimator_hook, self.counter, self.reference.model):
            if obj is not None:
                self.acc.register_for_checkpointing(obj)
        self.rollouts = Rollouts(config, self.acc, self.inputs, self._rollout_engine(), self.sampler, self.items,
                                 self.estimator_hook, self.reference, self.policy, lambda: self.counter.step)
        self.update = PolicyUpdate(config, self.acc, self.model, self.optimizer, self.inputs, self.reference)
        self.checkpoints = Checkpoints(config, self.acc, self.counter, family, self.policy)
        self.interrupted = False
        self.checkpoints.start(resume_run)

    def policy(self) -> torch.nn.Module:
        """The policy unwrapped from DDP / FSDP."""
        return self.acc.unwrap_model(self.model)

    def _rollout_engine(self) -> RolloutEngine:
        r, inputs = self.config.rollout, self.inputs
        spec = SamplingSpec(r.temperature, r.max_new_tokens, inputs.eos_id, inputs.pad_id, inputs.suppressed)
        if r.engine == "vllm":
            return VLLMRollout(self.config.model.path, spec, gpu_memory_utilization=r.vllm_gpu_memory_utilization,
                               max_model_len=r.vllm_max_model_len, rank=self.acc.process_index,
                               world_size=self.acc.num_processes, local_rank=self.acc.local_process_index,
                               dtype=self.config.model.dtype)
        return HFRollout(inputs.encode, self.policy, spec, inputs.forward_args)

    def train_step(self) -> dict[str, Any]:
        """One step, as named steps: draw the prompts -> rollout, rewards, zero-variance
        filter / refill and advantages -> old log-probs and the policy update -> the
        estimator's own state -> adaptive weights and curriculum -> metrics."""
        start = time.perf_counter()
        records, n_prompts = self.draw_prompts()
        scored = self.rollouts.sample_and_score(records)
        stats = self.update(scored, self.weights.weights())
        if stats["updates"]:
            self.rollouts.policy_changed()
        G = self.config.rollout.group_size
        self.estimator_hook.observe([rec["id"] for rec in scored.records for _ in range(G)], scored.rewards.tolist(),
                                    stats)
        outcome = gather_outcome(self.acc, scored)
        if self.config.weights.adaptive:  # from every rank's rewards; the dynamic curriculum follows them
            self.weights.update(outcome.tags, outcome.rewards.tolist())
            if self.config.sampling.curriculum == "dynamic":
                self.sampler.set_weights(self.weights.weights())
        self.scheduler.step()
        self.counter.step += 1
        extra = {"stratum_weights": self.weights.weights(), "lr": float(self.scheduler.get_last_lr()[0]),
                 "prompts": n_prompts, **stats}
        metrics = step_metrics(self.config, self.acc, self.counter.step, scored, outcome, extra)
        metrics["seconds"] = time.perf_counter() - start
        return metrics

    def draw_prompts(self) -> tuple[list[dict[str, Any]], int]:
        """The stratified sampler's global batch (the same on every rank): this rank's share of
        the records (every world_size-th), and the global batch size."""
        batch = self.sampler.next_batch()
        self.inputs.new_step()  # last step's prompts
        return [self.items[i] for i in batch[self.acc.process_index::self.acc.num_processes]], len(batch)

    def format_warmup(self) -> list[float]:
        """The format warm-up's losses (:func:`~maple_rl.training.warmup.format_warmup`)."""
        losses = format_warmup(self.config, self.acc, self.model, self.items, self.inputs)
        self.rollouts.policy_changed()
        return losses

    def run(self, on_step=None) -> Path:
        """Train to ``config.steps``; returns the final model folder (a checkpoint is
        written and the run stops cleanly on SIGINT)."""
        previous = signal.signal(signal.SIGINT, self._on_sigint)
        try:
            with MetricsLog(self.config, self.acc) as log:
                if self.counter.step == 0 and self.config.format_warmup_steps:
                    log.log({"step": 0, "format_warmup_loss": self.format_warmup()})
                    self.reference.restart_from(self.policy())  # the KL's reference is RL's start
                while self.counter.step < self.config.steps:
                    metrics = self.train_step()
                    log.log(metrics)
                    if on_step is not None:
                        on_step(metrics)
                    at_save = self.config.save_every and self.counter.step % self.config.save_every == 0
                    if at_save or self.interrupted:
                        self.checkpoints.save()
                    if self.interrupted:
                        raise KeyboardInterrupt
                self.checkpoints.save()
                return self.checkpoints.save_final()
        finally:
            signal.signal(signal.SIGINT, previous)
            self.held.close()

    def _on_sigint(self, *_: Any) -> None:
        self.interrupted = True
