"""Inference backends for ablation inference, behind one small protocol.

``hf`` (transformers, CPU or GPU) and ``vllm`` (GPU, optional extra) implement
:class:`Backend`; :func:`load_backend` picks one by name from :data:`BACKENDS` (a plugin adds
its own entry: docs/architecture.md, "Extending").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from maple_data.errors import MapleError
from maple_data.models.prompts import Prompt


class Backend(Protocol):
    """What ablation inference needs from a model."""

    def generate(self, prompts: Sequence[Prompt], n: int, *, temperature: float,
                 max_new_tokens: int) -> list[list[str]]:
        """``n`` sampled completions per prompt (greedy when ``temperature == 0``)."""

    def option_probs(self, prompts: Sequence[Prompt], options: Sequence[Sequence[str]]) -> list[list[float]]:
        """Per prompt, the probability of each option's letter as the answer, normalised
        over the options (one forward pass per prompt)."""


@dataclass(frozen=True)
class BackendEntry:
    """How to load a backend: ``load(model, **options)``, with ``options`` the command line's
    backend settings it takes (of ``device``, ``dtype``, ``batch_size``, ``tensor_parallel_size``, ``seed``)."""

    load: Callable[..., Backend]
    options: tuple[str, ...]


def _load_hf(model: str, **options: Any) -> Backend:
    from maple_data.models.hf import HFBackend

    return HFBackend(model, **options)


def _load_vllm(model: str, **options: Any) -> Backend:
    from maple_data.models.vllm import VLLMBackend

    return VLLMBackend(model, **options)


BACKENDS: dict[str, BackendEntry] = {
    "hf": BackendEntry(_load_hf, ("device", "dtype", "batch_size", "seed")),
    "vllm": BackendEntry(_load_vllm, ("tensor_parallel_size", "seed")),
}


def backend_entry(name: str) -> BackendEntry:
    if name not in BACKENDS:
        raise MapleError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)} "
                         f"(a --plugin module registers more)")
    return BACKENDS[name]


def backend_options(name: str, **settings: Any) -> dict[str, Any]:
    """The options of :func:`load_backend` that backend ``name`` takes, of the CLI's ``settings``."""
    return {key: settings[key] for key in backend_entry(name).options}


def load_backend(name: str, model: str, **options: Any) -> Backend:
    """Backend ``name`` (:data:`BACKENDS`) for ``model`` (a hub id or a local folder)."""
    return backend_entry(name).load(model, **options)
