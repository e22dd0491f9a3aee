"""Settings of ``maple-rl pretrain`` (``pipelines/pretrain-tiny-omni.yaml``): the synthetic
corpus, the model's sizes, the curriculum and the optimiser.

Every field has a default; a recipe states what it changes; ``--set section.key=value``
overrides it. :func:`cache_key` hashes everything that changes the trained weights, so a
finished model is found again by its recipe (``eval`` and ``checkpoint_every`` do not
change the weights and are left out; ``threads`` is left out too, although a thread count
changes the order of float sums and so the trajectory: the same recipe and thread count give
the same weights on the same hardware).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from maple_data.models.tiny_omni import TinyOmniSize
from maple_data.rmt import TAGS, parse_rmt
from maple_data.settings import setting
from maple_rl.errors import ConfigError
from maple_rl.pretrain.threads import ThreadTuner
from maple_rl.training.config import RECIPES_DIR, WeightsConfig, load_recipe

FORMAT = 1  # bump when a code change makes the same recipe train different weights
DEFAULT_RECIPE = RECIPES_DIR / "pretrain-tiny-omni.yaml"


@dataclass
class CorpusConfig:
    """The learnable synthetic corpus (``maple-data synth --mode learnable``): training
    videos and held-out videos, drawn with seeds disjoint from any benchmark a user builds
    with small seeds (``seed`` and ``seed + 1``)."""

    videos: int = setting(2800, help="training videos; QA tags cycle over the 7 RMTs")
    heldout_videos: int = setting(280, help="held-out videos for the accuracy shown while training")
    seed: int = setting(1_000_000, help="seed of the training videos (held-out: seed + 1)")
    width: int = setting(224, help="frame width in pixels: four 56 x 56 cells, one shape each")
    height: int = setting(56, help="frame height in pixels")
    fps: float = setting(4.0, help="frames per second of the rendered videos")
    duration: float = setting(2.0, help="seconds per video")
    frames: int = setting(2, help="frames extracted per video (one temporal patch)")


@dataclass
class Stage:
    """A curriculum stage: ``tags`` are the new tags (``all``: every tag equally) trained
    for ``steps`` steps; tags of earlier stages are replayed (``TrainSettings.replay``)."""

    tags: list[str] = setting(default_factory=lambda: ["all"], help="the stage's new tags (all: every tag equally)")
    steps: int = setting(100, help="steps of the stage")

    def tag_list(self) -> list[str]:
        if self.tags == ["all"]:
            return list(TAGS)
        return [parse_rmt(t) for t in self.tags]


@dataclass
class Conditions:
    """Share of training prompts per condition: ``exact`` (the item's tag), ``superset``
    (more modalities than the tag) and ``deficit`` (a required modality missing; the
    target is uniform over the options: the model learns to be unsure). Items tagged VAS
    have no superset; their share goes to exact."""

    exact: float = setting(0.5, help="share of prompts with exactly the item's tag's modalities")
    superset: float = setting(0.25, help="share with more modalities than the tag")
    deficit: float = setting(0.25, help="share with a required modality missing (target: uniform over options)")


@dataclass
class TrainSettings:
    batch_size: int = setting(16, help="prompts per step")
    lr: float = setting(1.5e-3, help="AdamW peak learning rate")
    warmup_steps: int = setting(30, help="linear learning-rate warm-up steps")
    decay_steps: int = setting(500, help="cosine decay to 0 over the last decay_steps steps; constant before")
    betas: tuple[float, float] = setting((0.9, 0.999), help="AdamW betas")
    weight_decay: float = setting(0.01, help="AdamW weight decay")
    max_grad_norm: float = setting(1.0, help="gradient clipping norm")
    fresh_optimizer_per_stage: bool = setting(False, help="clear AdamW's moments when a stage starts")
    feature_noise: float = setting(
        0.0, help="std of Gaussian noise added to log-mels and video patches at each use: a clip's features never "
                  "repeat exactly, so a model cannot learn clips by heart")
    replay: float = setting(0.5, help="share of a stage's prompts drawn from earlier stages' tags")
    tag_weights: WeightsConfig = setting(
        default_factory=WeightsConfig, help="adaptive: draw each prompt's (tag, condition) stratum by MAPLE's "
                                            "difficulty weights of the training answers (right = 1), not uniformly")
    conditions: Conditions = setting(default_factory=Conditions, help="share of prompts per condition")
    stages: list[Stage] = setting(default_factory=lambda: [Stage(["V", "A", "S"], 400), Stage(["all"], 1200)],
                                  help="the curriculum: stages trained one after another")
    snapshots: dict[str, int] = setting(default_factory=dict,
                                        help="name -> step: model folders kept along the way")

    @property
    def steps(self) -> int:
        return sum(stage.steps for stage in self.stages)


@dataclass
class EvalSettings:
    every: int = setting(200, help="steps between held-out evaluations (0: only at the end)")
    items: int = setting(280, help="held-out items evaluated (at most heldout_videos)")


@dataclass
class PretrainConfig:
    """A whole pretraining run (see the module docstring)."""

    name: str = setting("tiny-omni", help="model name: the cache folder's prefix")
    seed: int = setting(0, help="seed of initialisation and sampling")
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    model: TinyOmniSize = field(default_factory=TinyOmniSize)
    train: TrainSettings = field(default_factory=TrainSettings)
    eval: EvalSettings = field(default_factory=EvalSettings)
    checkpoint_every: int = setting(100, help="steps between resumable checkpoints")
    threads: Literal["auto"] | int = setting(
        "auto", help="torch threads; auto: the fastest count, measured while training (two threads ~1.5x faster than "
                     "one on an idle 2-core machine, ~5x slower on a busy one); a fixed count makes a run "
                     "reproducible, auto makes its trajectory depend on the machine's load")

    def __post_init__(self) -> None:
        c, t = self.train.conditions, self.train
        if min(c.exact, c.superset, c.deficit) < 0 or abs(c.exact + c.superset + c.deficit - 1) > 1e-6:
            raise ConfigError("train.conditions: exact, superset and deficit must be >= 0 and sum to 1")
        if not t.stages or any(s.steps < 1 for s in t.stages):
            raise ConfigError("train.stages: at least one stage, each with steps >= 1")
        for stage in t.stages:
            stage.tag_list()  # a bad tag fails here
        if not 0 <= t.replay < 1:
            raise ConfigError("train.replay must be in [0, 1)")
        for name, step in t.snapshots.items():
            if not 0 < step <= t.steps:
                raise ConfigError(f"train.snapshots.{name}: step {step} is outside 1..{t.steps}")
        ThreadTuner.from_setting(self.threads)  # a bad thread setting fails here
        if self.corpus.videos < 7 or self.corpus.heldout_videos < 7:
            raise ConfigError("corpus.videos and corpus.heldout_videos must be at least 7 (one per tag)")


def load_pretrain_config(recipe: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()
                         ) -> PretrainConfig:
    return load_recipe(PretrainConfig, recipe, overrides)


def cache_key(config: PretrainConfig) -> str:
    """Hex digest of what decides the trained weights."""
    raw = dataclasses.asdict(config)
    for key in ("threads", "eval", "checkpoint_every", "name"):
        raw.pop(key)
    blob = json.dumps({"format": FORMAT, **raw}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
