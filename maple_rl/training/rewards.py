"""Rewards of a completion, each component logged separately, selected by name.

Built-in rewards (:data:`REWARDS`):

- ``correct``: verifiable multiple choice, 1.0 when the parsed choice (letter, bracketed
  letter, "Answer: X", or an option's text; :func:`maple_data.answers.parse_choice`, the
  same reader as annotation) is the answer, else 0.0. A "None" option is an ordinary
  option, so abstaining is rewarded exactly when None is the answer (QA+).
- ``format``: 1.0 when a single option can be read from the completion (qa items).
- ``caption``: similarity to the reference caption (``CAPTION_METRICS``, default token F1).

A reward is a function ``(completion, record, config) -> float | None`` (None: it does not
apply to the record's task) registered with ``@REWARDS.register("name")``; a recipe weights
it with ``reward.weights: {name: w}`` (the built-ins keep their own fields ``reward.correct``,
``reward.format``, ``reward.caption``). The total is the weighted sum of
:class:`maple_rl.training.config.RewardConfig`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from maple_data.answers import caption_metric, parse_choice
from maple_rl.algorithms.registry import Registry

RewardFn = Callable[[str, Mapping[str, Any], Any], "float | None"]
REWARDS: Registry[RewardFn] = Registry("reward")


@REWARDS.register("correct")
def correct(completion: str, record: Mapping[str, Any], config: Any) -> float | None:
    """1.0 when the option read from ``completion`` is the record's answer (qa items)."""
    if record["task"] == "caption":
        return None
    picked = parse_choice(completion, record["options"] or ())
    return float(picked is not None and record["options"][picked] == record["answer"])


@REWARDS.register("format")
def format_(completion: str, record: Mapping[str, Any], config: Any) -> float | None:
    """1.0 when a single option can be read from ``completion`` (qa items)."""
    if record["task"] == "caption":
        return None
    return float(parse_choice(completion, record["options"] or ()) is not None)


@REWARDS.register("caption")
def caption(completion: str, record: Mapping[str, Any], config: Any) -> float | None:
    """Similarity of ``completion`` to the reference caption (``reward.caption_metric``)."""
    if record["task"] != "caption":
        return None
    return caption_metric(config.caption_metric)(completion, record["answer"])


BUILT_IN = tuple(REWARDS.names())  # weighted by RewardConfig's fields of the same names


def reward_components(completion: str, record: Mapping[str, Any], config: Any) -> dict[str, float]:
    """Each registered reward that applies to ``record``, in [0, 1] for the built-ins; ``config``
    is the run's ``RewardConfig``."""
    found = {name: REWARDS.get(name)(completion, record, config) for name in REWARDS.names()}
    return {name: float(value) for name, value in found.items() if value is not None}


def total_reward(components: Mapping[str, float], config: Any) -> float:
    """Weighted sum with the weights of a ``RewardConfig``: the built-ins' own fields, the
    others' ``weights`` entries (0 when not named)."""
    return sum((getattr(config, name) if name in BUILT_IN else config.weights.get(name, 0.0)) * value
               for name, value in components.items())


def correctness(components: Mapping[str, float]) -> float:
    """How right a response is, whatever else its reward adds: the multiple-choice
    ``correct`` component, or a caption's similarity."""
    return float(components.get("correct", components.get("caption", 0.0)))
