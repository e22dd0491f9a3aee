"""``maple-rl plan``: the memory one training step needs, from a model folder's config and a
recipe, before any weight is loaded (the model is built on the meta device to count its
parameters exactly).

Per process, for weights in ``s`` bytes per value (bf16: 2; ``model.dtype: auto`` counts
as bf16, the GPU default), with ``P`` parameters of which ``P_t`` are trained (every
weight outside frozen encoders, or the LoRA adapters alone) and ``N`` processes sharing
the model states under FSDP (1 otherwise):

- weights ``P s``, gradients ``P_t s``, AdamW state ``2 P_t s`` (torch keeps it in the
  parameters' dtype), a frozen reference ``P s`` when ``algo.kl_coef > 0`` without LoRA
  (LoRA's reference is the base model with its adapters off); each divided by ``N``;
- the step's working memory, the largest of its three phases:
  - generation (``G`` samples of each of the process's prompts, ``R`` sequences): the
    KV cache ``2 L_text R S d_kv s`` for ``S`` = prompt + response tokens, the inputs, the
    largest transient of one layer's forward, and the sampler's ``(R, V)`` float32 scores;
  - the update's forward and backward on a minibatch of ``m`` sequences: the activations
    autograd keeps, per token and text layer (a dense layer: ``2 (4 h + 2 h s)`` for the
    two RMSNorms in float32, ``(3 d_q + 2 d_kv) s`` for attention with SDPA, ``4 I s`` for
    the gated MLP, ``(4 + s) (d_q + d_kv)`` more with per-head query / key norms; a
    mixture-of-experts layer: ``k (2 h + 4 I_e) s`` for its ``k`` routed experts plus the
    router's ``E`` logits in float32), or with gradient checkpointing
    ``h s`` per layer plus one layer's; the encoders' activations when they are trained; the
    response logits ``m T V s`` and their gradient (only the response positions: logits are
    never computed for the prompt) and the log-softmax's two float32 chunks; the inputs;
  - the inputs of a minibatch: video patches and log-mels in float32 plus a copy in the
    model's dtype, and the attention mask ``m S^2`` bytes.

Every sequence counts as the longest prompt (the plan is for the worst batch): with prompts
of mixed modality subsets the step needs less.

The model's shapes come from its ``config.json``; the prompt length from a benchmark's
items (``--data``: the longest of the first items, encoded as training encodes them) or
from the media sizes given.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from maple_data.models.families import ModelFamily, find_family
from maple_data.models.model_source import model_config
from maple_data.models.qwen_video import VisionSpec, smart_resize
from maple_rl.algorithms.logprobs import CHUNK_ELEMENTS
from maple_rl.training.config import TrainConfig

GiB = 2**30
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "auto": 2}
SAMPLING_COPIES = 6  # (R, V) float32 tensors a sampling step holds: logits, tempered, log-softmax, noise (x2), scores


def _text_config(config: dict[str, Any]) -> dict[str, Any]:
    thinker = config.get("thinker_config", config)
    return thinker.get("text_config", thinker)


def meta_model(path: str):
    """The model of ``path`` built on the meta device from its config (no memory, no weights):
    the Thinker of an omni family, else a causal LM; and its family."""
    import torch
    import transformers

    family = find_family(path)
    with torch.device("meta"):
        if family is not None:
            thinker = model_config(path).get("thinker_config", model_config(path))
            config = getattr(transformers, family.thinker_config_class)(
                **{k: v for k, v in thinker.items() if k not in ("architectures", "model_type")})
            return family.thinker_type()(config), family
        config = transformers.AutoConfig.from_pretrained(path)
        return transformers.AutoModelForCausalLM.from_config(config), None


@dataclass(frozen=True)
class ModelShape:
    """What memory depends on: parameter counts by part and the text model's widths."""

    params: dict[str, int]  # text, vision, audio (encoders), each part's count
    lora: int  # LoRA adapter parameters for the recipe's rank and targets (0 without LoRA)
    layers: int
    hidden: int
    q_dim: int
    kv_dim: int
    intermediate: int
    vocab: int
    experts: int = 0  # 0: a dense model
    experts_per_token: int = 0
    expert_intermediate: int = 0
    qk_norm: bool = False  # RMSNorm on each head's queries and keys (Qwen3)
    vision: dict[str, int] = field(default_factory=dict)  # hidden, depth, intermediate, patch_dim
    audio: dict[str, int] = field(default_factory=dict)  # hidden, layers, intermediate, mel_bins
    family: ModelFamily | None = None

    @property
    def total(self) -> int:
        return sum(self.params.values())

    @classmethod
    def of(cls, path: str, config: TrainConfig) -> ModelShape:
        model, family = meta_model(path)
        encoders = family.encoders if family else {}
        params = {"text": 0, **{part: 0 for part in encoders}}
        modules = {part: family.encoder(model, part) for part in encoders}
        counted = set()
        for part, module in modules.items():
            if module is not None:
                for p in module.parameters():
                    counted.add(id(p))
                    params[part] += p.numel()
        seen = set()
        for p in model.parameters():
            if id(p) not in counted and id(p) not in seen:
                seen.add(id(p))
                params["text"] += p.numel()
        text = _text_config(model_config(path)) if family else model.config.to_dict()
        heads = text["num_attention_heads"]
        head = text.get("head_dim") or text["hidden_size"] // heads
        vision, audio = {}, {}
        if family is not None:
            v = model_config(path).get("thinker_config", {}).get("vision_config", {})
            a = model_config(path).get("thinker_config", {}).get("audio_config", {})
            vision = {"hidden": v.get("hidden_size", 0), "depth": v.get("depth", 0),
                      "intermediate": v.get("intermediate_size", 0),
                      "patch_dim": v.get("in_channels", 3) * v.get("temporal_patch_size", 2) * v.get("patch_size", 14) ** 2}
            audio = {"hidden": a.get("d_model", 0), "layers": a.get("encoder_layers", 0),
                     "intermediate": a.get("encoder_ffn_dim", 0), "mel_bins": a.get("num_mel_bins", 128)}
        qk_norm = any(name.endswith(".q_norm") for name, _ in model.named_modules())
        return cls(params, lora_parameters(model, config), text["num_hidden_layers"], text["hidden_size"],
                   heads * head, text.get("num_key_value_heads", heads) * head, text.get("intermediate_size", 0),
                   text["vocab_size"], text.get("num_experts", 0), text.get("num_experts_per_tok", 0),
                   text.get("moe_intermediate_size", 0), qk_norm, vision, audio, family)


