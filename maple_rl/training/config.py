"""Training configuration: documented dataclasses, loaded from YAML recipes
(``pipelines/*.yaml``, addressable by name) with dotted command-line overrides
(``--set algo.clip_high=0.28``).

These dataclasses are the one source of truth: the algorithm functions receive their
section (``policy_loss(..., config.algo)``, ``StratifiedSampler(tags, config.sampling)``,
``AdaptiveWeights(config.weights)``), and each field declares its default and its help
text (:func:`maple_data.settings.setting`; ``maple-rl recipe show NAME`` prints them). Every
field has a default; a recipe only states what it changes. Unknown keys and invalid values
are refused at load time with one line naming the key (typos must not pass silently).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from maple_data.plugins import import_plugins
from maple_data.settings import field_help, setting
from maple_rl.algorithms.catalog import ADVANTAGE_ESTIMATORS, AGGREGATIONS, KL_ESTIMATORS
from maple_rl.errors import ConfigError, MissingFile
from maple_rl.training.rewards import BUILT_IN, REWARDS

T = TypeVar("T")
# the shipped recipes: in the wheel (maple_rl/_pipelines) or the repository's pipelines/
RECIPES_DIR = next(p for p in (Path(__file__).resolve().parents[1] / "_pipelines",
                               Path(__file__).resolve().parents[2] / "pipelines") if p.is_dir())


@dataclass
class LoraConfig:
    rank: int = setting(0, help="LoRA rank (peft); 0: train every weight")
    alpha: float = setting(16.0, help="LoRA scaling numerator: updates are scaled by alpha / rank")
    target_modules: str = setting(
        r"^(?!.*(visual|audio_tower)).*\.(q_proj|k_proj|v_proj|o_proj)$", help="regex of adapted modules")

    def __post_init__(self) -> None:
        _require("rank", self.rank >= 0, "must be >= 0", self.rank)
        _require("alpha", self.alpha > 0, "must be > 0", self.alpha)


@dataclass
class ModelConfig:
    path: str = setting(
        "Qwen/Qwen2.5-Omni-3B", help="hub id or local folder (its Thinker is trained: Qwen2.5-Omni, Qwen3-Omni)")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = setting("auto", help="auto: bf16 on CUDA, fp32 on CPU")
    gradient_checkpointing: bool = setting(False, help="recompute activations in backward (less memory, slower)")
    freeze: list[Literal["vision", "audio"]] = setting(
        default_factory=list, help="encoders kept frozen, e.g. [vision, audio]")
    lora: LoraConfig = setting(default_factory=LoraConfig, help="parameter-efficient training (LoRA adapters)")


@dataclass
class DataConfig:
    path: str = setting("", help="benchmark folder (Parquet; see `config`) or a folder / file of record shards")
    config: str = setting("auto", help="benchmark config; auto: full-input rows of qa_all_combinations (or caption)")
    split: str = setting("train", help="benchmark split (or shard split) to train on")
    task: Literal["qa", "caption"] = setting("qa", help="which items to train on")
    input_modalities: Literal["rmt", "all"] = setting(
        "rmt", help="rmt: only the tag's modalities (MAPO); all: everything")


@dataclass
class RolloutConfig:
    engine: Literal["hf", "vllm"] = setting(
        "hf", help="hf: policy.generate; vllm: colocated engine, weights synced per update")
    group_size: int = setting(8, help="G responses per prompt")
    temperature: float = setting(1.0, help="sampling temperature of the rollouts")
    max_new_tokens: int = setting(16, help="response length cap (also the horizon of seq-mean-token-sum-norm)")
    vllm_gpu_memory_utilization: float = setting(0.3, help="share of GPU memory the colocated engine may take")
    vllm_max_model_len: int = setting(16384, help="prompt + response tokens the engine accepts")

    def __post_init__(self) -> None:
        _require("group_size", self.group_size >= 1, "must be >= 1", self.group_size)
        _require("temperature", self.temperature > 0, "must be > 0 (sampling)", self.temperature)
        _require("max_new_tokens", self.max_new_tokens >= 1, "must be >= 1", self.max_new_tokens)


@dataclass
class AlgoConfig:
    estimator: str = setting(
        "grpo", help="advantage estimator (maple_rl.algorithms.catalog): grpo, dr_grpo, batch, rloo, mapo, "
                     "stratified, mixed, mssr")
    estimator_options: dict[str, Any] = setting(default_factory=dict, help="e.g. {norm: stratum} for mapo")
    stratify_by: Literal["rmt", "none"] = setting("rmt", help="strata in advantages and loss averaging")
    early_filter: bool = setting(True, help="drop zero-variance groups before any log-prob work")
    refill_rounds: int = setting(
        0, help="DAPO dynamic sampling: rounds replacing zero-variance groups by same-RMT prompts")
    ppo_epochs: int = setting(1, help="mu: passes over the step's samples")
    minibatch_size: int = setting(16, help="sequences per forward/backward pass")
    gradient_accumulation_steps: int = setting(1, help="minibatches per optimizer step")
    old_logprobs: Literal["auto", "recompute"] = setting(
        "auto", help="auto: pi_old from the training forward until the first update")
    clip_low: float = setting(0.2, help="PPO eps_low: the ratio is clipped below at 1 - clip_low")
    clip_high: float = setting(0.28, help="PPO eps_high (DAPO clip-higher): clipped above at 1 + clip_high")
    dual_clip: float | None = setting(
        None, help="dual clip c > 1 bounds the loss of negative-advantage tokens (null: off)")
    aggregation: str = setting("seq-mean-token-mean",
                               help="loss aggregation (maple_rl.algorithms.catalog.AGGREGATIONS)")
    stratum_average: bool = setting(True, help="MAPO's per-stratum 1/|B_M| averaging of the loss")
    kl_coef: float = setting(0.0, help="beta of the KL penalty to the reference policy (0: no reference model)")
    kl_estimator: str = setting("k3", help="KL estimator (maple_rl.algorithms.catalog): k1, k2, k3 (= low_var_kl)")
    kl_in: Literal["loss", "reward"] = setting(
        "loss", help="KL penalty per token in the loss, or summed per response off the reward")
    ratio_level: Literal["token", "sequence"] = setting(
        "token", help="sequence: GSPO's length-normalised sequence ratio")
    log_ratio_clip: float = setting(20.0, help="|log ratio| is clamped here before exp (float32 never overflows)")
    entropy_coef: float = setting(0.0, help="entropy bonus: the loss minus coef x entropy, aggregated like the loss")
    entropy_shaping: bool = setting(
        False, help="MSSR: A_t + min(alpha H_t, |A_t| / kappa) per token, H the full entropy")
    entropy_shaping_alpha: float = setting(0.4, help="MSSR's alpha_e")
    entropy_shaping_kappa: float = setting(2.0, help="MSSR's kappa")
    mask_truncated_completions: bool = setting(False, help="responses cut at max_new_tokens get no loss (DAPO, TRL)")
    rollout_is: Literal["none", "token_truncate", "sequence_mask"] = setting(
        "none", help="engine/trainer mismatch correction")
    rollout_is_threshold: float = setting(
        2.0, help="token_truncate: weight cap; sequence_mask: keep ratios in [1/t, t]")
    router_aux_coef: float = setting(
        0.0, help="MoE policies: the router load-balancing loss x this joins the loss (0: logged only)")

    def __post_init__(self) -> None:
        _one_of("estimator", self.estimator, ADVANTAGE_ESTIMATORS.names())
        ADVANTAGE_ESTIMATORS.check_options(self.estimator, self.estimator_options, "estimator_options")
        _require("rollout_is_threshold", self.rollout_is_threshold >= 1, "must be >= 1", self.rollout_is_threshold)
        _one_of("aggregation", self.aggregation, AGGREGATIONS.names())
        _one_of("kl_estimator", self.kl_estimator, KL_ESTIMATORS.names())
        _require("clip_low", 0 <= self.clip_low < 1, "must be in [0, 1)", self.clip_low)
        _require("clip_high", self.clip_high >= 0, "must be >= 0", self.clip_high)
        _require("dual_clip", self.dual_clip is None or self.dual_clip > 1, "must be > 1 (or null)", self.dual_clip)
        _require("kl_coef", self.kl_coef >= 0, "must be >= 0", self.kl_coef)
        _require("refill_rounds", self.refill_rounds >= 0, "must be >= 0", self.refill_rounds)
        _require("log_ratio_clip", self.log_ratio_clip > 0, "must be > 0", self.log_ratio_clip)
        _require("entropy_coef", self.entropy_coef >= 0, "must be >= 0", self.entropy_coef)
        _require("router_aux_coef", self.router_aux_coef >= 0, "must be >= 0", self.router_aux_coef)
        _require("entropy_shaping_alpha", self.entropy_shaping_alpha >= 0, "must be >= 0", self.entropy_shaping_alpha)
        _require("entropy_shaping_kappa", self.entropy_shaping_kappa > 0, "must be > 0", self.entropy_shaping_kappa)
        for name in ("ppo_epochs", "minibatch_size", "gradient_accumulation_steps"):
            _require(name, getattr(self, name) >= 1, "must be >= 1", getattr(self, name))


@dataclass
class WeightsConfig:
    adaptive: bool = setting(False, help="difficulty-adaptive stratum weights (MAPLE)")
    window: int = setting(512, help="recent rewards per tag the difficulty is measured on")
    bins: int = setting(10, help="histogram bins of [0, 1] for the difficulty")
    tau: float = setting(1.0, help="softmax temperature of the difficulty -> weight map")
    w_min: float = setting(0.25, help="smallest stratum weight (weights keep mean 1)")
    w_max: float = setting(4.0, help="largest stratum weight")
    warmup: int = setting(10, help="steps before weights leave 1")
    target_alpha: float = setting(100.0, help="difficulty target Beta(alpha, 1): the reward histogram a solved tag has")

    def __post_init__(self) -> None:
        _require("w_min", 0 < self.w_min <= 1 <= self.w_max, "need 0 < w_min <= 1 <= w_max",
                 (self.w_min, self.w_max))
        for name in ("window", "bins"):
            _require(name, getattr(self, name) >= 1, "must be >= 1", getattr(self, name))
        _require("tau", self.tau > 0, "must be > 0", self.tau)
        _require("target_alpha", self.target_alpha > 0, "must be > 0", self.target_alpha)


@dataclass
class SamplingConfig:
    batch_size: int = setting(8, help="prompts per step (global, over all ranks)")
    batch_mode: Literal["mixed", "homogeneous"] = setting(
        "mixed", help="mixed: RMT quotas a batch; homogeneous: one RMT")
    quota: Literal["proportional", "equal"] = setting(
        "proportional", help="stratum shares: proportional to stratum size, or equal")
    curriculum: Literal["none", "static", "dynamic"] = setting("none", help="static: uni, bi, tri; dynamic: by weights")
    replay: float = setting(0.2, help="static curriculum: share of earlier stages' tags in a later stage")
    stage_fractions: tuple[float, float, float] = setting(
        (1 / 3, 1 / 3, 1 / 3), help="static: share of steps of uni/bi/tri")

    def __post_init__(self) -> None:
        _require("batch_size", self.batch_size >= 1, "must be >= 1", self.batch_size)
        _require("replay", 0 <= self.replay <= 1, "must be in [0, 1]", self.replay)
        _require("stage_fractions", all(f >= 0 for f in self.stage_fractions) and sum(self.stage_fractions) > 0,
                 "must be three non-negative shares", self.stage_fractions)


@dataclass
class RewardConfig:
    correct: float = setting(1.0, help="weight of the verifiable multiple-choice reward")
    format: float = setting(0.0, help="weight of the format reward (an option letter could be read)")
    caption: float = setting(1.0, help="weight of the caption similarity reward")
    caption_metric: str = setting("token_f1", help="maple_data.answers caption metric name")
    weights: dict[str, float] = setting(
        default_factory=dict, help="weights of other rewards registered by name (maple_rl.training.rewards.REWARDS)")

    def __post_init__(self) -> None:
        others = [name for name in REWARDS.names() if name not in BUILT_IN]
        for name, weight in self.weights.items():
            _require(f"weights.{name}", name in others, f"not a registered reward (registered: {others or 'none'}; "
                     "the built-ins have their own fields; a module in `plugins` registers more)", name)
            _require(f"weights.{name}", isinstance(weight, (int, float)) and not isinstance(weight, bool),
                     "must be a number", weight)


@dataclass
class OptimConfig:
    lr: float = setting(2e-6, help="peak learning rate of AdamW")
    weight_decay: float = setting(0.0, help="AdamW weight decay")
    betas: tuple[float, float] = setting((0.9, 0.999), help="AdamW betas")
    warmup_steps: int = setting(0, help="linear learning-rate warm-up steps")
    decay: Literal["constant", "linear", "cosine"] = setting("constant", help="learning-rate schedule after warm-up")
    max_grad_norm: float = setting(1.0, help="gradient clipping norm")

    def __post_init__(self) -> None:
        _require("lr", self.lr > 0, "must be > 0", self.lr)


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
    steps: int = setting(100, help="RL steps (one sampled batch and its updates each)")
    format_warmup_steps: int = setting(
        0, help="supervised steps on \"Answer: <letter>\" before RL (same for every arm)")
    format_warmup_lr: float = setting(1e-3, help="learning rate of the format warm-up")
    format_warmup_target: Literal["random", "answer"] = setting(
        "random", help="random letter: format only; answer: SFT")
    save_every: int = setting(50, help="checkpoint every this many steps (0: only at the end and on Ctrl-C)")
    checkpoint_model: bool = setting(
        True, help="each checkpoint also holds model/: the policy as a folder transformers and vLLM load")
    log_samples_every: int = setting(10, help="log sample completions every this many steps")
    output_dir: str = setting("runs/maple", help="run folder: metrics.jsonl, checkpoints/, final/")
    tensorboard: bool = setting(
        False, help="also log scalars to OUTPUT_DIR/tensorboard (needs the tensorboard package)")
    wandb: bool = setting(False, help="also log to Weights & Biases (needs wandb and a login)")
    seed: int = setting(0, help="seed of sampling, rollouts and initialisation")
    plugins: list[str] = setting(
        default_factory=list, help="modules imported before the recipe is checked (a module name or a .py file): "
                                   "they register estimators, rewards or aggregations by name (docs/architecture.md)")
    name: str = setting("", help="run name for TensorBoard / wandb")

    def __post_init__(self) -> None:
        _require("steps", self.steps >= 1, "must be >= 1", self.steps)
        _require("rollout.group_size", self.rollout.group_size >= 2 or self.algo.estimator == "mssr",
                 f"must be >= 2 for the group estimator {self.algo.estimator!r} (mssr takes 1)",
                 self.rollout.group_size)
        _require("model.lora.rank", not self.model.lora.rank or self.rollout.engine == "hf",
                 "LoRA training samples with rollout.engine hf (the vLLM weight sync sends full weights)",
                 self.model.lora.rank)
        _require("algo.refill_rounds", not self.algo.refill_rounds or self.rollout.group_size >= 2,
                 "needs rollout.group_size >= 2 (a group of one has no reward variance)", self.algo.refill_rounds)


def setting_warnings(config: TrainConfig) -> list[str]:
    """Settings that are valid but do nothing together, one line each (``maple-rl train``
    prints them before training)."""
    algo = config.algo
    if algo.stratify_by == "rmt" and algo.minibatch_size <= config.rollout.group_size:
        return [f"algo.minibatch_size {algo.minibatch_size} <= rollout.group_size {config.rollout.group_size}: "
                "every minibatch holds one prompt group, so one stratum, and the per-stratum average and stratum "
                "weights change nothing (docs/algorithms.md 6.4); raise algo.minibatch_size to mix strata"]
    return []


def _require(key: str, ok: bool, why: str, value: Any) -> None:
    """A setting check: ``ValueError("key: why, got value")`` unless ``ok``."""
    if not ok:
        raise ConfigError(f"{key}: {why}, got {value!r}")


def _one_of(key: str, value: str, names: list[str]) -> None:
    _require(key, value in names, f"not one of {names}", value)


def _coerce(kind: Any, value: Any, where: str) -> Any:
    """``value`` converted to the annotated type ``kind`` (dataclasses recursively)."""
    origin = typing.get_origin(kind)
    if dataclasses.is_dataclass(kind):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return _build(kind, value, where + ".")
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(kind) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in typing.get_args(kind):
                return None
        errors = []
        for option in options:  # the first type the value converts to
            try:
                return _coerce(option, value, where)
            except ValueError as exc:
                errors.append(str(exc))
        raise ConfigError(" or ".join(errors))
    if origin is Literal:
        if value not in typing.get_args(kind):
            raise ConfigError(f"{where}: {value!r} is not one of {list(typing.get_args(kind))}")
        return value
    if origin in (tuple, list):
        items = value if isinstance(value, (list, tuple)) else yaml.safe_load(str(value))
        if not isinstance(items, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        args = typing.get_args(kind)
        if origin is list or (len(args) == 2 and args[1] is Ellipsis):  # list[X], tuple[X, ...]
            coerced = [_coerce(args[0], v, f"{where}[{i}]") for i, v in enumerate(items)]
            return coerced if origin is list else tuple(coerced)
        if len(items) != len(args):
            raise ConfigError(f"{where}: expected {len(args)} values, got {value!r}")
        return tuple(_coerce(t, v, where) for t, v in zip(args, items))
    if origin is dict:
        return dict(value) if isinstance(value, dict) else yaml.safe_load(str(value))
    if kind is bool:
        if isinstance(value, str):
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ConfigError(f"{where}: expected true or false, got {value!r}")
            return value.lower() in ("true", "1", "yes")
        return bool(value)
    if kind in (int, float, str):
        try:
            return kind(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected {kind.__name__}, got {value!r}") from None
    return value


def _build(cls: type, raw: dict[str, Any], where: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise ConfigError(f"unknown setting(s) {', '.join(where + k for k in unknown)}; "
                         f"known in {where.rstrip('.') or 'the top level'}: {', '.join(sorted(names))}")
    values = {k: _coerce(hints[k], v, f"{where}{k}") for k, v in raw.items()}
    try:
        return cls(**values)
    except ValueError as exc:  # a __post_init__ check names its key within the section
        raise ConfigError(f"{where}{exc}") from None


def _set_dotted(tree: dict[str, Any], dotted: str) -> None:
    if "=" not in dotted:
        raise ConfigError(f"override {dotted!r} must look like section.key=value")
    key, value = dotted.split("=", 1)
    parts = key.strip().split(".")
    node = tree
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = yaml.safe_load(value) if value.strip() else ""


def recipe_names(cls: type | None = None) -> list[str]:
    """Names of the shipped recipes (``mapo-adaptive`` for ``pipelines/mapo-adaptive.yaml``);
    with ``cls``, those whose top-level keys are all settings of that config class
    (``pipelines/`` also holds the demo's and the pretraining's recipes)."""
    names = sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))
    if cls is None:
        return names
    keys = {f.name for f in dataclasses.fields(cls)}
    return [name for name in names
            if set(yaml.safe_load((RECIPES_DIR / f"{name}.yaml").read_text(encoding="utf-8")) or {}) <= keys]


def recipe_path(recipe: str | Path, cls: type | None = None) -> Path:
    """A recipe file: ``recipe`` itself when it exists, else the shipped recipe of that name
    (the error names the shipped recipes of config class ``cls``)."""
    path = Path(recipe)
    if path.is_file():
        return path
    shipped = RECIPES_DIR / f"{path.name.removesuffix('.yaml')}.yaml"
    if path.parent == Path(".") and shipped.is_file():
        return shipped
    raise MissingFile(f"recipe {recipe} not found: give a YAML file or a shipped recipe name "
                            f"({', '.join(recipe_names(cls))})")


def settings_table(config: Any, prefix: str = "") -> list[tuple[str, Any, Any, str]]:
    """``(dotted key, value, default, help)`` of every setting of a config, recursively."""
    rows: list[tuple[str, Any, Any, str]] = []
    default = type(config)()
    docs = field_help(type(config))
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            rows += settings_table(value, f"{prefix}{f.name}.")
        else:
            rows.append((prefix + f.name, value, getattr(default, f.name), docs.get(f.name, "")))
    return rows


def load_recipe(cls: type[T], recipe: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> T:
    """A config dataclass ``cls`` from a YAML recipe (optional; a path or a shipped
    recipe's name) and ``section.key=value`` overrides; unknown keys and values of the
    wrong type are errors."""
    tree: dict[str, Any] = {}
    if recipe is not None:
        with open(recipe_path(recipe, cls), encoding="utf-8") as handle:  # the stream's name puts the file in YAML errors
            loaded = yaml.safe_load(handle) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{recipe}: a recipe is a YAML mapping")
        tree = loaded
    for dotted in overrides:
        _set_dotted(tree, dotted)
    if "plugins" in {f.name for f in dataclasses.fields(cls)}:
        import_plugins(_coerce(list[str], tree.get("plugins", []), "plugins"))
    return _build(cls, tree)


def load_config(recipe: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """A :class:`TrainConfig` from a YAML recipe (optional) and ``section.key=value`` overrides."""
    return load_recipe(TrainConfig, recipe, overrides)


def to_dict(config: TrainConfig) -> dict[str, Any]:
    return dataclasses.asdict(config)
