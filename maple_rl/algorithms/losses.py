"""Policy losses: PPO / GSPO clipped surrogate, loss aggregation, per-stratum averaging, KL,
entropy bonus, and the rollout-engine / trainer log-prob mismatch (diagnostics and IS weights).

Shapes: ``logp``, ``old_logp``, ``ref_logp``, ``mask``, ``entropy``, ``is_weights``: (B, T) per
response token (``mask`` 1 for response tokens, 0 for padding); ``advantages`` (B,) or (B, T);
``strata`` (B,) int RMT index; ``stratum_weights`` (n_strata,) indexed by stratum.
Formulas: ``docs/algorithms.md`` §6 (stratum averaging: §6.4).

Aggregations under TRL's ``loss_type`` names resolve to the same functions:

=========  ===========================  ================================================
TRL        maple                        note
=========  ===========================  ================================================
grpo       seq-mean-token-mean          token mean per sequence, mean over sequences
dr_grpo    seq-mean-token-sum-norm      sum / max_completion_length, mean over sequences
bnpo       token-mean                   active tokens of the local (micro-)batch
dapo       token-mean                   see below
=========  ===========================  ================================================

TRL's ``dapo`` divides by the active tokens of the whole global batch (all processes and all
accumulated micro-batches of one optimizer step). maple normalises each minibatch by its own
tokens and the trainer averages minibatch losses over accumulation steps, so ``dapo`` equals
TRL's only with one minibatch per optimizer step on one process (or minibatches of equal token
counts); otherwise it is TRL's ``bnpo``, whose per-token weight grows in minibatches with fewer
tokens.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from maple_rl.algorithms.catalog import AGGREGATIONS, KL_ESTIMATORS
from maple_rl.errors import TensorError
from maple_rl.training.config import AlgoConfig

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


AGGREGATIONS.register("grpo")(seq_mean_token_mean)  # TRL loss_type names (module docstring)
AGGREGATIONS.register("dr_grpo")(seq_mean_token_sum_norm)
AGGREGATIONS.register("bnpo")(token_mean)
AGGREGATIONS.register("dapo")(token_mean)


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


def ppo_token_loss(logp: Tensor, old_logp: Tensor, adv: Tensor, clip_low: float, clip_high: float,
                   dual_clip: float | None, *, log_ratio_clip: float = 20.0,
                   sequence_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Clipped surrogate per token ``-min(rho A, clip(rho, 1-eps_low, 1+eps_high) A)``,
    with the optional dual clip ``min(loss, -c A)`` for ``A < 0``. Returns (loss, rho), both (B, T).

    Token level: ``rho_t = exp(clamp(logp_t - old_t, -log_ratio_clip, log_ratio_clip))``. With
    ``sequence_mask`` (B, T), GSPO-token (arXiv 2507.18071): ``log s_i`` = the mean of ``logp - old``
    over the sequence's tokens, clamped likewise, and ``rho_t = sg(s_i) exp(logp_t - sg(logp_t))``:
    value ``s_i`` on every token, gradient ``s_i grad logp_t``. For a per-sequence A this equals TRL's
    ``importance_sampling_level="sequence"`` (``s_i`` broadcast) in value and gradient under every
    aggregation, and GSPO's objective under ``seq-mean-token-mean``; it also admits (B, T) advantages
    and IS weights. A clipped sequence gives all its tokens zero gradient.
    """
    log_ratio = logp - old_logp
    if sequence_mask is not None:
        seq = (log_ratio * sequence_mask).sum(-1) / sequence_mask.sum(-1).clamp(min=1)
        log_ratio = seq.clamp(-log_ratio_clip, log_ratio_clip).detach().unsqueeze(-1) + (logp - logp.detach())
    else:
        log_ratio = log_ratio.clamp(-log_ratio_clip, log_ratio_clip)
    ratio = torch.exp(log_ratio)
    loss = torch.maximum(-adv * ratio, -adv * ratio.clamp(1 - clip_low, 1 + clip_high))
    if dual_clip is not None:
        if dual_clip <= 1.0:
            raise TensorError(f"dual_clip must be > 1, got {dual_clip}")
        loss = torch.where(adv < 0, torch.minimum(loss, -adv * dual_clip), loss)
    return loss, ratio


