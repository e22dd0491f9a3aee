"""A run's model inputs: records -> prompts (with the RMT's modalities or all of them) ->
encoded inputs on the device -> token log-probs of responses. Every part that runs the
policy or the reference on a prompt goes through here, so they share one convention
(temperature, suppressed media tokens, the model family's forward arguments)."""

from __future__ import annotations

from typing import Any

import torch

from maple_data.models.families import ModelFamily
from maple_data.models.omni_inputs import OmniEncoder, to_device
from maple_data.models.prompts import Prompt, build_prompt
from maple_rl.algorithms.logprobs import TokenScores, token_logprobs
from maple_rl.training.config import TrainConfig
from maple_rl.training.data import media_of


def response_mask(responses: torch.Tensor, eos_id: int, pad_id: int) -> torch.Tensor:
    """``(N, T)`` bool: 1 for response tokens up to and including the first EOS, 0 after (and for padding)."""
    is_end = (responses == eos_id) | (responses == pad_id)
    ended_before = torch.cumsum(is_end.int(), dim=1) - is_end.int()
    mask = (ended_before == 0) & (responses != pad_id)
    return mask | ((responses == eos_id) & (ended_before == 0))


class PolicyInputs:
    """Prompts, encoded inputs and token scores of one run. ``prepared`` caches each prompt's
    media features for the current step (a step encodes every prompt G times over for
    rollout, old log-probs and each PPO epoch); :meth:`new_step` clears it."""

    def __init__(self, config: TrainConfig, encoder: OmniEncoder, family: ModelFamily | None,
                 forward_args: dict[str, Any], device: torch.device, dtype: torch.dtype) -> None:
        self.config, self.encoder, self.family, self.forward_args = config, encoder, family, forward_args
        self.device, self.dtype = device, dtype
        self.eos_id = encoder.tokenizer.convert_tokens_to_ids("<|im_end|>")
        self.pad_id = encoder.tokenizer.pad_token_id
        self.suppressed = tuple(encoder.media_token_ids())  # never sampled, excluded from log-probs
        self.prepared: dict = {}

    def new_step(self) -> None:
        """Forget the last step's prepared prompts."""
        self.prepared.clear()

    def prompt(self, record: dict[str, Any]) -> Prompt:
        """The record's prompt: its RMT's modalities (``data.input_modalities: rmt``) or all available."""
        given = record["rmt"] if self.config.data.input_modalities == "rmt" else record["available_modalities"]
        return build_prompt(record["question"], record["options"], media_of(record), given,
                            meta={"item": record["id"], "subset": given})

    def encode(self, prompts: list[Prompt]) -> dict[str, Any]:
        """Model inputs of ``prompts`` on the device, in the policy's dtype."""
        return to_device(self.encoder.encode(prompts, self.prepared), self.device, self.dtype)

    def score(self, model: torch.nn.Module, prompts: list[Prompt], responses: torch.Tensor, *,
              router_aux: bool = False) -> TokenScores:
        """``token_logprobs`` of ``responses`` ``(B, T)`` after ``prompts`` under ``model``; with
        ``router_aux`` and a mixture-of-experts policy, the router's load-balancing loss too."""
        extra = dict(self.forward_args)
        if router_aux and self.family is not None and self.family.moe:
            extra["output_router_logits"] = True
        return token_logprobs(model, self.encode(prompts), responses, suppressed=self.suppressed,
                              temperature=self.config.rollout.temperature, **extra)
