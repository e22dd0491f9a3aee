"""Log-probs and entropies of sampled tokens from logits, without a float32 copy of the
whole ``(N, T, vocab)`` batch.

The naive ``log_softmax(logits.float() / t)`` keeps several full-vocabulary float32
tensors alive for backward (the cast, the tempered logits, the log-softmax, its ``exp``
for the entropy): at a 152k vocabulary that is 0.6 MB per token each. Here the forward
pass walks over rows of positions (:data:`CHUNK_ELEMENTS` float32 elements at a time) and
keeps only the logits themselves (in their own dtype) and one log-normaliser per
position; the backward pass recomputes each chunk's softmax from them (two float32 chunks
alive at most) (TRL's selective
log-softmax and verl's chunked entropy make the same trade). Values and gradients equal
the naive formula's (``tests/test_logprobs.py``).

Per position, with ``z = logits / t`` (suppressed ids at ``-1e9``: probability 0) and
``lse = logsumexp(z)``: ``logp = z[token] - lse``, ``H = lse - sum_j p_j z_j`` (``p = exp(z -
lse)``); gradients ``dlogp/dz_j = 1[j = token] - p_j`` and ``dH/dz_j = -p_j (log p_j + H)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor

from maple_data.models.heads import logits_for
from maple_rl.errors import TensorError

CHUNK_ELEMENTS = 1 << 22  # float32 elements per chunk (16 MiB; 27 positions at a 152k vocabulary)
SUPPRESSED_LOGIT = -1e9  # finite: probability 0 without 0 * -inf in the entropy


def _tempered(logits: Tensor, temperature: float, suppressed: Sequence[int]) -> Tensor:
    """``(rows, V)`` float32 ``logits / temperature`` with the suppressed ids at :data:`SUPPRESSED_LOGIT`."""
    z = logits.float() / temperature
    if len(suppressed):
        z[:, list(suppressed)] = SUPPRESSED_LOGIT
    return z


def _chunks(rows: int, vocab: int) -> list[slice]:
    step = max(1, CHUNK_ELEMENTS // max(vocab, 1))
    return [slice(first, min(first + step, rows)) for first in range(0, rows, step)]


class _SelectiveLogSoftmax(torch.autograd.Function):
    """At most two float32 chunks alive at once, forward and backward (in-place arithmetic)."""

    @staticmethod
    def forward(ctx, logits: Tensor, tokens: Tensor, temperature: float, suppressed: tuple[int, ...]
                ) -> tuple[Tensor, Tensor]:
        flat, ids = logits.reshape(-1, logits.shape[-1]), tokens.reshape(-1)
        lse = torch.empty(flat.shape[0], dtype=torch.float32, device=logits.device)
        logp, entropy = torch.empty_like(lse), torch.empty_like(lse)
        for rows in _chunks(*flat.shape):
            z = _tempered(flat[rows], temperature, suppressed)
            lse[rows] = torch.logsumexp(z, dim=-1)
            logp[rows] = z.gather(1, ids[rows, None]).squeeze(1) - lse[rows]
            p = (z - lse[rows, None]).exp_()
            entropy[rows] = lse[rows] - p.mul_(z).sum(-1)
        ctx.save_for_backward(logits, tokens, lse, entropy)
        ctx.temperature, ctx.suppressed = temperature, suppressed
        ctx.set_materialize_grads(False)  # an output the loss does not use gets None, not zeros
        return logp.view(tokens.shape), entropy.view(tokens.shape)

    @staticmethod
    def backward(ctx, grad_logp: Tensor | None, grad_entropy: Tensor | None):
        logits, tokens, lse, entropy = ctx.saved_tensors
        flat, ids = logits.reshape(-1, logits.shape[-1]), tokens.reshape(-1)
        grad = torch.empty_like(flat)
        for rows in _chunks(*flat.shape):
            log_p = _tempered(flat[rows], ctx.temperature, ctx.suppressed).sub_(lse[rows, None])
            p = log_p.exp()
            if grad_entropy is not None:  # dH/dz = -p (log p + H)
                g = log_p.add_(entropy[rows, None]).mul_(p).mul_(-grad_entropy.reshape(-1)[rows, None].float())
            else:
                g = log_p.zero_()
            if grad_logp is not None:  # dlogp/dz = onehot - p
                g_logp = grad_logp.reshape(-1)[rows, None].float()
                g.sub_(p.mul_(g_logp)).scatter_add_(1, ids[rows, None], g_logp)
            if len(ctx.suppressed):
                g[:, list(ctx.suppressed)] = 0.0
            grad[rows] = g.div_(ctx.temperature)
        return grad.view_as(logits), None, None, None


def selective_log_softmax(logits: Tensor, tokens: Tensor, temperature: float = 1.0,
                          suppressed: Sequence[int] = ()) -> tuple[Tensor, Tensor]:
    """Log-probs ``(N, T)`` float32 of ``tokens`` (N, T) under ``softmax(logits / temperature)``
    with the ``suppressed`` ids excluded, and each position's entropy ``(N, T)`` float32;
    ``logits`` (N, T, V) in any float dtype. Differentiable in ``logits`` through both outputs."""
    if logits.shape[:-1] != tokens.shape:
        raise TensorError(f"logits {tuple(logits.shape)} and tokens {tuple(tokens.shape)} disagree")
    return _SelectiveLogSoftmax.apply(logits, tokens, float(temperature), tuple(int(t) for t in suppressed))


class TokenScores(NamedTuple):
    """What scoring responses gives: ``logp`` and ``entropy`` (N, T) float32 per response
    position, and the MoE router's load-balancing loss of the forward pass (a scalar; None
    unless asked for with ``output_router_logits=True`` of a mixture-of-experts model)."""

    logp: Tensor
    entropy: Tensor
    router_aux_loss: Tensor | None = None


def token_logprobs(model, inputs: dict[str, Any], responses: Tensor, *, suppressed: Sequence[int] = (),
                   temperature: float = 1.0, **extra: Any) -> TokenScores:
    """Log-probs ``(N, T)`` of ``responses`` (N, T) after the prompts in ``inputs`` (left-padded
    ``input_ids`` / ``attention_mask`` and media) under ``softmax(logits / temperature)`` (the
    distribution the rollouts sampled from, as TRL and verl score them), and each
    position's entropy; token ids in ``suppressed`` (never sampled) are excluded, as the
    rollout engines exclude them. The model computes logits for the T positions that
    predict the response only (:func:`~maple_data.models.heads.logits_for`); ``extra`` are
    forward arguments (e.g. ``use_audio_in_video``)."""
    width = responses.shape[1]
    full = dict(inputs)
    full["input_ids"] = torch.cat([inputs["input_ids"], responses], dim=1)
    full["attention_mask"] = torch.cat([inputs["attention_mask"], torch.ones_like(responses)], dim=1)
    with logits_for(model, -(width + 1), -1):
        out = model(**full, **extra)
    logp, entropy = selective_log_softmax(out.logits, responses, temperature, suppressed)
    return TokenScores(logp, entropy, getattr(out, "aux_loss", None) if extra.get("output_router_logits") else None)
