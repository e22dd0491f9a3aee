"""Single-rollout pieces (MSSR, arXiv 2512.18215; SPO, arXiv 2509.13232): a per-prompt
Beta value tracker with a KL-adaptive forgetting factor, and entropy shaping."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import torch
from torch import Tensor

from maple_rl.errors import TensorError


class AdaptiveRho:
    """Forgetting factor from the policy's recent drift.

    **ours** (SPO's half-life form): ``rho = clip(2 ** (-mean_KL / target_kl), rho_min,
    rho_max)`` where ``mean_KL`` is the mean of the last ``window`` KL(pi_old || pi_ref)
    values. A policy that moves fast forgets old evidence faster.
    """

    def __init__(self, target_kl: float = 0.01, rho_min: float = 0.875, rho_max: float = 0.96,
                 window: int = 16) -> None:
        if not 0 < rho_min <= rho_max < 1:
            raise TensorError(f"need 0 < rho_min <= rho_max < 1, got {rho_min}, {rho_max}")
        self.target_kl, self.rho_min, self.rho_max = target_kl, rho_min, rho_max
        self.history: deque[float] = deque(maxlen=window)

    def observe(self, kl: float) -> None:
        self.history.append(float(kl))

    @property
    def rho(self) -> float:
        if not self.history:
            return self.rho_max
        mean_kl = sum(self.history) / len(self.history)
        return min(self.rho_max, max(self.rho_min, 2.0 ** (-mean_kl / self.target_kl)))

    def state_dict(self) -> dict[str, Any]:
        return {"history": list(self.history)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history.clear()
        self.history.extend(state["history"])


class BetaTracker:
    """Per-prompt success tracker ``(alpha, beta)``; baseline ``v = alpha / (alpha + beta)``.

    Unseen prompts have ``v = 0.5`` unless initialised with :meth:`init_prompt` from
    ``n_init`` rollouts: ``N0 = 1 / (1 - rho_min)``, ``alpha0 = N0 v0``, ``beta0 = N0 (1 - v0)``.
    Update with reward r: ``b = 1[r > 0.5]``, ``alpha <- rho alpha + b``,
    ``beta <- rho beta + (1 - b)``.
    """

    def __init__(self, rho: AdaptiveRho | None = None) -> None:
        self.rho = rho or AdaptiveRho()
        self.params: dict[str, tuple[float, float]] = {}

    def init_prompt(self, prompt: str, v0: float) -> None:
        n0 = 1.0 / (1.0 - self.rho.rho_min)
        self.params[prompt] = (n0 * v0, n0 * (1.0 - v0))

    def baseline(self, prompt: str) -> float:
        if prompt not in self.params:
            return 0.5
        a, b = self.params[prompt]
        return a / (a + b)

    def baselines(self, prompts: Sequence[str]) -> Tensor:
        """(N,) baselines, read before this step's update."""
        return torch.tensor([self.baseline(p) for p in prompts], dtype=torch.float64)

    def update(self, prompts: Iterable[str], rewards: Iterable[float]) -> None:
        rho = self.rho.rho
        for prompt, reward in zip(prompts, rewards):
            a, b = self.params.get(prompt, (1.0, 1.0))
            hit = 1.0 if reward > 0.5 else 0.0
            self.params[prompt] = (rho * a + hit, rho * b + (1.0 - hit))

    def state_dict(self) -> dict[str, Any]:
        return {"params": {k: list(v) for k, v in self.params.items()}, "rho": self.rho.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.params = {k: (float(v[0]), float(v[1])) for k, v in state["params"].items()}
        self.rho.load_state_dict(state["rho"])


def token_entropy(logits: Tensor, kind: Literal["full", "sampled"] = "full",
                  sampled_logp: Tensor | None = None) -> Tensor:
    """Per-token entropy (B, T) from logits (B, T, V).

    ``full`` (**ours**, preferred): ``logsumexp(z) - sum softmax(z) z``; ``sampled``:
    the approximation ``-p log p`` of the sampled token (needs ``sampled_logp`` (B, T)).
    """
    if kind == "full":
        logp_all = torch.log_softmax(logits.float(), dim=-1)
        return -(logp_all.exp() * logp_all).sum(-1)
    if sampled_logp is None:
        raise TensorError("entropy kind 'sampled' needs sampled_logp")
    return -sampled_logp.exp() * sampled_logp


def entropy_shaped_advantages(advantages: Tensor, entropy: Tensor, alpha: float = 0.4,
                              kappa: float = 2.0) -> Tensor:
    """``A_hat_t = A_t + min(alpha * stopgrad(H_t), |A_t| / kappa)``; ``advantages`` (B,)
    or (B, T), ``entropy`` (B, T); returns (B, T)."""
    adv = advantages.unsqueeze(-1).expand_as(entropy) if advantages.ndim == 1 else advantages
    psi = torch.minimum(alpha * entropy.detach(), adv.abs() / kappa)
    return adv + psi
