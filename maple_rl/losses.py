"""Policy losses: PPO clipped surrogate, loss aggregation, per-stratum averaging, KL.

Shapes: ``logp``, ``old_logp``, ``ref_logp``, ``mask``, ``entropy``: (B, T) per response
token (``mask`` 1 for response tokens, 0 for padding); ``advantages`` (B,) or (B, T);
``strata`` (B,) int RMT index; ``stratum_weights`` (n_strata,) indexed by stratum.
Formulas: ``ALGORITHMS.md`` sections 1 and 2.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from maple_rl.registry import Registry

AggregationFn = Callable[[Tensor, Tensor, Tensor, int], Tensor]
AGGREGATIONS: Registry[AggregationFn] = Registry("loss aggregation")
KL_ESTIMATORS: Registry[Callable[[Tensor, Tensor], Tensor]] = Registry("KL estimator")


# --- aggregation: (B, T) token losses -> scalar, over the rows selected by `rows` ---------
# Each takes (loss (B, T), mask (B, T), rows (B,) bool, horizon T_max) and returns a scalar.

@AGGREGATIONS.register("token-mean")
def token_mean(loss: Tensor, mask: Tensor, rows: Tensor, horizon: int) -> Tensor:
    """Mean over every response token of the selected rows."""
    m = mask[rows]
    return (loss[rows] * m).sum() / m.sum().clamp(min=1)


@AGGREGATIONS.register("seq-mean-token-mean")
def seq_mean_token_mean(loss: Tensor, mask: Tensor, rows: Tensor, horizon: int) -> Tensor:
    """Sample-level: mean over tokens of each sequence, then mean over sequences."""
    m = mask[rows]
    per_seq = (loss[rows] * m).sum(-1) / m.sum(-1).clamp(min=1)
    return per_seq.mean()


@AGGREGATIONS.register("seq-mean-token-sum")
def seq_mean_token_sum(loss: Tensor, mask: Tensor, rows: Tensor, horizon: int) -> Tensor:
    """Sum over tokens of each sequence, then mean over sequences."""
    return (loss[rows] * mask[rows]).sum(-1).mean()


@AGGREGATIONS.register("seq-mean-token-sum-norm")
def seq_mean_token_sum_norm(loss: Tensor, mask: Tensor, rows: Tensor, horizon: int) -> Tensor:
    """Dr.GRPO: each sequence's token sum divided by the constant horizon (max response
    length), then mean over sequences."""
    return ((loss[rows] * mask[rows]).sum(-1) / horizon).mean()


# --- KL estimators, per token, of KL(pi || pi_ref) from log-probs --------------------------

@KL_ESTIMATORS.register("k1")
def kl_k1(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """``logp - ref`` (unbiased, high variance, can be negative)."""
    return logp - ref_logp


@KL_ESTIMATORS.register("k2")
def kl_k2(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """``0.5 (logp - ref)^2``."""
    return 0.5 * (logp - ref_logp) ** 2


@KL_ESTIMATORS.register("k3")
def kl_k3(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """``exp(ref - logp) - (ref - logp) - 1`` (verl's low_var_kl; non-negative)."""
    d = ref_logp - logp
    return torch.exp(d) - d - 1


KL_ESTIMATORS.register("low_var_kl")(kl_k3)


@dataclass(frozen=True)
class LossConfig:
    """Options of :func:`policy_loss` (defaults: the MAPLE recipe's choices)."""

    clip_low: float = 0.2  # eps_low
    clip_high: float = 0.28  # eps_high (DAPO clip-higher)
    dual_clip: float | None = None  # c (e.g. 3.0) bounds the loss of A < 0 tokens
    aggregation: str = "seq-mean-token-mean"  # sample-level, the paper's best
    stratum_average: bool = True  # MAPO's per-stratum 1/|B_M| averaging
    kl_coef: float = 0.0  # beta; 0 = no reference model
    kl_estimator: str = "k3"
    max_response_length: int | None = None  # horizon of seq-mean-token-sum-norm; default T


def ppo_token_loss(logp: Tensor, old_logp: Tensor, adv: Tensor, clip_low: float, clip_high: float,
                   dual_clip: float | None) -> tuple[Tensor, Tensor]:
    """Clipped surrogate per token ``-min(rho A, clip(rho, 1-eps_low, 1+eps_high) A)``,
    with the optional dual clip ``min(loss, -c A)`` for ``A < 0``. Returns (loss, rho)."""
    ratio = torch.exp(logp - old_logp)
    loss = torch.maximum(-adv * ratio, -adv * ratio.clamp(1 - clip_low, 1 + clip_high))
    if dual_clip is not None:
        if dual_clip <= 1.0:
            raise ValueError(f"dual_clip must be > 1, got {dual_clip}")
        loss = torch.where(adv < 0, torch.minimum(loss, -adv * dual_clip), loss)
    return loss, ratio


def policy_loss(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    config: LossConfig = LossConfig(),
    *,
    strata: Tensor | None = None,
    stratum_weights: Tensor | None = None,
    ref_logp: Tensor | None = None,
    entropy: Tensor | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """PPO-family loss and its metrics.

    Without strata: ``aggregation`` over the whole batch. With strata and
    ``stratum_average`` (MAPO): the aggregation runs within each stratum M present, and
    ``loss = sum_M w_M L_M / sum_M w_M`` (**ours**: the weighted mean of stratum losses,
    so uniform weights give the plain mean of per-stratum losses and adaptive weights
    only shift emphasis). With strata and ``stratum_average=False``, each sequence's
    token terms are weighted by its stratum's ``w_M`` and aggregated over the batch (no
    1/|B_M| factor). Metrics: clip fractions (low: ``rho < 1-eps_low`` and A<0; high:
    ``rho > 1+eps_high`` and A>0), ``approx_kl`` (mean ``old - new`` log-prob), ``kl``
    to the reference, ``entropy``.
    """
    mask = mask.to(logp.dtype)
    adv = advantages.unsqueeze(-1).expand_as(logp) if advantages.ndim == 1 else advantages
    adv = adv.to(logp.dtype)
    token_loss, ratio = ppo_token_loss(logp, old_logp, adv, config.clip_low, config.clip_high, config.dual_clip)
    metrics: dict[str, float] = {}
    if ref_logp is not None and config.kl_coef:
        kl = KL_ESTIMATORS.get(config.kl_estimator)(logp, ref_logp)
        token_loss = token_loss + config.kl_coef * kl
        metrics["kl"] = _masked_mean(kl, mask)
    aggregate = AGGREGATIONS.get(config.aggregation)
    horizon = config.max_response_length or logp.shape[-1]
    all_rows = torch.ones(logp.shape[0], dtype=torch.bool)
    if strata is None:
        loss = aggregate(token_loss, mask, all_rows, horizon)
    else:
        present = torch.unique(strata)
        weights = stratum_weights.to(logp.dtype) if stratum_weights is not None else torch.ones(
            int(present.max()) + 1, dtype=logp.dtype)
        if config.stratum_average:
            w = weights[present]
            per_stratum = torch.stack([aggregate(token_loss, mask, strata == s, horizon) for s in present])
            loss = (w * per_stratum).sum() / w.sum()
            metrics.update({f"loss/stratum_{int(s)}": float(v) for s, v in zip(present, per_stratum.detach())})
        else:
            row_w = weights[strata].unsqueeze(-1)
            loss = aggregate(token_loss * row_w, mask, all_rows, horizon) / weights[strata].mean()
    with torch.no_grad():
        positive, negative = adv > 0, adv < 0
        metrics["clipfrac_high"] = _masked_mean(((ratio > 1 + config.clip_high) & positive).to(mask.dtype), mask)
        metrics["clipfrac_low"] = _masked_mean(((ratio < 1 - config.clip_low) & negative).to(mask.dtype), mask)
        metrics["approx_kl"] = _masked_mean(old_logp - logp, mask)
        if entropy is not None:
            metrics["entropy"] = _masked_mean(entropy, mask)
        metrics["loss"] = float(loss.detach())
    return loss, metrics


def _masked_mean(values: Tensor, mask: Tensor) -> float:
    return float((values.detach() * mask).sum() / mask.sum().clamp(min=1))
