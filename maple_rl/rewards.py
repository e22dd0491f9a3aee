"""Rewards of a completion, each component logged separately.

- ``correct``: verifiable multiple choice, 1.0 when the parsed choice (letter, bracketed
  letter, "Answer: X", or an option's text; :func:`maple_data.answers.parse_choice`, the
  same reader as annotation) is the answer, else 0.0. A "None" option is an ordinary
  option, so abstaining is rewarded exactly when None is the answer (QA+).
- ``format``: 1.0 when a single option can be read from the completion (qa items).
- ``caption``: similarity to the reference caption (``CAPTION_METRICS``, default token F1).
The total is the weighted sum of :class:`maple_rl.config.RewardConfig`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from maple_data.answers import caption_metric, parse_choice


def reward_components(completion: str, task: str, options: Sequence[str] | None, answer: str,
                      metric: str = "token_f1") -> dict[str, float]:
    """Each reward component of one completion, in [0, 1]."""
    if task == "caption":
        return {"caption": caption_metric(metric)(completion, answer)}
    picked = parse_choice(completion, options or ())
    return {"correct": float(picked is not None and options[picked] == answer), "format": float(picked is not None)}


def total_reward(components: Mapping[str, float], weights: Any) -> float:
    """Weighted sum with the weights of a ``RewardConfig`` (attributes named like the components)."""
    return sum(getattr(weights, name) * value for name, value in components.items())


def correctness(components: Mapping[str, float]) -> float:
    """How right a response is, whatever else its reward adds: the multiple-choice
    ``correct`` component, or a caption's similarity."""
    return float(components.get("correct", components.get("caption", 0.0)))
