"""Data-mixture search (MoDoMoDo, arXiv 2505.24871; ``docs/algorithms.md`` §10).

Pilot runs with mixtures ``w`` (points of the simplex over m domains, e.g. the 7 RMT
strata) give scores. A quadratic surrogate ``L(w) = a + b.w + w'Cw`` is fitted by least
squares on features ``[1, w, w_i w_j (i <= j)]``, keeping the fit of the best of 5
random 80/20 splits by held-out R^2; the recommended mixture maximises ``L`` over the
simplex (candidate sampling: Dirichlet draws, the vertices, and a Gaussian fitted to
the observed mixtures with negatives dropped and rows renormalised; then projected
gradient ascent from the best candidate).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from maple_rl.errors import TensorError


def pilot_design(m: int) -> np.ndarray:
    """The 2m + 1 seed mixtures (rows): m single-domain, m leave-one-out, 1 uniform."""
    if m < 2:
        raise TensorError("a mixture needs at least 2 domains")
    single = np.eye(m)
    leave_one_out = (1.0 - np.eye(m)) / (m - 1)
    return np.vstack([single, leave_one_out, np.full((1, m), 1.0 / m)])


def features(w: np.ndarray) -> np.ndarray:
    """(n, 1 + m + m(m+1)/2) design matrix ``[1, w, w_i w_j for i <= j]``."""
    w = np.atleast_2d(w)
    i, j = np.triu_indices(w.shape[1])
    return np.hstack([np.ones((len(w), 1)), w, w[:, i] * w[:, j]])


def r_squared(y: np.ndarray, pred: np.ndarray) -> float:
    ss_res = float(np.sum((y - pred) ** 2))
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    return 1.0 - ss_res / ss_tot if ss_tot > 0 else (1.0 if ss_res == 0 else 0.0)


@dataclass(frozen=True)
class Surrogate:
    """A fitted quadratic surrogate."""

    coef: np.ndarray  # over features()
    m: int
    heldout_r2: float  # R^2 on the held-out 20% of the chosen split
    train_r2: float

    def predict(self, w: np.ndarray) -> np.ndarray:
        return features(w) @ self.coef

    def gradient(self, w: np.ndarray) -> np.ndarray:
        """dL/dw at a single mixture w (m,)."""
        i, j = np.triu_indices(self.m)
        quad = self.coef[1 + self.m:]
        grad = self.coef[1 : 1 + self.m].copy()
        np.add.at(grad, i, quad * w[j])
        np.add.at(grad, j, quad * w[i])
        return grad


def fit_surrogate(w: np.ndarray, scores: np.ndarray, splits: int = 5, seed: int = 0) -> Surrogate:
    """Least-squares fit on each of ``splits`` random 80/20 splits; keep the best held-out R^2."""
    w, scores = np.asarray(w, float), np.asarray(scores, float)
    if len(w) != len(scores) or len(w) < 5:
        raise TensorError(f"need at least 5 pilot runs with one score each, got {len(w)} mixtures, "
                          f"{len(scores)} scores")
    if np.any(w < -1e-9) or not np.allclose(w.sum(axis=1), 1.0, atol=1e-6):
        bad = int(np.argmax((w < -1e-9).any(axis=1) | ~np.isclose(w.sum(axis=1), 1.0, atol=1e-6)))
        raise TensorError(f"pilot row {bad + 1}: weights must be >= 0 and sum to 1, got {w[bad].tolist()}")
    rng = np.random.default_rng(seed)
    x = features(w)
    n_test = max(1, round(0.2 * len(w)))
    best: Surrogate | None = None
    for _ in range(splits):
        order = rng.permutation(len(w))
        test, train = order[:n_test], order[n_test:]
        coef = np.linalg.lstsq(x[train], scores[train], rcond=None)[0]
        fit = Surrogate(coef, w.shape[1], r_squared(scores[test], x[test] @ coef),
                        r_squared(scores[train], x[train] @ coef))
        if best is None or fit.heldout_r2 > best.heldout_r2:
            best = fit
    assert best is not None
    return best


def project_simplex(v: np.ndarray) -> np.ndarray:
    """Euclidean projection onto the probability simplex."""
    u = np.sort(v)[::-1]
    css = np.cumsum(u)
    k = np.nonzero(u * np.arange(1, len(v) + 1) > css - 1)[0][-1]
    return np.maximum(v - (css[k] - 1) / (k + 1), 0.0)


def best_mixture(surrogate: Surrogate, observed: np.ndarray | None = None, samples: int = 20_000,
                 steps: int = 500, lr: float = 0.05, seed: int = 0) -> tuple[np.ndarray, float]:
    """Maximise the surrogate over the simplex; returns ``(w, predicted score)``."""
    rng = np.random.default_rng(seed)
    m = surrogate.m
    candidates = [rng.dirichlet(np.ones(m), size=samples), np.eye(m), np.full((1, m), 1.0 / m)]
    if observed is not None and len(observed) > m:
        gauss = rng.multivariate_normal(observed.mean(0), np.cov(observed.T), size=samples)
        gauss = gauss[(gauss >= 0).all(axis=1)]
        if len(gauss):
            candidates.append(gauss / gauss.sum(axis=1, keepdims=True))
    pool = np.vstack(candidates)
    w = pool[int(np.argmax(surrogate.predict(pool)))]
    for _ in range(steps):
        w = project_simplex(w + lr * surrogate.gradient(w))
    return w, float(surrogate.predict(w)[0])
