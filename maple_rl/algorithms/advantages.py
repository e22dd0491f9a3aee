"""Advantage estimators: pure functions over per-response rewards.

Shapes: ``rewards`` (N,) float, one scalar reward per response; ``group_ids`` (N,) int,
the prompt each response answers (responses of one prompt form a group of size G);
``strata`` (N,) int >= 0, the RMT index of each response (``maple_data.rmt.tag_index``).
Every estimator returns advantages (N,), a scalar per response that the loss broadcasts
over its tokens. Formulas and sources: ``docs/algorithms.md`` §2-§5; ``eps``
defaults to 1e-6. Select by name with :func:`compute_advantages`.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor

from maple_rl.algorithms.catalog import ADVANTAGE_ESTIMATORS, MapoNorm, StdKind
from maple_rl.errors import TensorError

EPS = 1e-6


class AdvantageFn(Protocol):
    def __call__(self, rewards: Tensor, group_ids: Tensor, strata: Tensor | None = None, **options) -> Tensor: ...



def check_rewards(rewards: Tensor) -> Tensor:
    """Rewards as float64 (N,); an empty batch, NaN or inf raise ``ValueError``."""
    if rewards.ndim != 1:
        raise TensorError(f"rewards must have shape (N,), got {tuple(rewards.shape)}")
    if len(rewards) == 0:
        raise TensorError("rewards is empty (N = 0): nothing to compute advantages for")
    bad = (~torch.isfinite(rewards)).nonzero().flatten()
    if len(bad):
        i = int(bad[0])
        raise TensorError(f"reward of sample {i} is {rewards[i].item()} (rewards must be finite); "
                         f"{len(bad)} non-finite reward(s) in all")
    return rewards.to(torch.float64)


def segment_stats(values: Tensor, ids: Tensor, std: StdKind = "population") -> tuple[Tensor, Tensor, Tensor]:
    """Per-element ``(mean, std, count)`` of the segment (group or stratum) it belongs to.

    ``values`` (N,) float64, ``ids`` (N,) int with arbitrary labels. ``std="unbiased"``
    uses Bessel's correction (n - 1), as torch.std; a segment of one element then has
    std 0 by convention here (callers refuse such groups first).
    """
    _, inverse, counts = torch.unique(ids, return_inverse=True, return_counts=True)
    n = counts.to(values.dtype)
    sums = torch.zeros(len(counts), dtype=values.dtype).index_add_(0, inverse, values)
    mean = sums / n
    sq = torch.zeros(len(counts), dtype=values.dtype).index_add_(0, inverse, (values - mean[inverse]) ** 2)
    denom = n if std == "population" else (n - 1).clamp(min=1)
    return mean[inverse], (sq / denom).sqrt()[inverse], n[inverse]


def check_ids(ids: Tensor, rewards: Tensor, name: str) -> None:
    """``ids`` must be integer labels of shape ``rewards.shape`` (N,); ``ValueError`` naming ``name`` otherwise."""
    if ids.shape != rewards.shape:
        raise TensorError(f"{name} must have shape {tuple(rewards.shape)}, got {tuple(ids.shape)}")
    if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
        raise TensorError(f"{name} must be an integer tensor, got dtype {ids.dtype}")


def check_strata(strata: Tensor, rewards: Tensor) -> None:
    """``strata`` (N,) non-negative integer RMT indices; ``ValueError`` naming ``strata`` otherwise."""
    check_ids(strata, rewards, "strata")
    bad = (strata < 0).nonzero().flatten()
    if len(bad):
        i = int(bad[0])
        raise TensorError(f"strata must be non-negative RMT indices; sample {i} has {int(strata[i])}")


def _require_groups(group_ids: Tensor, rewards: Tensor, name: str) -> None:
    check_ids(group_ids, rewards, "group_ids")
    labels, counts = torch.unique(group_ids, return_counts=True)
    if (counts < 2).any():
        raise TensorError(f"{name} needs at least 2 rollouts per prompt; group_ids {labels[counts < 2].tolist()[:5]} "
                         "have 1 (use the mssr estimator for single rollouts)")


def _out(adv: Tensor, like: Tensor) -> Tensor:
    return adv.to(like.dtype if like.is_floating_point() else torch.float32)


@ADVANTAGE_ESTIMATORS.register("grpo")
def grpo(rewards: Tensor, group_ids: Tensor, strata: Tensor | None = None, *, std: StdKind = "population",
         eps: float = EPS) -> Tensor:
    """GRPO: ``A_i = (r_i - mean_g) / (std_g + eps)`` within each prompt group.
    ``std="unbiased"`` gives verl's / TRL's Bessel-corrected form."""
    r = check_rewards(rewards)
    _require_groups(group_ids, r, "grpo")
    mean, sd, _ = segment_stats(r, group_ids, std)
    return _out((r - mean) / (sd + eps), rewards)


@ADVANTAGE_ESTIMATORS.register("dr_grpo")
def dr_grpo(rewards: Tensor, group_ids: Tensor, strata: Tensor | None = None) -> Tensor:
    """Dr.GRPO: ``A_i = r_i - mean_g`` (no std scaling)."""
    r = check_rewards(rewards)
    _require_groups(group_ids, r, "dr_grpo")
    return _out(r - segment_stats(r, group_ids)[0], rewards)


@ADVANTAGE_ESTIMATORS.register("batch")
def batch(rewards: Tensor, group_ids: Tensor, strata: Tensor | None = None, *, std: StdKind = "population",
          eps: float = EPS) -> Tensor:
    """Batch scaling (TRL ``scale_rewards="batch"``): ``(r_i - mean_g) / (std_batch + eps)``."""
    r = check_rewards(rewards)
    _require_groups(group_ids, r, "batch")
    centered = r - segment_stats(r, group_ids)[0]
    sd = r.std(correction=0 if std == "population" else 1)
    return _out(centered / (sd + eps), rewards)


@ADVANTAGE_ESTIMATORS.register("rloo")
def rloo(rewards: Tensor, group_ids: Tensor, strata: Tensor | None = None) -> Tensor:
    """RLOO: ``A_i = r_i - mean_{j != i} r_j = G / (G - 1) * (r_i - mean_g)``."""
    r = check_rewards(rewards)
    _require_groups(group_ids, r, "rloo")
    mean, _, n = segment_stats(r, group_ids)
    return _out(n / (n - 1) * (r - mean), rewards)




@ADVANTAGE_ESTIMATORS.register("mapo")
def mapo(rewards: Tensor, group_ids: Tensor, strata: Tensor | None = None, *, norm: MapoNorm = "group",
         std: StdKind = "population", eps: float = EPS) -> Tensor:
    """MAPO advantages, normalised within RMT strata (MAPLE, arXiv 2602.11596).

    ``norm``:
      - ``group``: GRPO within each prompt group (strata act in the loss average only);
      - ``stratum``: ``(r - mean_M) / (std_M + eps)`` over all responses of stratum M;
      - ``group_then_stratum``: group-centred ``c = r - mean_g``, then ``c / (std_M(c) + eps)``;
      - ``batch``: group-centred, divided by the batch std of rewards;
      - ``none``: group-centred only (``r - mean_g``; **ours**: an advantage keeps a baseline).
    Every mode has zero mean within each stratum (groups never straddle strata).
    """
    r = check_rewards(rewards)
    if norm == "group":
        return grpo(rewards, group_ids, std=std, eps=eps)
    if norm == "batch":
        return batch(rewards, group_ids, std=std, eps=eps)
    if norm == "none":
        return dr_grpo(rewards, group_ids)
    if strata is None:
        raise TensorError(f"mapo norm={norm!r} needs strata of shape {tuple(r.shape)} (one RMT index per response)")
    check_strata(strata, r)
    if norm == "stratum":
        mean, sd, _ = segment_stats(r, strata, std)
        return _out((r - mean) / (sd + eps), rewards)
    if norm == "group_then_stratum":
        _require_groups(group_ids, r, "mapo group_then_stratum")
        centered = r - segment_stats(r, group_ids)[0]
        _, sd, _ = segment_stats(centered, strata, std)
        return _out(centered / (sd + eps), rewards)
    raise TensorError(f"unknown mapo norm {norm!r}; choose group, stratum, group_then_stratum, batch or none")


@ADVANTAGE_ESTIMATORS.register("stratified")
def stratified(rewards: Tensor, group_ids: Tensor | None = None, strata: Tensor | None = None, *,
               alpha: float = 0.5, std: StdKind = "population", eps: float = EPS) -> Tensor:
    """Stratified GRPO's blended estimator (Zhu et al., arXiv 2510.06214), with RMT strata:
    ``A = alpha * (r - mean_M) / (std_M + eps) + (1 - alpha) * (r - mean_B) / (std_B + eps)``,
    stratified advantage normalisation (SAN, over every response of stratum M) blended with
    the global one (over the batch B). ``alpha = 1`` is SAN (= ``mapo`` with
    ``norm: stratum``); ``alpha = 0`` the global estimator. The default 0.5 is **ours**
    (the paper blends linearly and tunes alpha). Without strata (``stratify_by: none``)
    every response is in one stratum and both terms are the global estimator."""
    r = check_rewards(rewards)
    if not 0.0 <= alpha <= 1.0:
        raise TensorError(f"stratified: alpha must be in [0, 1], got {alpha}")
    if strata is None:
        strata = torch.zeros(len(r), dtype=torch.long)
    check_strata(strata, r)
    mean, sd, _ = segment_stats(r, strata, std)
    everyone = torch.zeros(len(r), dtype=torch.long)
    mean_b, sd_b, _ = segment_stats(r, everyone, std)
    return _out(alpha * (r - mean) / (sd + eps) + (1.0 - alpha) * (r - mean_b) / (sd_b + eps), rewards)


@ADVANTAGE_ESTIMATORS.register("mixed")
def mixed(rewards: Tensor, group_ids: Tensor, strata: Tensor | None = None, *, successes: Tensor | None = None,
          success_threshold: float = 1.0, std: StdKind = "unbiased", eps: float = EPS) -> Tensor:
    """Mixed advantage (MAPO, arXiv 2509.18849).

    ``p`` = share of the group's rollouts that succeed; ``lambda = 1 - 4 p (1 - p)``;
    ``A = (1 - lambda) (r - mu) / (sigma + eps) + lambda (r - mu) / (mu + eps)``, with ``mu``,
    ``sigma`` the group mean and std of the (summed) ``rewards``.
    Equals GRPO at p = 0.5 and the Advantage Percent Deviation at p in {0, 1}.
    Reference code: Bessel std (the default here).

    ``successes`` (N,) float or bool: each response's correctness reward (the ``correct``
    component, not the sum with format or shaped terms); a response succeeds when it is
    ``>= success_threshold``. Without ``successes`` the summed ``rewards`` are compared with
    the threshold, which is right only when the reward is the bare correctness.
    """
    r = check_rewards(rewards)
    _require_groups(group_ids, r, "mixed")
    if successes is None:
        successes = r
    elif successes.shape != r.shape:
        raise TensorError(f"successes must have shape {tuple(r.shape)}, got {tuple(successes.shape)}")
    mean, sd, _ = segment_stats(r, group_ids, std)
    p = segment_stats((successes.to(r.dtype) >= success_threshold).to(r.dtype), group_ids)[0]
    lam = 1.0 - 4.0 * p * (1.0 - p)
    return _out((1 - lam) * (r - mean) / (sd + eps) + lam * (r - mean) / (mean + eps), rewards)


@ADVANTAGE_ESTIMATORS.register("mssr")
def mssr(rewards: Tensor, group_ids: Tensor | None = None, strata: Tensor | None = None, *, baselines: Tensor,
         min_var: float = 1e-6) -> Tensor:
    """Single-rollout advantage (MSSR / SPO): ``A = r - v(x)``, then global batch
    normalisation ``(A - mean_B) / sqrt(max(var_B, min_var))`` (population variance).

    ``baselines`` (N,): each prompt's tracker value read *before* this step's update
    (:class:`maple_rl.algorithms.mssr.BetaTracker`). ``group_ids`` are not needed (G = 1).
    """
    r = check_rewards(rewards)
    if baselines.shape != r.shape:
        raise TensorError(f"baselines must have shape {tuple(r.shape)}, got {tuple(baselines.shape)}")
    raw = r - baselines.to(torch.float64)
    return _out((raw - raw.mean()) / raw.var(correction=0).clamp(min=min_var).sqrt(), rewards)


def compute_advantages(name: str, rewards: Tensor, group_ids: Tensor | None, strata: Tensor | None = None,
                       **options) -> Tensor:
    """Run the estimator registered as ``name`` (grpo, dr_grpo, batch, rloo, mapo, stratified,
    mixed, mssr); ``strata``, when given, are checked whether or not the estimator reads them
    (the loss does)."""
    if strata is not None:
        check_strata(strata, rewards)
    return ADVANTAGE_ESTIMATORS.get(name)(rewards, group_ids, strata, **options)