def policy_loss(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    config: AlgoConfig | None = None,
    *,
    horizon: int | None = None,
    strata: Tensor | None = None,
    stratum_weights: Tensor | None = None,
    ref_logp: Tensor | None = None,
    entropy: Tensor | None = None,
    is_weights: Tensor | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """PPO-family loss and its metrics; ``config`` is the recipe's ``algo`` section (default
    ``AlgoConfig()``: clips, ratio level, log-ratio clamp, aggregation, stratum averaging, KL, entropy bonus);
    ``horizon`` is the constant length of ``seq-mean-token-sum-norm`` (default: T).

    Per token: ``is_w * surrogate + kl_coef * KL_est(logp, ref) - entropy_coef * H``, aggregated
    once, so the KL and the entropy bonus are aggregated and stratum-weighted exactly like the
    surrogate. ``surrogate`` is :func:`ppo_token_loss` at ``ratio_level`` (``sequence``: GSPO-token)
    with ``|log ratio|`` clamped at ``log_ratio_clip``; ``is_weights`` (B, T), e.g. from
    :func:`rollout_is_weights`, multiply the surrogate only (detached; not the KL or entropy). The
    KL term needs ``ref_logp`` and ``kl_coef > 0`` (TRL's and verl's KL-in-loss); ``entropy_coef > 0``
    needs ``entropy`` (verl's entropy bonus).

    Without strata: ``aggregation`` over the whole batch. With strata and
    ``stratum_average`` (MAPO): the aggregation runs within each stratum M present, and
    ``loss = sum_M w_M L_M / sum_M w_M`` (**ours**: the weighted mean of stratum losses,
    so uniform weights give the plain mean of per-stratum losses and adaptive weights
    only shift emphasis). With strata and ``stratum_average=False``, each sequence's
    token terms are weighted by its stratum's ``w_M`` and aggregated over the batch (no
    1/|B_M| factor).

    Metrics: clip fractions (low: ``rho < 1-eps_low`` and A<0; high: ``rho > 1+eps_high`` and
    A>0; over tokens, or at ``ratio_level=sequence`` over sequences: the token fraction of each
    sequence averaged over sequences, i.e. the fraction of clipped sequences for a per-sequence A),
    ``approx_kl`` (mean ``old - new`` log-prob: how far this update moved), ``kl_ref`` (the KL
    estimate to the reference), ``entropy``, ``is_weight_mean`` (with ``is_weights``), ``loss``.

    Raises ``ValueError`` naming the argument for: a ``mask``, ``old_logp``, ``ref_logp``,
    ``entropy`` or ``is_weights`` not shaped like ``logp`` (B, T); ``advantages`` neither (B,)
    nor (B, T); a mask that selects no token (B == 0 included); ``strata`` not (B,) integer ids
    >= 0; ``stratum_weights`` not 1-D, too short for the largest stratum id, negative, or all
    zero on the strata present; ``entropy`` missing while ``entropy_coef > 0``.
    """
    config = config or AlgoConfig()
    _check_tokens(logp, mask, old_logp=old_logp, ref_logp=ref_logp, entropy=entropy, is_weights=is_weights)
    if advantages.shape not in (logp.shape[:1], logp.shape):
        raise TensorError(f"advantages: must be (B,) or (B, T), (B, T) = {tuple(logp.shape)}, "
                          f"got {tuple(advantages.shape)}")
    if config.entropy_coef > 0 and entropy is None:
        raise TensorError("entropy: required when entropy_coef > 0")
    mask = mask.to(logp.dtype)
    adv = advantages.unsqueeze(-1).expand_as(logp) if advantages.ndim == 1 else advantages
    adv = adv.to(logp.dtype)
    sequence = config.ratio_level == "sequence"
    token_loss, ratio = ppo_token_loss(logp, old_logp, adv, config.clip_low, config.clip_high, config.dual_clip,
                                       log_ratio_clip=config.log_ratio_clip, sequence_mask=mask if sequence else None)
    metrics: dict[str, float] = {}
    if is_weights is not None:
        token_loss = token_loss * is_weights.detach().to(logp.dtype)
        metrics["is_weight_mean"] = _masked_mean(is_weights, mask)
    if ref_logp is not None and config.kl_coef:
        kl = KL_ESTIMATORS.get(config.kl_estimator)(logp, ref_logp)
        token_loss = token_loss + config.kl_coef * kl
        metrics["kl_ref"] = _masked_mean(kl, mask)
    if config.entropy_coef > 0:
        token_loss = token_loss - config.entropy_coef * entropy
    aggregate = AGGREGATIONS.get(config.aggregation)
    horizon = horizon or logp.shape[-1]
    all_rows = torch.ones(logp.shape[0], dtype=torch.bool, device=logp.device)
    if strata is None:
        loss = aggregate(token_loss, mask, all_rows, horizon)
    else:
        present = torch.unique(strata)
        weights = _stratum_weights(strata, stratum_weights, present, logp)
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
        high = ((ratio > 1 + config.clip_high) & positive).to(mask.dtype)
        low = ((ratio < 1 - config.clip_low) & negative).to(mask.dtype)
        if sequence:
            rows = mask.sum(-1) > 0
            metrics["clipfrac_high"] = float(seq_mean_token_mean(high, mask, rows, horizon))
            metrics["clipfrac_low"] = float(seq_mean_token_mean(low, mask, rows, horizon))
        else:
            metrics["clipfrac_high"] = _masked_mean(high, mask)
            metrics["clipfrac_low"] = _masked_mean(low, mask)
        metrics["approx_kl"] = _masked_mean(old_logp - logp, mask)
        if entropy is not None:
            metrics["entropy"] = _masked_mean(entropy, mask)
        metrics["loss"] = float(loss.detach())
    return loss, metrics


# --- rollout engine vs trainer: the same policy's log-probs from two implementations -------

def logprob_mismatch(trainer_logp: Tensor, rollout_logp: Tensor, mask: Tensor) -> dict[str, float]:
    """Agreement of the trainer's and the rollout engine's log-probs of the same (B, T) tokens:
    ``logprob_abs_diff`` (masked mean ``|trainer - rollout|``) and ``logprob_pearson`` (Pearson
    correlation over the masked tokens, in float64). NaN-free convention: identical values give
    1.0 (constant ones included); otherwise a side that is constant over the mask (zero variance,
    correlation undefined) gives 0.0."""
    _check_tokens(trainer_logp, mask, rollout_logp=rollout_logp)
    keep = mask.bool()
    x, y = trainer_logp.detach()[keep].double(), rollout_logp.detach()[keep].double()
    if torch.equal(x, y):
        pearson = 1.0
    elif x.max() == x.min() or y.max() == y.min():
        pearson = 0.0
    else:
        dx, dy = x - x.mean(), y - y.mean()
        pearson = float(((dx * dy).sum() / ((dx * dx).sum() * (dy * dy).sum()).sqrt()).clamp(-1, 1))
    return {"logprob_abs_diff": float((x - y).abs().mean()), "logprob_pearson": pearson}


def rollout_is_weights(old_logp: Tensor, rollout_logp: Tensor, mask: Tensor,
                       mode: Literal["token_truncate", "sequence_mask"], threshold: float) -> Tensor:
    """Detached (B, T) importance weights ``pi_old / pi_rollout`` correcting for the rollout
    engine sampling from a slightly different policy than the trainer scores (0 at padding).

    ``token_truncate`` (truncated IS, verl ``rollout_is=token`` and TRL ``token_truncate``):
    ``w_t = min(exp(old_t - rollout_t), threshold)``. ``sequence_mask`` (rejection, verl 0.9.1
    ``rollout_rs=seq_sum_k1`` with ``rollout_rs_threshold=threshold``, lower bound
    ``1 / threshold``): ``w = 1`` on every token of a sequence whose ratio ``exp(sum_t mask (old
    - rollout))`` lies in ``[1/threshold, threshold]``, else 0 (TRL's ``sequence_mask`` is
    one-sided and keeps the ratio itself as the weight). Computed in log space: no overflow.
    ``threshold`` must be >= 1.
    """
    _check_tokens(old_logp, mask, rollout_logp=rollout_logp)
    if threshold < 1:
        raise TensorError(f"threshold: must be >= 1, got {threshold!r}")
    mask = mask.to(old_logp.dtype)
    log_ratio = (old_logp - rollout_logp).detach()
    if mode == "token_truncate":
        return torch.exp(log_ratio.clamp(max=math.log(threshold))) * mask
    if mode == "sequence_mask":
        keep = (log_ratio * mask).sum(-1).abs() <= math.log(threshold)
        return keep.unsqueeze(-1).to(mask.dtype) * mask
    raise TensorError(f"mode: must be token_truncate or sequence_mask, got {mode!r}")


def _check_tokens(logp: Tensor, mask: Tensor, **others: Tensor | None) -> None:
    """``ValueError`` naming the argument unless ``logp`` is (B, T), ``mask`` and every given
    ``others`` share its shape, and the mask selects at least one token."""
    if logp.ndim != 2:
        raise TensorError(f"logp: must be (B, T), got shape {tuple(logp.shape)}")
    for name, value in {"mask": mask, **others}.items():
        if value is not None and value.shape != logp.shape:
            raise TensorError(f"{name}: must have the shape of logp {tuple(logp.shape)}, got {tuple(value.shape)}")
    if not bool(mask.any()):
        raise TensorError(f"mask selects no token (shape {tuple(mask.shape)})")


def _stratum_weights(strata: Tensor, stratum_weights: Tensor | None, present: Tensor, like: Tensor) -> Tensor:
    """Validated (n_strata,) weights in ``like``'s dtype (all ones when none are given)."""
    if strata.shape != like.shape[:1] or strata.is_floating_point() or bool((strata < 0).any()):
        raise TensorError(f"strata: must be (B,) = {tuple(like.shape[:1])} integer ids >= 0, got {strata.dtype} "
                         f"of shape {tuple(strata.shape)}: {strata.tolist()}")
    if stratum_weights is None:
        return torch.ones(int(present.max()) + 1, dtype=like.dtype, device=like.device)
    if stratum_weights.ndim != 1 or len(stratum_weights) <= int(present.max()):
        raise TensorError(f"stratum_weights: need one weight per stratum id up to {int(present.max())}, got shape "
                         f"{tuple(stratum_weights.shape)}")
    if bool((stratum_weights < 0).any()) or not bool((stratum_weights[present] > 0).any()):
        raise TensorError(f"stratum_weights: must be >= 0 and not all 0 on the strata present "
                         f"{present.tolist()}, got {stratum_weights.tolist()}")
    return stratum_weights.to(like.dtype)


def _masked_mean(values: Tensor, mask: Tensor) -> float:
    return float((values.detach() * mask).sum() / mask.sum().clamp(min=1))
