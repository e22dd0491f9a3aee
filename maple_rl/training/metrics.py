"""What a run logs: each step's ``metrics.jsonl`` line (rewards and fractions over every
rank), also sent to TensorBoard / wandb when enabled (main process only)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from maple_data.durable import Journal
from maple_data.errors import MissingExtra
from maple_data.rmt import TAGS
from maple_rl.training.config import TrainConfig, to_dict
from maple_rl.training.rewards import correctness
from maple_rl.training.run_folder import METRICS
from maple_rl.training.scoring import Scored


@dataclass
class StepOutcome:
    """Every rank's responses of one step, merged (M responses in all): what the adaptive
    weights, the curriculum and the step's metrics read."""

    tags: list[str]  # (M,) RMT of each response
    rewards: torch.Tensor  # (M,) float64 total reward
    correct: torch.Tensor  # (M,) float64 correctness component
    zero_variance: torch.Tensor  # (M,) float64 1 in a group whose rewards are all equal
    truncated: torch.Tensor  # (M,) float64 1 without EOS within max_new_tokens


def gather_outcome(acc, scored: Scored) -> StepOutcome:
    """Every rank's responses of the step, merged (ranks hold different counts)."""
    from accelerate.utils import gather_object

    local = [(int(t), float(r), correctness(c), bool(z), bool(cut)) for t, r, c, z, cut in
             zip(scored.tag_ids, scored.rewards, scored.components, scored.zero_variance, scored.truncated)]
    merged = gather_object(local) if acc.num_processes > 1 else local
    rewards, correct, zero_variance, truncated = (
        torch.tensor([row[k] for row in merged], dtype=torch.float64) for k in (1, 2, 3, 4))
    return StepOutcome([TAGS[row[0]] for row in merged], rewards, correct, zero_variance, truncated)


def step_metrics(config: TrainConfig, acc, step: int, scored: Scored, outcome: StepOutcome,
                 extra: dict[str, Any]) -> dict[str, Any]:
    """The step's ``metrics.jsonl`` line; ``extra``: the update's metrics, the stratum weights,
    the learning rate and the prompt count."""
    comps = scored.components
    per_tag: dict[str, list[float]] = {}
    for tag, value in zip(outcome.tags, outcome.rewards.tolist()):
        per_tag.setdefault(tag, []).append(value)
    metrics = {
        "step": step, "reward": float(outcome.rewards.mean()), "accuracy": float(outcome.correct.mean()),
        "reward_per_rmt": {t: sum(v) / len(v) for t, v in sorted(per_tag.items(), key=lambda kv: TAGS.index(kv[0]))},
        "stratum_weights": extra.pop("stratum_weights"),
        "zero_variance_fraction": float(outcome.zero_variance.mean()),
        "truncated_fraction": float(outcome.truncated.mean()),
        "reward_components": {k: sum(c.get(k, 0.0) for c in comps) / len(comps) for k in sorted({*comps[0]})},
        **extra,
    }
    if scored.kl is not None:  # KL in the reward: mean per response token over every rank
        kl_sum, tokens = acc.reduce(torch.tensor([float(scored.kl.sum()), float(scored.mask.sum())],
                                                 device=acc.device), reduction="sum").tolist()
        metrics["kl_ref"] = kl_sum / tokens
    if config.algo.refill_rounds:  # every rank ran the same rounds; replacements are counted over all
        metrics["refill_rounds"] = scored.refill_rounds
        metrics["refilled"] = int(acc.reduce(torch.tensor(scored.refilled, device=acc.device), reduction="sum"))
    if config.log_samples_every and step % config.log_samples_every == 0:
        G = config.rollout.group_size
        metrics["samples"] = [{"item": rec["id"], "completion": scored.texts[k * G]}
                              for k, rec in enumerate(scored.records[:2])]
    return metrics


class MetricsLog:
    """``metrics.jsonl`` (every field) plus the numeric scalars to TensorBoard / wandb; a
    context manager that opens the writers (main process only) and closes them."""

    def __init__(self, config: TrainConfig, acc) -> None:
        self.config, self.acc, self.out = config, acc, Path(config.output_dir)
        self.loggers: list = []

    def __enter__(self) -> MetricsLog:
        if not self.acc.is_main_process:
            return self
        if self.config.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as exc:
                raise MissingExtra("tensorboard=true needs the tensorboard package: pip install tensorboard") from exc
            self.loggers.append(("tensorboard", SummaryWriter(str(self.out / "tensorboard"))))
        if self.config.wandb:
            try:
                import wandb
            except ImportError as exc:
                raise MissingExtra("wandb=true needs wandb: pip install wandb (and wandb login)") from exc
            self.loggers.append(("wandb", wandb.init(project="maple", name=self.config.name or None,
                                                     config=to_dict(self.config), dir=str(self.out))))
        return self

    def __exit__(self, *_: Any) -> None:
        for kind, logger in self.loggers:
            logger.close() if kind == "tensorboard" else logger.finish()
        self.loggers = []

    def log(self, metrics: dict[str, Any]) -> None:
        if not self.acc.is_main_process:
            return
        with Journal(self.out / METRICS) as handle:
            handle.append([metrics])
        scalars = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and k != "step"}
        scalars.update({f"reward/{t}": v for t, v in metrics.get("reward_per_rmt", {}).items()})
        scalars.update({f"weight/{t}": v for t, v in metrics.get("stratum_weights", {}).items()})
        for kind, logger in self.loggers:
            if kind == "tensorboard":
                for key, value in scalars.items():
                    logger.add_scalar(key, value, metrics["step"])
            else:
                logger.log(scalars, step=metrics["step"])
