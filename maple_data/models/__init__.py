"""Inference backends for ablation inference, behind one small protocol.

``hf`` (transformers, CPU or GPU) and ``vllm`` (GPU, optional extra) implement
:class:`Backend`; :func:`load_backend` picks one by name.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from maple_data.models.prompts import Prompt


class Backend(Protocol):
    """What ablation inference needs from a model."""

    def generate(self, prompts: Sequence[Prompt], n: int, *, temperature: float,
                 max_new_tokens: int) -> list[list[str]]:
        """``n`` sampled completions per prompt (greedy when ``temperature == 0``)."""

    def option_probs(self, prompts: Sequence[Prompt], options: Sequence[Sequence[str]]) -> list[list[float]]:
        """Per prompt, the probability of each option's letter as the answer, normalised
        over the options (one forward pass per prompt)."""


def backend_options(name: str, *, device: str, dtype: str, batch_size: int, tensor_parallel_size: int,
                    seed: int) -> dict[str, object]:
    """The options of :func:`load_backend` that backend ``name`` takes, from the CLI's settings."""
    if name == "hf":
        return {"device": device, "dtype": dtype, "batch_size": batch_size, "seed": seed}
    return {"tensor_parallel_size": tensor_parallel_size, "seed": seed}


def load_backend(name: str, model: str, **options) -> Backend:
    """``hf`` or ``vllm`` backend for ``model`` (a hub id or a local folder)."""
    if name == "hf":
        from maple_data.models.hf import HFBackend

        return HFBackend(model, **options)
    if name == "vllm":
        from maple_data.models.vllm import VLLMBackend

        return VLLMBackend(model, **options)
    raise ValueError(f"unknown backend {name!r}; choose hf or vllm")
