"""Logits for the positions a caller reads, not for the whole sequence.

A causal LM's output layer turns every position's hidden state into ``vocab`` logits; at a
real vocabulary (~152k) a 2,000-token prompt makes ~0.6 GB of bf16 logits per sequence,
while generation reads only the last position and scoring only the response's. transformers
offers ``logits_to_keep`` on some models but not on the omni Thinkers, so
:func:`logits_for` slices the hidden states entering the output layer instead (a forward
pre-hook), which works for every model, wrapped or not (peft, DDP, FSDP)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


def output_layer(model: Any) -> Any:
    """The output embedding (``lm_head``) of a transformers model, through peft / DDP / FSDP wrappers."""
    inner = getattr(model, "module", model)  # DDP / FSDP keep the model as .module
    head = inner.get_output_embeddings()
    if head is None:
        raise ValueError(f"{type(inner).__name__} has no output layer to score with")
    return head


@contextmanager
def logits_for(model: Any, start: int | None, stop: int | None = None) -> Iterator[None]:
    """Within the block, ``model``'s logits cover only positions ``start:stop`` of the
    sequence (Python slice semantics, e.g. ``-1`` for the last): a forward returns logits of
    shape ``(B, len(range(L)[start:stop]), vocab)``."""
    window = slice(start, stop)

    def keep(_module: Any, args: tuple) -> tuple:
        return (args[0][:, window], *args[1:])

    handle = output_layer(model).register_forward_pre_hook(keep)
    try:
        yield
    finally:
        handle.remove()
