"""Cost of executing a basket: Almgren–Chriss with a covariance in the risk term, together vs apart.

Almgren & Chriss (2000), discrete time, several assets: holdings x_k (signed units still to trade,
x_0 = X, x_N = 0) at t_k = kτ, τ = T/N, trades n_k = x_{k−1} − x_k, linear impact per asset
(permanent γ_i, temporary η_i, half-spread ε_i). With H̃ = diag(η_i − ½ γ_i τ) and C the covariance of
price changes in USD per day (C_ij = ρ_ij σ_i σ_j P_i P_j, σ fractional daily volatility),

    E[cost] = Σ_i ½ γ_i X_i² + Σ_i ε_i |X_i| + (1/τ) Σ_k n_k' H̃ n_k,      Var[cost] = τ Σ_k x_k' C x_k,

and the trajectory minimises U = E + λ·Var. Its first-order conditions are a linear recursion; in the
coordinates y = H̃^½ x rotated onto the eigenvectors of A = H̃^−½ C H̃^−½ (eigenvalues d_j) each mode
is Almgren–Chriss's single-asset solution, sinh(κ_j (T − t_k)) / sinh(κ_j T) with
cosh(κ_j τ) − 1 = ½ λ τ² d_j. So the joint trajectory is exact and closed-form (no optimizer), and E
and Var are summed on it.

Together: the basket's trajectory with the full covariance (correlation enters the risk term, so a
long/short pair of correlated assets can be traded more slowly, a same-side pair faster). Apart: each
asset's own optimal trajectory (its own σ only), as separate desks would trade; its TRUE variance uses
the full C (the naive one, Σ of the individual variances, ignores the correlation and is reported
too). The saving is U(apart) − U(together) ≥ 0 at the same λ (the joint optimum can only be better).

Impact inputs in the units a desk quotes: `eta_bps` — temporary impact, bps of price, when trading at a
rate of one ADV per day (η_i = eta_bps·10⁻⁴·P_i / ADV_i); `gamma_bps` — permanent impact, bps per ADV
traded; `half_spread_bps`. The impact area calibrates such numbers; here they are inputs (areas do
not import each other).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from execal.models.core.frozen import freeze_arrays
from execal.models.core.jsonable import clean
from execal.models.core.params import BPS
from execal.models.core.report import OptimizerReport
from execal.models.core.result import Estimator
from execal.models.corr.result import PanelResult


def ac_trajectory(X: np.ndarray, H: np.ndarray, C: np.ndarray, *, T: float, N: int, lam: float) -> np.ndarray:
    """(N + 1, m) optimal holdings x_0 = X … x_N = 0 for diagonal H̃ (as a vector) and covariance C."""
    X = np.asarray(X, dtype=np.float64)
    h = np.asarray(H, dtype=np.float64)
    tau = T / N
    k = np.arange(N + 1)
    if lam == 0:
        return X[None, :] * (1.0 - k / N)[:, None]
    hs = np.sqrt(h)
    A = C / np.outer(hs, hs)
    d, U = np.linalg.eigh(0.5 * (A + A.T))
    d = np.clip(d, 0.0, None)
    w0 = U.T @ (hs * X)
    kappa = np.arccosh(1.0 + 0.5 * lam * tau * tau * d) / tau
    t = k * tau
    prof = np.empty((N + 1, d.shape[0]))
    for j, kj in enumerate(kappa):
        prof[:, j] = np.sinh(kj * (T - t)) / np.sinh(kj * T) if kj * T > 1e-10 else 1.0 - k / N
    W = prof * w0[None, :]
    return (W @ U.T) / hs[None, :]


def ac_moments(x: np.ndarray, *, H: np.ndarray, C: np.ndarray, gamma: np.ndarray, eps: np.ndarray, T: float
               ) -> tuple[float, float]:
    """(E[cost], Var[cost]) in USD / USD² of holdings x (N + 1, m)."""
    N = x.shape[0] - 1
    tau = T / N
    n = x[:-1] - x[1:]
    X = x[0]
    E = 0.5 * float(np.sum(gamma * X * X)) + float(np.sum(eps * np.abs(X))) + float(np.sum(n * n * H)) / tau
    V = tau * float(np.einsum("ki,ij,kj->", x[1:], C, x[1:]))
    return E, V


@dataclass(frozen=True, eq=False)
class BasketResult(PanelResult):
    """Expected cost, risk and utility of a basket executed together and apart."""
    together: np.ndarray                   # (N + 1, m) holdings
    apart: np.ndarray
    times_days: np.ndarray
    per_asset: tuple[Mapping, ...] = ()
    settings: Mapping = field(default_factory=dict)
    kind: str = "correlation"

    def __post_init__(self):
        freeze_arrays(self, ("together", "apart", "times_days"))

    def summary(self) -> str:
        p = self.params
        return "\n".join([
            super().summary(),
            f"together: E {p['expected_cost_together_usd']:,.0f} USD, sd {p['sd_together_usd']:,.0f} USD, "
            f"U {p['utility_together_usd']:,.0f}",
            f"apart:    E {p['expected_cost_apart_usd']:,.0f} USD, sd {p['sd_apart_usd']:,.0f} USD (naive, ignoring "
            f"correlation: {p['sd_apart_naive_usd']:,.0f}), U {p['utility_apart_usd']:,.0f}",
            f"saving of executing together: {p['saving_usd']:,.0f} USD ({p['saving_bps']:.2f} bps of notional)"])

    def to_dict(self) -> dict:
        out = super().to_dict()
        out.update(clean({"kind": self.kind, "names": list(self.names), "per_asset": [dict(a) for a in self.per_asset],
                          "trajectory": {"t_days": self.times_days, "together": np.asarray(self.together),
                                         "apart": np.asarray(self.apart)}, "settings": dict(self.settings)}))
        return out


def covariance_input(data) -> tuple[tuple[str, ...], np.ndarray]:
    """(names, daily covariance of log returns) from a correlation-area result or a mapping with
    'names' and either 'covariance_per_day' or 'correlation' + 'sigma_daily'."""
    if hasattr(data, "forecast") and hasattr(data, "margins"):          # DCC: the one-step forecast, per day
        f = data.forecast(1)
        return tuple(data.names), np.asarray(f["covariance"][0]) * data.panel.periods_per_day
    if hasattr(data, "covariance_per_day") and hasattr(data, "names"):
        return tuple(data.names), np.asarray(data.covariance_per_day())
    if isinstance(data, Mapping):
        names = tuple(map(str, data["names"]))
        if "covariance_per_day" in data:
            return names, np.asarray(data["covariance_per_day"], dtype=np.float64)
        R = np.asarray(data["correlation"], dtype=np.float64)
        sd = data["sigma_daily"]
        s = np.array([float(sd[n]) for n in names]) if isinstance(sd, Mapping) else np.asarray(sd, dtype=np.float64)
        return names, R * np.outer(s, s)
    raise TypeError("a basket cost needs a correlation result (realised, HY, DCC, Ledoit–Wolf) or a mapping with "
                    "names and covariance_per_day (or correlation and sigma_daily)")


class BasketCost(Estimator):
    """Almgren–Chriss cost of a basket with a covariance in the risk term, together vs apart.

    Settings: `quantities` (units to trade, signed: + buy, − sell), `prices` (USD), `adv` (units per
    day), `eta_bps`, `gamma_bps`, `half_spread_bps` (one number for every asset or a mapping by
    name), `horizon_days`, `steps`, `risk_aversion` (λ per USD). `fit(covariance source)`."""

    name = "basket_cost"

    def __init__(self, quantities: Mapping[str, float], prices: Mapping[str, float], adv: Mapping[str, float],
                 eta_bps: float | Mapping[str, float] = 50.0, gamma_bps: float | Mapping[str, float] = 10.0,
                 half_spread_bps: float | Mapping[str, float] = 0.5, horizon_days: float = 1.0, steps: int = 48,
                 risk_aversion: float = 1e-6):
        self.quantities = quantities
        self.prices = prices
        self.adv = adv
        self.eta_bps = eta_bps
        self.gamma_bps = gamma_bps
        self.half_spread_bps = half_spread_bps
        self.horizon_days = horizon_days
        self.steps = steps
        self.risk_aversion = risk_aversion

    @staticmethod
    def _per(value, names: Sequence[str], what: str) -> np.ndarray:
        if isinstance(value, Mapping):
            missing = [n for n in names if n not in value]
            if missing:
                raise ValueError(f"{what}: no value for {missing} (given for {sorted(value)})")
            return np.array([float(value[n]) for n in names])
        return np.full(len(names), float(value))

    def fit(self, data) -> BasketResult:
        names, cov_day = covariance_input(data)
        traded = [n for n in names if float(self.quantities.get(n, 0.0)) != 0.0]
        unknown = [n for n in self.quantities if n not in names]
        if unknown:
            raise ValueError(f"quantities for {unknown}, which the covariance does not cover ({list(names)})")
        if not traded:
            raise ValueError("the basket is empty: give a non-zero quantity for at least one asset")
        idx = [names.index(n) for n in traded]
        cov = np.asarray(cov_day)[np.ix_(idx, idx)]
        X = self._per(self.quantities, traded, "quantities")
        P = self._per(self.prices, traded, "prices")
        adv = self._per(self.adv, traded, "adv")
        if (P <= 0).any() or (adv <= 0).any():
            raise ValueError("prices and ADV must be > 0")
        if not (self.horizon_days > 0 and self.steps >= 1 and self.risk_aversion >= 0):
            raise ValueError("horizon_days > 0, steps ≥ 1 and risk_aversion ≥ 0 are required")
        T, N, lam = float(self.horizon_days), int(self.steps), float(self.risk_aversion)
        tau = T / N
        eta = self._per(self.eta_bps, traded, "eta_bps") / BPS * P / adv
        gamma = self._per(self.gamma_bps, traded, "gamma_bps") / BPS * P / adv
        eps = self._per(self.half_spread_bps, traded, "half_spread_bps") / BPS * P
        H = eta - 0.5 * gamma * tau
        warn = []
        if (H <= 0).any():
            raise ValueError("η − ½γτ must be > 0 for every asset (temporary impact must exceed half the permanent "
                             "impact over one step): use more steps or check eta_bps / gamma_bps")
        C = cov * np.outer(P, P)
        lam_eig = float(np.linalg.eigvalsh(0.5 * (C + C.T)).min())
        if lam_eig < -1e-10 * float(np.abs(np.diag(C)).max()):
            warn.append(f"the covariance is not positive semi-definite (smallest eigenvalue {lam_eig:.3g} USD²/day): "
                        f"its negative directions are treated as riskless; use a Ledoit–Wolf matrix")
        x_tog = ac_trajectory(X, H, C, T=T, N=N, lam=lam)
        x_apart = np.column_stack([ac_trajectory(X[[i]], H[[i]], C[np.ix_([i], [i])], T=T, N=N, lam=lam)[:, 0]
                                   for i in range(len(traded))])
        E_t, V_t = ac_moments(x_tog, H=H, C=C, gamma=gamma, eps=eps, T=T)
        E_a, V_a = ac_moments(x_apart, H=H, C=C, gamma=gamma, eps=eps, T=T)
        _, V_naive = ac_moments(x_apart, H=H, C=np.diag(np.diag(C)), gamma=gamma, eps=eps, T=T)
        notional = float(np.sum(np.abs(X) * P))
        U_t, U_a = E_t + lam * V_t, E_a + lam * V_a
        params = {"expected_cost_together_usd": E_t, "sd_together_usd": math.sqrt(max(V_t, 0.0)),
                  "utility_together_usd": U_t, "expected_cost_apart_usd": E_a,
                  "sd_apart_usd": math.sqrt(max(V_a, 0.0)), "sd_apart_naive_usd": math.sqrt(max(V_naive, 0.0)),
                  "utility_apart_usd": U_a, "saving_usd": U_a - U_t, "saving_bps": (U_a - U_t) / notional * BPS,
                  "expected_cost_together_bps": E_t / notional * BPS, "expected_cost_apart_bps": E_a / notional * BPS}
        per_asset = tuple({"name": n, "quantity": float(X[i]), "price": float(P[i]), "adv": float(adv[i]),
                           "notional_usd": float(abs(X[i]) * P[i]), "sigma_daily": float(math.sqrt(max(cov[i, i], 0))),
                           "eta_usd_per_unit_per_day": float(eta[i]), "gamma_usd_per_unit": float(gamma[i]),
                           "half_spread_usd": float(eps[i])} for i, n in enumerate(traded))
        report = OptimizerReport.closed_form(
            "Almgren–Chriss optimal trajectories in closed form (eigen-modes of H̃^−½ C H̃^−½)",
            risk_aversion_per_usd=lam, horizon_days=T, steps=N)
        settings = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in self.get_params().items()}
        return BasketResult(model=self.name, names=tuple(traded), params=params,
                            std_errors={k: float("nan") for k in params}, report=report, warnings=tuple(warn),
                            together=x_tog, apart=x_apart, times_days=np.arange(N + 1) * tau, per_asset=per_asset,
                            settings=settings)

    def fix(self, params: Mapping[str, float], data) -> BasketResult:
        """The basket's cost is a function of its inputs, nothing is estimated: `fix` with settings
        changes (e.g. {"risk_aversion": 1e-5}) is `set_params(**params).fit(data)`."""
        return self.set_params(**dict(params)).fit(data)
