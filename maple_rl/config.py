"""Training configuration: documented dataclasses, loaded from YAML recipes
(``pipelines/*.yaml``) with dotted command-line overrides (``--set algo.clip_high=0.28``).

Every field has a default; a recipe only states what it changes. Unknown keys are errors
(typos must not pass silently).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

T = TypeVar("T")


@dataclass
class ModelConfig:
    path: str = "Qwen/Qwen2.5-Omni-3B"  # hub id or local folder (a Qwen2.5-Omni Thinker is trained)
    dtype: str = "auto"  # float32 / bfloat16 / float16 / auto (bf16 on CUDA, fp32 on CPU)
    gradient_checkpointing: bool = False


@dataclass
class DataConfig:
    path: str = ""  # benchmark folder (Parquet; see `config`) or a folder / file of record shards
    config: str = "auto"  # benchmark config; auto: full-input rows of qa_all_combinations (or caption)
    split: str = "train"
    task: str = "qa"  # qa or caption items
    input_modalities: Literal["rmt", "all"] = "rmt"  # rmt: only the tag's modalities (MAPO); all: everything


@dataclass
class RolloutConfig:
    engine: Literal["hf", "vllm"] = "hf"  # hf: policy.generate; vllm: colocated engine, weights synced per update
    group_size: int = 8  # G responses per prompt
    temperature: float = 1.0
    max_new_tokens: int = 16
    vllm_gpu_memory_utilization: float = 0.3  # share of GPU memory the colocated engine may take
    vllm_max_model_len: int = 16384  # prompt + response tokens the engine accepts


@dataclass
class AlgoConfig:
    estimator: str = "grpo"  # maple_rl.advantages registry name
    estimator_options: dict[str, Any] = field(default_factory=dict)  # e.g. {norm: stratum} for mapo
    stratify_by: Literal["rmt", "none"] = "rmt"  # strata in advantages and loss averaging
    early_filter: bool = True  # drop zero-variance groups before any log-prob work
    ppo_epochs: int = 1  # mu
    minibatch_size: int = 16  # sequences per forward/backward pass
    gradient_accumulation_steps: int = 1  # minibatches per optimizer step
    clip_low: float = 0.2
    clip_high: float = 0.28
    dual_clip: float | None = None
    aggregation: str = "seq-mean-token-mean"
    stratum_average: bool = True
    kl_coef: float = 0.0


@dataclass
class WeightsConfig:
    adaptive: bool = False  # difficulty-adaptive stratum weights (MAPLE)
    window: int = 512
    bins: int = 10
    tau: float = 1.0
    w_min: float = 0.25
    w_max: float = 4.0
    warmup: int = 10


@dataclass
class SamplingConfig:
    batch_size: int = 8  # prompts per step (global, over all ranks)
    batch_mode: Literal["mixed", "homogeneous"] = "mixed"
    quota: Literal["proportional", "equal"] = "proportional"
    curriculum: Literal["none", "static", "dynamic"] = "none"
    replay: float = 0.2


@dataclass
class RewardConfig:
    correct: float = 1.0  # weight of the verifiable multiple-choice reward
    format: float = 0.0  # weight of the format reward (an option letter could be read)
    caption: float = 1.0  # weight of the caption similarity reward
    caption_metric: str = "token_f1"


@dataclass
class OptimConfig:
    lr: float = 2e-6
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 0
    decay: Literal["constant", "linear", "cosine"] = "constant"
    max_grad_norm: float = 1.0


@dataclass
class TrainConfig:
    """A whole run. ``output_dir`` receives metrics.jsonl, checkpoints/ and the final model."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    algo: AlgoConfig = field(default_factory=AlgoConfig)
    weights: WeightsConfig = field(default_factory=WeightsConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    steps: int = 100
    format_warmup_steps: int = 0  # supervised steps on "Answer: <letter>" before RL (same for every arm)
    format_warmup_lr: float = 1e-3
    format_warmup_target: Literal["random", "answer"] = "random"  # random letter: format only; answer: SFT
    save_every: int = 50
    log_samples_every: int = 10
    output_dir: str = "runs/maple"
    tensorboard: bool = False  # also log scalars to OUTPUT_DIR/tensorboard (needs the tensorboard package)
    wandb: bool = False  # also log to Weights & Biases (needs wandb and a login)
    seed: int = 0
    name: str = ""


def _coerce(kind: Any, value: Any, where: str) -> Any:
    """``value`` converted to the annotated type ``kind`` (dataclasses recursively)."""
    origin = typing.get_origin(kind)
    if dataclasses.is_dataclass(kind):
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected a mapping, got {value!r}")
        return _build(kind, value, where + ".")
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(kind) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in typing.get_args(kind):
                return None
        return _coerce(options[0], value, where)
    if origin is Literal:
        if value not in typing.get_args(kind):
            raise ValueError(f"{where}: {value!r} is not one of {list(typing.get_args(kind))}")
        return value
    if origin in (tuple, list):
        items = value if isinstance(value, (list, tuple)) else yaml.safe_load(str(value))
        if not isinstance(items, (list, tuple)):
            raise ValueError(f"{where}: expected a list, got {value!r}")
        args = typing.get_args(kind)
        if origin is list or (len(args) == 2 and args[1] is Ellipsis):  # list[X], tuple[X, ...]
            coerced = [_coerce(args[0], v, f"{where}[{i}]") for i, v in enumerate(items)]
            return coerced if origin is list else tuple(coerced)
        if len(items) != len(args):
            raise ValueError(f"{where}: expected {len(args)} values, got {value!r}")
        return tuple(_coerce(t, v, where) for t, v in zip(args, items))
    if origin is dict:
        return dict(value) if isinstance(value, dict) else yaml.safe_load(str(value))
    if kind is bool:
        if isinstance(value, str):
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(f"{where}: expected true or false, got {value!r}")
            return value.lower() in ("true", "1", "yes")
        return bool(value)
    if kind in (int, float, str):
        try:
            return kind(value)
        except (TypeError, ValueError):
            raise ValueError(f"{where}: expected {kind.__name__}, got {value!r}") from None
    return value


def _build(cls: type, raw: dict[str, Any], where: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise ValueError(f"unknown setting(s) {', '.join(where + k for k in unknown)}; "
                         f"known in {where.rstrip('.') or 'the top level'}: {', '.join(sorted(names))}")
    values = {k: _coerce(hints[k], v, f"{where}{k}") for k, v in raw.items()}
    return cls(**values)


def _set_dotted(tree: dict[str, Any], dotted: str) -> None:
    if "=" not in dotted:
        raise ValueError(f"override {dotted!r} must look like section.key=value")
    key, value = dotted.split("=", 1)
    parts = key.strip().split(".")
    node = tree
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = yaml.safe_load(value) if value.strip() else ""


def load_recipe(cls: type[T], recipe: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> T:
    """A config dataclass ``cls`` from a YAML recipe (optional) and ``section.key=value``
    overrides; unknown keys and values of the wrong type are errors."""
    tree: dict[str, Any] = {}
    if recipe is not None:
        with open(recipe, encoding="utf-8") as handle:  # the stream's name puts the file in YAML errors
            loaded = yaml.safe_load(handle) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{recipe}: a recipe is a YAML mapping")
        tree = loaded
    for dotted in overrides:
        _set_dotted(tree, dotted)
    return _build(cls, tree)


def load_config(recipe: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """A :class:`TrainConfig` from a YAML recipe (optional) and ``section.key=value`` overrides."""
    return load_recipe(TrainConfig, recipe, overrides)


def to_dict(config: TrainConfig) -> dict[str, Any]:
    return dataclasses.asdict(config)
