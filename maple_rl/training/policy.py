"""The policy a run trains: loading (an omni model's Thinker, else a causal LM), frozen
encoders, LoRA adapters, and its AdamW optimizer with the learning-rate schedule."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence

import torch

from maple_data.errors import MissingExtra
from maple_data.models.families import ModelFamily, find_family
from maple_data.models.model_source import check_model
from maple_rl.errors import ConfigError
from maple_rl.training.config import LoraConfig, TrainConfig


def lr_lambda(config: TrainConfig) -> Callable[[int], float]:
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


def optimizer_and_schedule(model: torch.nn.Module, config: TrainConfig):
    """AdamW over the trainable parameters (``optim``) and its per-step :func:`lr_lambda` schedule."""
    o = config.optim
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=o.lr, betas=o.betas,
                                  weight_decay=o.weight_decay)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(config))


def policy_dtype(name: str) -> torch.dtype:
    """``model.dtype``'s torch dtype; ``auto``: bfloat16 on CUDA, float32 on CPU."""
    dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    return dtypes.get(name, torch.bfloat16 if torch.cuda.is_available() else torch.float32)


def freeze_encoders(model: torch.nn.Module, parts: Sequence[str], family: ModelFamily | None) -> None:
    """Freeze the named encoders (``vision``, ``audio``) of an omni model of ``family`` in place."""
    for part in parts:
        module = family.encoder(model, part) if family else None
        if module is None:
            raise ConfigError(f"model.freeze: {type(model).__name__} has no {part} encoder to freeze")
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
        raise ConfigError(f"model.lora.target_modules: {pattern!r} matches no linear layer of {type(model).__name__}")
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
