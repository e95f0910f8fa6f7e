"""The regime probability online: one Hamilton-filter step per period with given Markov parameters.

The Markov-switching variance model (execal.models.vol.regimes) is fitted offline on bars; live,
each closed period's return moves the regime probabilities by one step of the same filter:

    u = p_{t-1} @ P,   p_t ∝ u ⊙ N(r_t; mu, sigma2)

started at the chain's steady state (statsmodels' initialisation, as the offline filter). The
parameters come as plain data (the `markov` block of a vol fit's JSON: transition matrix, means,
variances per period and the period length), so this room needs nothing of the vol area;
tests/live/test_live_state.py checks the path against the offline filter on the same returns.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import numpy as np

LOG_2PI = math.log(2.0 * math.pi)


def steady_state(P: np.ndarray) -> np.ndarray:
    """Ergodic probabilities of a row-stochastic P (statsmodels' construction)."""
    k = P.shape[0]
    A = np.c_[(np.eye(k) - P.T).T, np.ones(k)].T
    return np.maximum(np.linalg.pinv(A)[:, -1], 1e-20)


@dataclass
class HamiltonFilter:
    """Filtered regime probabilities, one `step(return)` per period of `period_s` seconds."""
    transition: np.ndarray          # (k, k) row-stochastic, P[i, j] = Pr(j next | i now)
    mu: np.ndarray                  # (k,) mean return per period
    sigma2: np.ndarray              # (k,) return variance per period
    period_s: float = 60.0

    def __post_init__(self):
        self.transition = np.asarray(self.transition, dtype=np.float64)
        k = self.transition.shape[0]
        if self.transition.shape != (k, k) or not np.allclose(self.transition.sum(1), 1.0):
            raise ValueError("transition must be a square row-stochastic matrix")
        self.mu = np.broadcast_to(np.asarray(self.mu, dtype=np.float64), (k,)).copy()
        self.sigma2 = np.asarray(self.sigma2, dtype=np.float64).reshape(k)
        if not (self.sigma2 > 0).all():
            raise ValueError("regime variances must be positive")
        if not self.period_s > 0:
            raise ValueError("period_s must be positive")
        self._log_norm = -0.5 * (LOG_2PI + np.log(self.sigma2))
        self.probabilities = steady_state(self.transition)
        self.steps = 0

    @classmethod
    def from_config(cls, block: Mapping) -> "HamiltonFilter":
        """From {transition, mu (or const), sigma2, period_s}: the Markov fit's per-period numbers."""
        mu = block.get("mu", block.get("const", 0.0))
        return cls(np.asarray(block["transition"]), np.asarray(mu, dtype=np.float64),
                   np.asarray(block["sigma2"]), float(block.get("period_s", 60.0)))

    @property
    def k(self) -> int:
        return int(self.transition.shape[0])

    def step(self, r: float) -> np.ndarray:
        """One period's return in; the filtered probabilities Pr(s_t | r_1..r_t) out."""
        d = r - self.mu
        logf = self._log_norm - 0.5 * d * d / self.sigma2
        m = logf.max()
        u = self.probabilities @ self.transition
        u *= np.exp(logf - m)
        c = u.sum()
        self.probabilities = u / max(c, 1e-300)
        self.steps += 1
        return self.probabilities

    @property
    def regime(self) -> int:
        """The most probable regime now (0 = the calmest: the fit sorts regimes by variance)."""
        return int(np.argmax(self.probabilities))


def regime_from_vol_json(result: Mapping) -> dict:
    """The {transition, mu, sigma2, period_s} block of a Markov fit's JSON (`execal vol --model
    markov`, `MarkovResult.to_dict()`), the filter's parameters per period of the fitted returns."""
    params = result.get("params") or {}
    summary = result.get("summary") or {}
    transition = summary.get("transition_matrix")
    if transition is None:
        raise ValueError("not a Markov-switching fit: no summary.transition_matrix")
    k = len(transition)
    sigma2 = [params[f"sigma2[{j}]"] for j in range(k)]
    mu = [params[f"const[{j}]"] for j in range(k)] if "const[0]" in params else params.get("const", 0.0)
    period_s = (result.get("data") or {}).get("period_s")
    if not period_s:
        raise ValueError("the fit does not say its return period (data.period_s)")
    return {"transition": transition, "mu": mu, "sigma2": sigma2, "period_s": float(period_s)}
