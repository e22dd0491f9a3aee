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
"""

from __future__ import annotations

import copy
import json
import math
import re
import shutil
import signal
import sys
import time
from collections import Counter
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from maple_data.durable import (PARTIAL, Journal, atomic_folder, folder_lock, fsync_tree, partial_path, swap_into_place,
                                raise_write_failure, write_atomic)
from maple_data.errors import MissingExtra
from maple_data.models.model_source import check_model
from maple_data.models.families import ModelFamily, find_family
from maple_data.models.omni_folder import (PROCESSOR_FILES, copy_processor_files, missing_model_files,
                                           missing_processor_files, save_omni, thinker_family)
from maple_data.models.omni_inputs import OmniEncoder, to_device
from maple_data.models.prompts import build_prompt
from maple_data.rmt import TAGS, tag_index
from maple_rl.advantages import compute_advantages
from maple_rl.config import LoraConfig, TrainConfig, to_dict
from maple_rl.data import load_items, media_of
from maple_rl.estimator_hooks import hook_for
from maple_rl.filtering import RefillResult, refill, zero_variance_mask
from maple_rl.logprobs import TokenScores, token_logprobs
from maple_rl.losses import KL_ESTIMATORS, logprob_mismatch, policy_loss, rollout_is_weights
from maple_rl.mssr import entropy_shaped_advantages
from maple_rl.rewards import correctness, reward_components, total_reward
from maple_rl.rollout import HFRollout, RolloutEngine, SamplingSpec, VLLMRollout, request_seed
from maple_rl.run_folder import (CHECKPOINT_MARKER, CHECKPOINTS, CONFIG, FINAL, METRICS, PROCESSOR, checkpoints,
                                  clear_run, resumes)
from maple_rl.sampler import StratifiedSampler
from maple_rl.weighting import AdaptiveWeights

LOSS_METRICS = ("loss", "clipfrac_high", "clipfrac_low", "approx_kl", "kl_ref", "entropy",
                "is_weight_mean", "router_aux_loss")  # per minibatch, averaged


class StepCounter:
    """The step number, checkpointed with the run."""

    def __init__(self) -> None:
        self.step = 0

    def state_dict(self) -> dict[str, int]:
        return {"step": self.step}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.step = int(state["step"])


def lr_lambda(config: TrainConfig):
    """LR multiplier per step: linear warm-up, then constant, linear or cosine decay."""
    warm, total, decay = config.optim.warmup_steps, max(config.steps, 1), config.optim.decay

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        progress = (step - warm) / max(total - warm, 1)
        if decay == "linear":
            return max(0.0, 1.0 - progress)
        if decay == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
        return 1.0

    return factor


def response_mask(responses: torch.Tensor, eos_id: int, pad_id: int) -> torch.Tensor:
    """1 for response tokens up to and including the first EOS, 0 after (and for padding)."""
    is_end = (responses == eos_id) | (responses == pad_id)
    ended_before = torch.cumsum(is_end.int(), dim=1) - is_end.int()
    mask = (ended_before == 0) & (responses != pad_id)
    return mask | ((responses == eos_id) & (ended_before == 0))


def freeze_encoders(model: torch.nn.Module, parts: Sequence[str], family: ModelFamily | None) -> None:
    """Freeze the named encoders (``vision``, ``audio``) of an omni model of ``family`` in place."""
    for part in parts:
        module = family.encoder(model, part) if family else None
        if module is None:
            raise ValueError(f"model.freeze: {type(model).__name__} has no {part} encoder to freeze")
        module.requires_grad_(False)


def lora_targets(model: torch.nn.Module, pattern: str) -> list[str]:
    """Names of ``model``'s linear layers that ``pattern`` (``model.lora.target_modules``)
    matches in full. peft is given this list, not the regex: peft 0.21 widens a regex to the
    leaf names it matched on a mixture-of-experts model (Qwen3-Omni's audio tower's q/k/v
    projections got adapters that the default pattern excludes)."""
    compiled = re.compile(pattern)
    names = [name for name, module in model.named_modules()
             if isinstance(module, torch.nn.Linear) and compiled.fullmatch(name)]
    if not names:
        raise ValueError(f"model.lora.target_modules: {pattern!r} matches no linear layer of {type(model).__name__}")
    return names


def with_lora(model: torch.nn.Module, lora: LoraConfig) -> torch.nn.Module:
    """``model`` with LoRA adapters (peft) on the linear layers ``lora.target_modules``
    matches (:func:`lora_targets`); every other weight frozen."""
    try:
        import peft
    except ImportError as exc:
        raise MissingExtra("model.lora needs peft: pip install 'maple-omni[train]'") from exc
    return peft.get_peft_model(model, peft.LoraConfig(r=lora.rank, lora_alpha=lora.alpha, lora_dropout=0.0,
                                                      target_modules=lora_targets(model, lora.target_modules)))


def load_policy(path: str, dtype: torch.dtype):
    """The Thinker of an omni model (its family from the folder's ``config.json``), else any
    causal LM; and the extra forward arguments the model takes (audio as a separate stream
    for omni models)."""
    from transformers import AutoModelForCausalLM

    path = check_model(path)
    family = find_family(path)
    if family is not None:
        return family.load_thinker(path, dtype=dtype), {"use_audio_in_video": False}
    return AutoModelForCausalLM.from_pretrained(path, dtype=dtype), {}


@dataclass
class GroupSample:
    """One record's G sampled responses and their rewards."""

    record: dict[str, Any]
    prompt: Any  # maple_data.models.prompts.Prompt
    responses: torch.Tensor  # (G, T) response token ids, right-padded
    texts: list[str]  # (G,) decoded responses
    components: list[dict[str, float]]  # (G,) reward components
    rewards: torch.Tensor  # (G,) float64
    logprobs: torch.Tensor | None = None  # (G, T) the engine's log-probs of the responses (None: not reported)


@dataclass
class StepOutcome:
    """Every rank's responses of one step, merged (M responses in all): what the adaptive
    weights, the curriculum and the step's metrics read."""

    tags: list[str]  # (M,) RMT of each response
    rewards: torch.Tensor  # (M,) float64 total reward
    correct: torch.Tensor  # (M,) float64 correctness component
    zero_variance: torch.Tensor  # (M,) float64 1 in a group whose rewards are all equal
    truncated: torch.Tensor  # (M,) float64 1 without EOS within max_new_tokens


@dataclass
class Scored:
    """One batch's sampled responses with their rewards and advantages; rows are the
    N*G sequences (G per record, record-major)."""

    records: list[dict[str, Any]]  # (N,) the records, after any refill
    prompts: list  # (N*G,) the prompt of each sequence
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


class Trainer:
    """A training run; ``run()`` trains to ``config.steps``."""

    def __init__(self, config: TrainConfig, *, resume: bool = False, overwrite: bool = False) -> None:
        """``resume`` / ``overwrite``: how to start in a run folder that holds a run
        (:mod:`maple_rl.run_folder`); the folder is held for this process until :meth:`run`
        ends (the main process holds it)."""
        from accelerate import Accelerator
        from accelerate.utils import DistributedDataParallelKwargs, set_seed

        self.config = config
        self.acc = Accelerator(cpu=not torch.cuda.is_available(),
                               kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
        set_seed(config.seed)
        if config.sampling.batch_size < self.acc.num_processes:
            raise ValueError(f"sampling.batch_size ({config.sampling.batch_size}) must be at least the number of "
                             f"processes ({self.acc.num_processes}): every rank needs a prompt per step")
        self.out = Path(config.output_dir)
        self.held = ExitStack()
        if self.acc.is_main_process:
            self.held.enter_context(folder_lock(self.out))
        resume_run = resumes(self.out, to_dict(config), resume=resume, overwrite=overwrite)  # before any loading
        self.items = load_items(config.data.path, config.data.config, config.data.split, config.data.task)
        dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
        dtype = dtypes.get(config.model.dtype, torch.bfloat16 if torch.cuda.is_available() else torch.float32)
        model, self.forward_args = load_policy(config.model.path, dtype)
        self.family = thinker_family(model)  # None for a text-only model
        freeze_encoders(model, config.model.freeze, self.family)
        if config.model.lora.rank:
            model = with_lora(model, config.model.lora)
        self.reference = self._reference_model(model)
        if config.model.gradient_checkpointing:
            model.gradient_checkpointing_enable()
        self.encoder = OmniEncoder(config.model.path, family=self.family)
        self.eos_id = self.encoder.tokenizer.convert_tokens_to_ids("<|im_end|>")
        self.pad_id = self.encoder.tokenizer.pad_token_id
        self.suppressed = tuple(self.encoder.media_token_ids())  # never sampled, excluded from log-probs
        self.prepared: dict = {}  # this step's prepared prompts (OmniEncoder.encode's cache)
        o = config.optim
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=o.lr, betas=o.betas,
                                      weight_decay=o.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(config))
        self.model, self.optimizer, self.scheduler = self.acc.prepare(model, optimizer, scheduler)
        self.sampler = StratifiedSampler([r["rmt"] for r in self.items], config.sampling, total_steps=config.steps,
                                         seed=config.seed)
        self.weights = AdaptiveWeights(config.weights)
        self.estimator_hook = hook_for(config.algo.estimator)  # e.g. MSSR's value tracker
        self.counter = StepCounter()
        for obj in (self.sampler, self.weights, self.estimator_hook, self.counter, self.reference):
            if obj is not None:
                self.acc.register_for_checkpointing(obj)
        self.engine = self._rollout_engine()
        self.engine_stale = True  # the policy changed since the engine last got its weights
        self.interrupted = False
        if resume_run:
            self._resume()
        elif self.acc.is_main_process:
            clear_run(self.out)
            write_atomic(self.out / METRICS, "")
            write_atomic(self.out / CONFIG, json.dumps(to_dict(config), indent=1))
        if self.acc.is_main_process and not (self.out / PROCESSOR).is_dir():
            self._keep_processor_files()
        self.acc.wait_for_everyone()

    def _reference_model(self, model: torch.nn.Module) -> torch.nn.Module | None:
        """The frozen reference policy of the KL penalty: the policy RL starts from (after any
        format warm-up), as TRL / verl, checkpointed with the run; sharded like the policy
        under FSDP, else whole on this process's device. None without KL, and with LoRA (the
        base model with its adapters off is the reference)."""
        from accelerate.utils import DistributedType

        if not self.config.algo.kl_coef or self.config.model.lora.rank:
            return None
        reference = copy.deepcopy(model).requires_grad_(False).eval()
        if self.acc.distributed_type == DistributedType.FSDP:
            return self.acc.prepare_model(reference, evaluation_mode=True)
        return reference.to(self.acc.device)

    # ------------------------------------------------------------ checkpoints

    def _keep_processor_files(self) -> None:
        """Copy the model's tokenizer and processor files into the run folder when the run
        starts, so the model folders it writes are complete even if the source goes away
        meanwhile; a source that lacks one fails here, before any training."""
        source = Path(self.config.model.path)
        if not source.is_dir():  # a hub id: its cached snapshot
            from huggingface_hub import snapshot_download

            source = Path(snapshot_download(self.config.model.path, allow_patterns=list(PROCESSOR_FILES)))
        missing = missing_processor_files(source, self.family)
        if missing:
            raise FileNotFoundError(f"the model {self.config.model.path} lacks {', '.join(missing)}: a run could not "
                                    f"write a model folder that loads (copy them into it, or use a complete model)")
        with atomic_folder(self.out / PROCESSOR) as tmp:
            copy_processor_files(source, tmp, None)

    def save_checkpoint(self) -> Path:
        """Every rank writes its state into ``checkpoints/.step-N.partial``; the main
        process adds the policy as a model folder (``model/``, unless ``checkpoint_model`` is
        off), the marker, and renames the folder into place (a kill at any moment leaves
        the previous checkpoints intact)."""
        path = self.out / CHECKPOINTS / f"step-{self.counter.step:06d}"
        tmp = partial_path(path)
        self.acc.wait_for_everyone()
        if self.acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
        self.acc.wait_for_everyone()
        try:
            self.acc.save_state(str(tmp))
            self.acc.wait_for_everyone()
            if self.acc.is_main_process:
                if self.config.checkpoint_model:
                    self.write_model(tmp / "model")
                write_atomic(tmp / CHECKPOINT_MARKER, json.dumps({"step": self.counter.step}))
                fsync_tree(tmp)
                swap_into_place(tmp, path)
        except BaseException as exc:  # e.g. a full disk, which torch reports as "unexpected pos ..."
            try:
                raise_write_failure(exc, path)  # checks the free space before the torn write is removed
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        self.acc.wait_for_everyone()
        return path

    def _resume(self) -> None:
        found = checkpoints(self.out)
        if not found:
            raise FileNotFoundError(f"nothing to resume: no complete checkpoint in {self.out / CHECKPOINTS}")
        self.acc.load_state(str(found[-1]))
        if self.acc.is_main_process:
            print(f"resuming from {found[-1]} (step {self.counter.step})", file=sys.stderr)
            for stale in (self.out / CHECKPOINTS).glob(f".*{PARTIAL}"):
                shutil.rmtree(stale, ignore_errors=True)  # a write interrupted by a kill
            path = self.out / METRICS  # drop metrics logged after the checkpoint (they are redone)
            kept = [m for m in Journal.read(path) if m.get("step", 0) <= self.counter.step]
            write_atomic(path, "".join(json.dumps(m) + "\n" for m in kept))

    # ------------------------------------------------------------ one step

    def _rollout_engine(self) -> RolloutEngine:
        r = self.config.rollout
        spec = SamplingSpec(r.temperature, r.max_new_tokens, self.eos_id, self.pad_id, self.suppressed)
        if r.engine == "vllm":
            return VLLMRollout(self.config.model.path, spec, gpu_memory_utilization=r.vllm_gpu_memory_utilization,
                               max_model_len=r.vllm_max_model_len, rank=self.acc.process_index,
                               world_size=self.acc.num_processes, local_rank=self.acc.local_process_index,
                               dtype=self.config.model.dtype)
        return HFRollout(self._encode, lambda: self.acc.unwrap_model(self.model), spec, self.forward_args)

    def _prompt(self, record: dict[str, Any]):
        given = record["rmt"] if self.config.data.input_modalities == "rmt" else record["available_modalities"]
        return build_prompt(record["question"], record["options"], media_of(record), given,
                            meta={"item": record["id"], "subset": given})

    def _encode(self, prompts) -> dict[str, Any]:
        """Model inputs on the device; each prompt's media features are computed once per
        step (a step encodes every prompt G times over for rollout, old log-probs and
        each PPO epoch)."""
        inputs = self.encoder.encode(prompts, self.prepared)
        return to_device(inputs, self.acc.device, self.acc.unwrap_model(self.model).dtype)

    def _score(self, model, prompts, responses: torch.Tensor, *, router_aux: bool = False) -> TokenScores:
        """``token_logprobs`` of ``responses`` after ``prompts`` with this run's inputs; with
        ``router_aux`` and a mixture-of-experts policy, the router's load-balancing loss too."""
        extra = dict(self.forward_args)
        if router_aux and self.family is not None and self.family.moe:
            extra["output_router_logits"] = True
        return token_logprobs(model, self._encode(prompts), responses, suppressed=self.suppressed,
                              temperature=self.config.rollout.temperature, **extra)

    def rollout(self, records: list[dict[str, Any]], prompt_ids: Sequence[int]) -> list[GroupSample]:
        """G sampled responses per record, with their rewards; ``prompt_ids`` are the
        records' indices in the step's global batch (they seed the sampling streams)."""
        cfg = self.config
        G = cfg.rollout.group_size
        if not records:
            return []
        if self.engine_stale:
            self.engine.sync_weights(self.acc.unwrap_model(self.model))
            self.engine_stale = False
        prompts = [self._prompt(rec) for rec in records]
        seeds = [request_seed(cfg.seed, self.counter.step, k) for k in prompt_ids]
        sampled = self.engine.generate(prompts, G, seeds)
        responses, logprobs = sampled.responses, sampled.logprobs
        texts = self.encoder.tokenizer.batch_decode(responses, skip_special_tokens=True)
        groups = []
        for k, (record, prompt) in enumerate(zip(records, prompts)):
            rows = slice(k * G, (k + 1) * G)
            comps = [reward_components(text, record["task"], record["options"], record["answer"],
                                       cfg.reward.caption_metric) for text in texts[rows]]
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
        cfg = self.config
        G = cfg.rollout.group_size
        records = [g.record for g in groups]
        width = max(g.responses.shape[1] for g in groups)  # refill rounds sample responses of other lengths
        responses = torch.cat([torch.nn.functional.pad(g.responses, (0, width - g.responses.shape[1]),
                                                       value=self.pad_id) for g in groups])
        rollout_logp = None if any(g.logprobs is None for g in groups) else torch.cat(
            [torch.nn.functional.pad(g.logprobs, (0, width - g.logprobs.shape[1])) for g in groups])
        texts = [t for g in groups for t in g.texts]
        comps = [c for g in groups for c in g.components]
        rewards = torch.cat([g.rewards for g in groups])
        group_ids = torch.arange(len(records)).repeat_interleave(G)
        tag_ids = torch.tensor([tag_index(rec["rmt"]) for rec in records]).repeat_interleave(G)
        strata = tag_ids if cfg.algo.stratify_by == "rmt" else torch.zeros_like(tag_ids)
        options = dict(cfg.algo.estimator_options) | self.estimator_hook.options(
            [rec["id"] for rec in records for _ in range(G)], comps)
        zero_variance = zero_variance_mask(rewards, group_ids) if G > 1 else torch.zeros(len(texts), dtype=torch.bool)
        truncated = ~(responses == self.eos_id).any(dim=1)
        keep = ~zero_variance if cfg.algo.early_filter else torch.ones(len(texts), dtype=torch.bool)
        if cfg.algo.mask_truncated_completions:  # rewarded (the group's statistics), never trained on
            keep &= ~truncated
        prompts, mask = [g.prompt for g in groups for _ in range(G)], response_mask(responses, self.eos_id, self.pad_id)
        kl = None
        if cfg.algo.kl_coef and cfg.algo.kl_in == "reward":  # r - beta sum_t KL_t, before the advantages
            kl = self._sequence_kl(prompts, responses, mask)
            rewards = rewards - cfg.algo.kl_coef * kl
        advantages = compute_advantages(cfg.algo.estimator, rewards, group_ids if G > 1 else None, strata, **options)
        return Scored(records, prompts, responses, texts, mask, rewards, advantages, tag_ids, strata, keep, comps,
                      zero_variance, truncated, refilled.rounds if refilled else 0,
                      refilled.replaced if refilled else 0, kl, rollout_logp)

    def _sequence_kl(self, prompts, responses: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``(N,)`` float64: each response's KL estimate to the reference, summed over its
        tokens (``algo.kl_estimator``; no gradient)."""
        estimate = KL_ESTIMATORS.get(self.config.algo.kl_estimator)
        size, out = self.config.algo.minibatch_size, []
        with torch.no_grad():
            for first in range(0, len(prompts), size):
                rows = slice(first, first + size)
                logp = self._score(self.acc.unwrap_model(self.model), prompts[rows], responses[rows]).logp
                kl = estimate(logp, self._reference_logprobs(prompts[rows], responses[rows]))
                out.append((kl * mask[rows].to(kl.device)).sum(-1).double().cpu())
        return torch.cat(out)

    def train_step(self) -> dict[str, Any]:
        """One step, as named steps: draw the prompts -> rollout, rewards, zero-variance
        filter / refill and advantages -> old log-probs and the policy update -> the
        estimator's own state -> adaptive weights and curriculum -> metrics."""
        start = time.perf_counter()
        records, n_prompts = self.draw_prompts()
        scored = self.sample_and_score(records)
        stats = self._update(scored)
        G = self.config.rollout.group_size
        self.estimator_hook.observe([rec["id"] for rec in scored.records for _ in range(G)], scored.rewards.tolist(),
                                    stats)
        outcome = self._gather_outcome(scored)
        self._update_weights(outcome)
        self.scheduler.step()
        self.counter.step += 1
        metrics = self._step_metrics(scored, outcome, stats, n_prompts)
        metrics["seconds"] = time.perf_counter() - start
        return metrics

    def draw_prompts(self) -> tuple[list[dict[str, Any]], int]:
        """The stratified sampler's global batch (the same on every rank): this rank's share of
        the records (every world_size-th), and the global batch size."""
        batch = self.sampler.next_batch()
        self.prepared.clear()  # last step's prompts
        return [self.items[i] for i in batch[self.acc.process_index::self.acc.num_processes]], len(batch)

    def _gather_outcome(self, scored: Scored) -> StepOutcome:
        """Every rank's responses of the step, merged (ranks hold different counts)."""
        from accelerate.utils import gather_object

        local = [(int(t), float(r), correctness(c), bool(z), bool(cut)) for t, r, c, z, cut in
                 zip(scored.tag_ids, scored.rewards, scored.components, scored.zero_variance, scored.truncated)]
        merged = gather_object(local) if self.acc.num_processes > 1 else local
        rewards, correct, zero_variance, truncated = (
            torch.tensor([row[k] for row in merged], dtype=torch.float64) for k in (1, 2, 3, 4))
        return StepOutcome([TAGS[row[0]] for row in merged], rewards, correct, zero_variance, truncated)

    def _update_weights(self, outcome: StepOutcome) -> None:
        """Adaptive stratum weights from every rank's rewards; the dynamic curriculum follows them."""
        if self.config.weights.adaptive:
            self.weights.update(outcome.tags, outcome.rewards.tolist())
            if self.config.sampling.curriculum == "dynamic":
                self.sampler.set_weights(self.weights.weights())

    def _step_metrics(self, scored: Scored, outcome: StepOutcome, stats: dict[str, float],
                      n_prompts: int) -> dict[str, Any]:
        """The step's ``metrics.jsonl`` line (rewards and fractions over every rank)."""
        cfg, comps = self.config, scored.components
        per_tag: dict[str, list[float]] = {}
        for tag, value in zip(outcome.tags, outcome.rewards.tolist()):
            per_tag.setdefault(tag, []).append(value)
        metrics = {
            "step": self.counter.step, "reward": float(outcome.rewards.mean()),
            "accuracy": float(outcome.correct.mean()),
            "reward_per_rmt": {t: sum(v) / len(v) for t, v in sorted(per_tag.items(), key=lambda kv: TAGS.index(kv[0]))},
            "stratum_weights": self.weights.weights(),
            "zero_variance_fraction": float(outcome.zero_variance.mean()),
            "truncated_fraction": float(outcome.truncated.mean()),
            "reward_components": {k: sum(c.get(k, 0.0) for c in comps) / len(comps) for k in sorted({*comps[0]})},
            "lr": float(self.scheduler.get_last_lr()[0]), "prompts": n_prompts, **stats,
        }
        if scored.kl is not None:  # KL in the reward: mean per response token over every rank
            kl_sum, tokens = self.acc.reduce(torch.tensor([float(scored.kl.sum()), float(scored.mask.sum())],
                                                          device=self.acc.device), reduction="sum").tolist()
            metrics["kl_ref"] = kl_sum / tokens
        if cfg.algo.refill_rounds:  # every rank ran the same rounds; replacements are counted over all
            metrics["refill_rounds"] = scored.refill_rounds
            metrics["refilled"] = int(self.acc.reduce(torch.tensor(scored.refilled, device=self.acc.device),
                                                      reduction="sum"))
        if cfg.log_samples_every and self.counter.step % cfg.log_samples_every == 0:
            G = cfg.rollout.group_size
            metrics["samples"] = [{"item": rec["id"], "completion": scored.texts[k * G]}
                                  for k, rec in enumerate(scored.records[:2])]
        return metrics

    def _reference_logprobs(self, prompts, responses: torch.Tensor) -> torch.Tensor | None:
        """Log-probs ``(B, T)`` under the KL reference (None without KL): the frozen copy, or
        with LoRA the policy with its adapters disabled."""
        if not self.config.algo.kl_coef:
            return None
        if self.reference is not None:
            return self._score(self.reference, prompts, responses).logp
        policy = self.acc.unwrap_model(self.model)
        with policy.disable_adapter():
            return self._score(policy, prompts, responses).logp

    def _rollout_is_weights(self, old: list[torch.Tensor], rollout_logp: torch.Tensor | None, mask: torch.Tensor,
                            chunks: list[list[int]]) -> list[torch.Tensor | None]:
        """Per minibatch, the ``algo.rollout_is`` importance weights ``pi_old / pi_rollout``
        (None when off)."""
        mode = self.config.algo.rollout_is
        if mode == "none":
            return [None] * len(chunks)
        if rollout_logp is None:
            raise ValueError(f"algo.rollout_is={mode} needs the engine's log-probs; "
                             f"{self.config.rollout.engine} returned none (sampling at temperature 0?)")
        return [rollout_is_weights(o, rollout_logp[c].to(o.device), mask[c].to(o.device), mode,
                                   self.config.algo.rollout_is_threshold) for o, c in zip(old, chunks)]

    def _update(self, scored: Scored) -> dict[str, float]:
        """Old log-probs (compared with the engine's), then the PPO epochs over minibatches of
        the kept sequences. The minibatches of the step's first optimizer update run on the
        policy that sampled, so with ``algo.old_logprobs=auto`` their old log-probs are the
        training forward's own, detached (TRL's rule; bit for bit the separate pass's
        values): a separate no-grad pass runs only for minibatches trained after an update."""
        cfg = self.config
        prompts, responses, mask, advantages, strata = (scored.prompts, scored.responses, scored.mask,
                                                        scored.advantages, scored.strata)
        rows = torch.nonzero(scored.keep).flatten().tolist()
        totals: Counter = Counter()
        tokens = torch.tensor(float(mask[rows].sum()) if rows else 0.0, device=self.acc.device)
        weight_vec = torch.tensor([self.weights.weights()[t] for t in TAGS], dtype=torch.float64)
        if cfg.algo.stratify_by != "rmt":
            weight_vec = torch.ones(len(TAGS), dtype=torch.float64)
        chunks = [rows[i:i + cfg.algo.minibatch_size] for i in range(0, len(rows), cfg.algo.minibatch_size)]
        n_global = int(self.acc.gather(torch.tensor([len(chunks)], device=self.acc.device)).max())
        accum = max(1, cfg.algo.gradient_accumulation_steps)
        # minibatches of the first optimizer update: pi_old is the policy their training forward runs
        before_update = min(accum, len(chunks)) if cfg.algo.old_logprobs == "auto" else 0
        old: list[torch.Tensor | None] = [None] * len(chunks)
        ref: list[torch.Tensor | None] = []
        kl_in_loss = bool(cfg.algo.kl_coef) and cfg.algo.kl_in == "loss"
        self.model.train()
        with torch.no_grad():
            for k, chunk in enumerate(chunks):
                chunk_prompts = [prompts[i] for i in chunk]
                if k >= before_update:
                    old[k] = self._score(self.acc.unwrap_model(self.model), chunk_prompts, responses[chunk]).logp
                ref.append(self._reference_logprobs(chunk_prompts, responses[chunk]) if kl_in_loss else None)
        updates = 0
        for _ in range(cfg.algo.ppo_epochs):
            for first in range(0, n_global, accum):  # every rank steps equally often (DDP collectives match)
                group = range(first, min(first + accum, n_global))
                self.optimizer.zero_grad()
                for k in group:
                    if k < len(chunks):
                        chunk = chunks[k]
                        logp, entropy, router_aux = self._score(self.model, [prompts[i] for i in chunk],
                                                                responses[chunk], router_aux=True)
                        if old[k] is None:  # no update yet: the training forward is pi_old's
                            old[k] = logp.detach()
                        (is_weights,) = self._rollout_is_weights([old[k]], scored.rollout_logp, mask, [chunk])
                        adv = advantages[chunk].to(logp.device)
                        if cfg.algo.entropy_shaping:  # MSSR: (B,) -> (B, T), shaped by each token's entropy
                            adv = entropy_shaped_advantages(adv, entropy, cfg.algo.entropy_shaping_alpha,
                                                            cfg.algo.entropy_shaping_kappa)
                        loss, m = policy_loss(logp, old[k], adv, mask[chunk].to(logp.device), cfg.algo,
                                              horizon=cfg.rollout.max_new_tokens,
                                              strata=strata[chunk].to(logp.device),
                                              stratum_weights=weight_vec.to(logp.device), ref_logp=ref[k],
                                              entropy=entropy, is_weights=is_weights)
                        if router_aux is not None:  # a MoE policy: logged, and added with router_aux_coef
                            m["router_aux_loss"] = float(router_aux.detach())
                            loss = loss + cfg.algo.router_aux_coef * router_aux.to(loss.device)
                        for key in LOSS_METRICS:
                            totals[key] += m.get(key, 0.0)
                        totals["n"] += 1
                    else:  # nothing left here: a forward with zero loss keeps DDP's collectives in step
                        logp = self._score(self.model, prompts[:1], responses[:1]).logp
                        loss = logp.sum() * 0.0
                    self.acc.backward(loss / len(group))
                grad_norm = self.acc.clip_grad_norm_(self.model.parameters(), cfg.optim.max_grad_norm)
                self.optimizer.step()
                self.engine_stale = True
                totals["grad_norm"] += float(grad_norm)
                updates += 1
        n = max(totals.pop("n", 0), 1)
        optional = {"kl_ref": kl_in_loss, "is_weight_mean": cfg.algo.rollout_is != "none",
                    "router_aux_loss": self.family is not None and self.family.moe}
        out = {key: totals[key] / n for key in LOSS_METRICS if optional.get(key, True)}
        if scored.rollout_logp is not None and chunks:  # engine vs trainer, on the trained tokens
            out |= logprob_mismatch(torch.cat(old).cpu(), scored.rollout_logp[rows], mask[rows])
        out["grad_norm"] = totals["grad_norm"] / max(updates, 1)
        out["old_logprob_passes"] = len(chunks) - before_update  # no-grad forwards for pi_old (0: all from training)
        out["tokens"] = float(self.acc.reduce(tokens, reduction="sum"))
        out["updates"] = updates
        return out

    # ------------------------------------------------------------ loop

    def _open_loggers(self) -> list:
        """TensorBoard / wandb writers when enabled (rank 0 only)."""
        loggers: list = []
        if not self.acc.is_main_process:
            return loggers
        if self.config.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as exc:
                raise MissingExtra("tensorboard=true needs the tensorboard package: pip install tensorboard") from exc
            loggers.append(("tensorboard", SummaryWriter(str(self.out / "tensorboard"))))
        if self.config.wandb:
            try:
                import wandb
            except ImportError as exc:
                raise MissingExtra("wandb=true needs wandb: pip install wandb (and wandb login)") from exc
            loggers.append(("wandb", wandb.init(project="maple", name=self.config.name or None,
                                                config=to_dict(self.config), dir=str(self.out))))
        return loggers

    def log(self, metrics: dict[str, Any]) -> None:
        """metrics.jsonl (every field), plus the numeric scalars to TensorBoard / wandb."""
        if not self.acc.is_main_process:
            return
        with Journal(self.out / METRICS) as handle:
            handle.append([metrics])
        scalars = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and k != "step"}
        scalars.update({f"reward/{t}": v for t, v in metrics.get("reward_per_rmt", {}).items()})
        scalars.update({f"weight/{t}": v for t, v in metrics.get("stratum_weights", {}).items()})
        for kind, logger in getattr(self, "loggers", []):
            if kind == "tensorboard":
                for key, value in scalars.items():
                    logger.add_scalar(key, value, metrics["step"])
            else:
                logger.log(scalars, step=metrics["step"])

    def save_final(self) -> Path:
        """``final/``: the policy as a model folder (:meth:`write_model`), written atomically."""
        final = self.out / FINAL
        self.acc.wait_for_everyone()
        if self.acc.is_main_process:
            with atomic_folder(final) as tmp:
                self.write_model(tmp)
        self.acc.wait_for_everyone()
        return final

    def write_model(self, folder: Path) -> None:
        """A complete model folder of the current policy in ``folder`` (main process): with
        LoRA, the adapters merged into the base weights and the adapter alone in
        ``adapter/``; plus the tokenizer and processor files, in the layout both transformers
        and vLLM load (an omni Thinker inside its family's full config:
        ``maple_data.models.omni_folder``)."""
        policy = self.acc.unwrap_model(self.model)
        if self.config.model.lora.rank:
            policy.save_pretrained(folder / "adapter")
            policy = copy.deepcopy(policy).merge_and_unload()
        save_omni(policy, folder)
        copy_processor_files(self.out / PROCESSOR, folder, self.family)
        missing = missing_model_files(folder, self.family)
        if missing:  # never report a model folder that would not load
            raise FileNotFoundError(f"the model folder written to {folder} lacks {', '.join(missing)}")

    def format_warmup(self) -> list[float]:
        """Supervised warm-up on ``Answer: <letter>``. With ``format_warmup_target:
        random`` the letter is a random option's: it teaches the answer format only (the
        letter carries no information), so RL starts from a policy whose answers can be
        parsed. With ``answer`` it is the correct option's (plain supervised fine-tuning).
        Returns the losses."""
        from maple_data.answers import option_letter

        cfg = self.config
        model = self.model
        optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.format_warmup_lr)
        generator = torch.Generator().manual_seed(cfg.seed + 1)
        tokenizer = self.encoder.tokenizer
        losses = []
        model.train()
        for _ in range(cfg.format_warmup_steps):
            self.prepared.clear()
            picks = torch.randint(len(self.items), (cfg.sampling.batch_size,), generator=generator).tolist()
            records = [self.items[i] for i in picks[self.acc.process_index::self.acc.num_processes]]
            letters = [int(torch.randint(len(r["options"] or ["x"]), (1,), generator=generator)) for r in records]
            if cfg.format_warmup_target == "answer":
                letters = [r["options"].index(r["answer"]) for r in records]
            targets = [f"Answer: {option_letter(k)}<|im_end|>" for k in letters]
            ids = tokenizer(targets, return_tensors="pt", padding=True, add_special_tokens=False)
            responses = ids["input_ids"].to(self.acc.device)
            logp = self._score(model, [self._prompt(r) for r in records], responses).logp
            mask = ids["attention_mask"].to(logp.device).to(logp.dtype)
            loss = -(logp * mask).sum() / mask.sum()
            optimizer.zero_grad()
            self.acc.backward(loss)
            optimizer.step()
            self.engine_stale = True
            losses.append(float(loss.detach()))
        return losses

    def run(self, on_step=None) -> Path:
        """Train to ``config.steps``; returns the final model folder (a checkpoint is
        written and the run stops cleanly on SIGINT)."""
        previous = signal.signal(signal.SIGINT, self._on_sigint)
        self.loggers = self._open_loggers()
        try:
            if self.counter.step == 0 and self.config.format_warmup_steps:
                self.log({"step": 0, "format_warmup_loss": self.format_warmup()})
                if self.reference is not None:
                    self.reference.load_state_dict(self.acc.unwrap_model(self.model).state_dict())
            while self.counter.step < self.config.steps:
                metrics = self.train_step()
                self.log(metrics)
                if on_step is not None:
                    on_step(metrics)
                at_save = self.config.save_every and self.counter.step % self.config.save_every == 0
                if at_save or self.interrupted:
                    self.save_checkpoint()
                if self.interrupted:
                    raise KeyboardInterrupt
            self.save_checkpoint()
            return self.save_final()
        finally:
            signal.signal(signal.SIGINT, previous)
            for kind, logger in self.loggers:
                logger.close() if kind == "tensorboard" else logger.finish()
            self.held.close()

    def _on_sigint(self, *_: Any) -> None:
        self.interrupted = True