def lora_parameters(model, config: TrainConfig) -> int:
    """Adapter parameters peft adds for ``model.lora``: ``rank (in + out)`` per targeted linear layer."""
    from maple_rl.training.policy import lora_targets

    if not config.model.lora.rank:
        return 0
    modules = dict(model.named_modules())
    return sum(config.model.lora.rank * (modules[n].in_features + modules[n].out_features)
               for n in lora_targets(model, config.model.lora.target_modules))


@dataclass(frozen=True)
class PromptSize:
    """One prompt's tokens and media: ``tokens`` in all, video patches of ``patch_dim``
    values, log-mel frames of ``mel_bins``."""

    tokens: int
    patches: int = 0
    patch_dim: int = 0
    mel_frames: int = 0
    mel_bins: int = 0

    @classmethod
    def from_media(cls, model: str, *, frames: int, height: int, width: int, audio_seconds: float,
                   text_tokens: int) -> PromptSize:
        """The prompt of ``frames`` frames of ``height x width`` (resized as the model
        folder's processor settings resize them), ``audio_seconds`` of audio and
        ``text_tokens`` of text, for the model at ``model``."""
        family = find_family(model)
        if family is None:
            return cls(text_tokens)
        spec = VisionSpec.from_config(model_config(model, "preprocessor_config.json"), family.vision)
        p, m, tp = spec.patch_size, spec.merge_size, spec.temporal_patch_size
        h, w = smart_resize(height, width, p * m, spec.min_pixels, spec.max_pixels) if frames else (0, 0)
        patches = math.ceil(frames / tp) * (h // p) * (w // p)
        mel = int(round(audio_seconds * 100))
        media_tokens = patches // m ** 2 + (family.audio_tokens(mel) if mel else 0)
        bins = model_config(model, "preprocessor_config.json").get("feature_size", 128)
        return cls(text_tokens + media_tokens + 3 * bool(frames) + 3 * bool(mel), patches, 3 * tp * p * p, mel, bins)


@dataclass
class StepPlan:
    """Predicted bytes of one training step on one process (see the module docstring)."""

    shape: ModelShape
    prompt: PromptSize
    prompt_tokens: int
    states: dict[str, float]  # weights, gradients, optimizer, reference
    phases: dict[str, float]  # generation, update (with the current checkpointing), scoring
    activations: dict[str, float]  # update activations with and without gradient checkpointing
    logits: float  # response logits of one minibatch (and as much for their gradient)
    processes: int = 1

    def peak_bytes(self) -> float:
        return sum(self.states.values()) + max(self.phases.values())

    def gpus_needed(self, gpu_bytes: float) -> int | None:
        """Fewest processes (GPUs) whose share of the model states plus the working memory
        fit ``gpu_bytes`` under FSDP; None when the working memory alone does not."""
        work, states = max(self.phases.values()), sum(self.states.values()) * self.processes
        if work >= gpu_bytes:
            return None
        return max(1, math.ceil(states / (gpu_bytes - work)))


def plan_step(config: TrainConfig, *, prompt: PromptSize | None = None, prompt_tokens: int | None = None,
              processes: int = 1) -> StepPlan:
    """The memory of one step of ``config`` (its model folder, dtype, LoRA, KL, group,
    minibatch, response length, gradient checkpointing) for ``prompt`` (default: measured on
    ``config.data.path``'s items), on each of ``processes`` FSDP processes."""
    shape = ModelShape.of(config.model.path, config)
    if prompt is None:
        prompt = measured_prompt(config) if prompt_tokens is None else PromptSize(prompt_tokens)
    s = DTYPE_BYTES[config.model.dtype]
    frozen = {part for part in config.model.freeze}
    trained_parts = [] if config.model.lora.rank else [p for p in shape.params if p not in frozen]
    trainable = shape.lora or sum(shape.params[p] for p in trained_parts)
    kl = config.algo.kl_coef > 0 and not config.model.lora.rank
    states = {"weights": (shape.total + shape.lora) * s / processes, "gradients": trainable * s / processes,
              "optimizer": 2 * trainable * s / processes, "reference": shape.total * s / processes if kl else 0.0}
    T = config.rollout.max_new_tokens
    S = prompt.tokens + T
    group = config.rollout.group_size
    per_process = math.ceil(config.sampling.batch_size / processes)
    R = per_process * group
    m = min(config.algo.minibatch_size, R)
    h = shape.hidden
    full_layer = m * S * text_layer_bytes(shape, s)
    layers = shape.layers
    activations = {"without_checkpointing": layers * full_layer,
                   "with_checkpointing": layers * m * S * h * s + full_layer}
    saved = activations["with_checkpointing" if config.model.gradient_checkpointing else "without_checkpointing"]
    saved += m * S * h * s * 2  # the embeddings' output and the final norm's input
    saved += encoder_activation_bytes(shape, prompt, m, s, trained_parts)
    logits = m * T * shape.vocab * s
    chunks = 2 * 4 * min(m * T * shape.vocab, CHUNK_ELEMENTS)  # the log-softmax's two float32 chunks
    update = saved + 2 * logits + chunks + inputs_bytes(prompt, m, S, s)
    kv = 2 * layers * R * S * shape.kv_dim * s
    transient = layer_transient_bytes(shape, R, prompt.tokens, s)
    sampling = SAMPLING_COPIES * R * shape.vocab * 4  # each decoding step's (R, V) float32 scores and noise
    generation = kv + transient + inputs_bytes(prompt, R, S, s) + sampling
    scoring = layer_transient_bytes(shape, m, S, s) + inputs_bytes(prompt, m, S, s) + logits + chunks
    phases = {"generation": generation, "update": update, "scoring": scoring}
    return StepPlan(shape, prompt, prompt.tokens, states, phases, activations, logits, processes)


def text_layer_bytes(shape: ModelShape, s: int) -> float:
    """Bytes autograd keeps per token for one text layer (module docstring)."""
    h = shape.hidden
    norms = 2 * (4 * h + 2 * h * s)
    attention = (3 * shape.q_dim + 2 * shape.kv_dim) * s
    if shape.qk_norm:  # an RMSNorm per head on queries and keys: float32 input and normalised copy
        attention += (4 + s) * (shape.q_dim + shape.kv_dim)
    if shape.experts:
        mlp = shape.experts_per_token * (2 * h + 4 * shape.expert_intermediate) * s + 4 * shape.experts
    else:
        mlp = 4 * shape.intermediate * s
    return norms + attention + mlp


def layer_transient_bytes(shape: ModelShape, sequences: int, tokens: int, s: int) -> float:
    """The largest tensors alive at once in one layer's forward without gradient: its input,
    output and the MLP's hidden activations (every expert's tokens for a MoE layer)."""
    width = shape.experts_per_token * shape.expert_intermediate if shape.experts else shape.intermediate
    return sequences * tokens * (3 * shape.hidden + 3 * width) * s


def encoder_activation_bytes(shape: ModelShape, prompt: PromptSize, m: int, s: int, trained: list[str]) -> float:
    """Activations kept for the encoders that are trained (none with LoRA or when frozen):
    per patch (or mel frame after the audio tower's 2x downsampling) and layer, like a
    transformer layer of the encoder's width (norms, attention, a 4x-wide MLP)."""
    total = 0.0
    if "vision" in trained and shape.vision:
        v = shape.vision
        total += m * prompt.patches * v["depth"] * (2 * 2 * v["hidden"] * 4 + (4 * v["hidden"] + 4 * v["intermediate"]) * s)
    if "audio" in trained and shape.audio:
        a = shape.audio
        total += m * (prompt.mel_frames // 2) * a["layers"] * (2 * 2 * a["hidden"] * 4 + (4 * a["hidden"] + 2 * a["intermediate"]) * s)
    return total


def inputs_bytes(prompt: PromptSize, sequences: int, length: int, s: int) -> float:
    """A batch's inputs: video patches and log-mels in float32 (and a copy in the model's
    dtype when it is another), the 4-D attention mask (one byte per query-key pair) and the
    ids. Every sequence counts as the longest prompt: the plan is for the worst batch."""
    media = sequences * (prompt.patches * prompt.patch_dim + prompt.mel_frames * prompt.mel_bins) * (4 + s % 4)
    return media + sequences * length * length + sequences * length * 8 * 6


def measured_prompt(config: TrainConfig, items: int = 16) -> PromptSize:
    """The longest prompt (tokens, patches, mel frames) among the first ``items`` training
    items of ``config.data``, built and encoded as the trainer builds them."""
    from maple_data.models.omni_inputs import OmniEncoder
    from maple_data.models.prompts import build_prompt
    from maple_rl.training.data import load_items, media_of

    records = load_items(config.data.path, config.data.config, config.data.split, config.data.task)[:items]
    encoder = OmniEncoder(config.model.path)
    longest = PromptSize(0)
    for record in records:
        given = record["rmt"] if config.data.input_modalities == "rmt" else record["available_modalities"]
        prepared = encoder.prepare(build_prompt(record["question"], record["options"], media_of(record), given))
        tokens = len(encoder.tokenizer(prepared.text, add_special_tokens=False)["input_ids"])
        video, audio = prepared.video, prepared.audio
        size = PromptSize(tokens, *(video.pixels.shape if video else (0, 0)),
                          *((audio.mel.shape[1], audio.mel.shape[0]) if audio else (0, 0)))
        longest = max(longest, size, key=lambda p: (p.tokens, p.patches, p.mel_frames))
    return longest
