"""Execution-cost (market impact) models: the specifications the calibrator fits.

A model here is a *specification*, never a fitted thing (arch's model/result split): it declares its
parameters (`Param`: name, default, bounds, unit, description), its formula as text for the UI and
the config file, which inputs it needs, and evaluates vectorised with an analytic Jacobian. Fitting
lives in `models/fit.py`; the single list of models that exist is `models/registry.py`.

Conventions (the issue's, shared with `models/sample.py`):
- costs in bps; `sigma` = daily volatility as a fraction (0.03 = 3 % a day);
- `Q/V` = `Features.participation` = quantity / adv (default) or quantity / market_volume
  ("horizon" participation);
- `T` = duration in days; the spread term `h·spread_bps/2` is dropped when there is no spread.

`theta` is always the full parameter vector in the order of `ImpactModel.params` (fixed ones
included); `jacobian(theta, features, free)` returns only the requested columns, built as a
(k, n) block and returned transposed so each column is one contiguous pass over the data.
The hot path is `exp(delta·log x)`: the logs are cached on `Features`, once per dataset.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from execal.models.core.params import BPS, DAYS_PER_YEAR, Param  # noqa: F401  (re-exported)
from execal.models.data.schema import DataError
from execal.models.impact.features import NEEDS_COLUMNS, Features, missing_inputs_message

H_PARAM = Param("h", 1.0, 0.0, 5.0, "×", "spread coefficient: cost pays h × half the quoted "
                "spread (fixed at 1 unless freed; dropped when there is no spread)", fixed=True)


class ImpactModel:
    """Base of the impact models: metadata, parameter handling, spread term and input checks.

    Subclasses implement `_impact(theta, f)` (impact in bps, without the spread term) and
    `_impact_jacobian(theta, f, out, cols)` (fill the rows of `out` for the non-h columns).
    """
    kind = "impact"
    name: str = ""
    label: str = ""
    formula: str = ""
    reference: str = ""
    params: tuple[Param, ...] = ()
    needs: tuple[str, ...] = ("participation", "sigma")    # Features inputs (spread is optional)

    # -- parameters ---------------------------------------------------------------------------
    @property
    def param_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params)

    def index(self, name: str) -> int:
        try:
            return self.param_names.index(name)
        except ValueError:
            raise ValueError(f"model '{self.name}' has no parameter '{name}' "
                             f"(parameters: {', '.join(self.param_names)})") from None

    @property
    def defaults(self) -> np.ndarray:
        return np.array([p.default for p in self.params], dtype=np.float64)

    def theta(self, params: Mapping[str, float] | Sequence[float] | np.ndarray,
              *, fill_defaults: bool = False) -> np.ndarray:
        """The full parameter vector from a {name: value} mapping or an array in param order."""
        if isinstance(params, Mapping):
            unknown = [k for k in params if k not in self.param_names]
            if unknown:
                raise ValueError(f"model '{self.name}' has no parameter(s) {', '.join(map(repr, unknown))} "
                                 f"(parameters: {', '.join(self.param_names)})")
            missing = [p.name for p in self.params if p.name not in params]
            if missing and not fill_defaults:
                raise ValueError(f"model '{self.name}': missing value(s) for {', '.join(missing)}")
            out = self.defaults
            for i, p in enumerate(self.params):
                if p.name in params:
                    out[i] = float(params[p.name])
            return out
        out = np.asarray(params, dtype=np.float64).reshape(-1)
        if out.shape[0] != len(self.params):
            raise ValueError(f"model '{self.name}' takes {len(self.params)} parameters "
                             f"({', '.join(self.param_names)}), got {out.shape[0]}")
        return out

    def as_dict(self, theta: np.ndarray) -> dict[str, float]:
        return {p.name: float(v) for p, v in zip(self.params, theta)}

    # -- inputs -------------------------------------------------------------------------------
    def check(self, features: Features) -> None:
        """Raise `DataError` naming the column(s) this model needs and `features` lacks."""
        message = missing_inputs_message(features, self.needs, model=self.name)
        if message:
            raise DataError(message, file=features.source)

    # -- evaluation ---------------------------------------------------------------------------
    def predict(self, theta, features: Features) -> np.ndarray:
        """Expected cost in bps for every row of `features` (NaN where an input is NaN)."""
        theta = self.theta(theta)
        cost = self._impact(theta, features)
        h = theta[0]
        if features.spread_bps is not None and h != 0.0:
            cost += h * features.half_spread_bps
        return cost

    def jacobian(self, theta, features: Features, free: Sequence[int] | None = None) -> np.ndarray:
        """d cost_bps / d theta[free] as an (n, k) array (analytic)."""
        theta = self.theta(theta)
        cols = list(range(len(self.params))) if free is None else [int(i) for i in free]
        out = np.empty((len(cols), features.n), dtype=np.float64)
        for row, i in enumerate(cols):
            if i == 0:   # h is always params[0]
                if features.spread_bps is None:
                    out[row] = 0.0
                else:
                    out[row] = features.half_spread_bps
        rest = [(row, i) for row, i in enumerate(cols) if i != 0]
        if rest:
            self._impact_jacobian(theta, features, out, rest)
        return out.T

    def start(self, features: Features, cost_bps: np.ndarray, weights: np.ndarray | None,
              theta: np.ndarray, free: Sequence[int]) -> np.ndarray:
        """A starting point for the optimizer (default: `theta` as given). Subclasses do better."""
        return theta

    def describe(self) -> dict:
        return {"name": self.name, "kind": self.kind, "label": self.label, "formula": self.formula,
                "reference": self.reference,
                "needs": {need: NEEDS_COLUMNS[need] for need in self.needs},
                "params": [p.to_dict() for p in self.params]}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} '{self.name}': {self.formula}>"

    # subclasses
    def _impact(self, theta: np.ndarray, f: Features) -> np.ndarray:   # pragma: no cover
        raise NotImplementedError

    def _impact_jacobian(self, theta, f, out, rest) -> None:   # pragma: no cover
        raise NotImplementedError


def _impact_only(cost_bps: np.ndarray, features: Features, h: float) -> np.ndarray:
    """cost minus the spread term: what the impact part of a model must explain."""
    if features.spread_bps is None or h == 0.0:
        return cost_bps
    return cost_bps - h * features.half_spread_bps


def _wls_terms(basis: np.ndarray, target: np.ndarray, w2: np.ndarray | None) -> tuple[float, float]:
    """(Σ w²·basis·target, Σ w²·basis²) over the finite rows: additive over rows, so a streamed
    fit (execal.models.impact.outofcore) sums them batch by batch."""
    # einsum, not np.dot: a 1-D BLAS dot wakes OpenBLAS threads, which costs milliseconds on a
    # busy machine for microseconds of work
    ok = np.isfinite(basis) & np.isfinite(target)
    b, t = basis[ok], target[ok]
    wb = b if w2 is None else w2[ok] * b
    return float(np.einsum("i,i->", wb, t)), float(np.einsum("i,i->", wb, b))


def _wls_scale(basis: np.ndarray, target: np.ndarray, w2: np.ndarray | None) -> float:
    """Closed-form least-squares coefficient c of target ≈ c·basis (NaN-safe)."""
    num, den = _wls_terms(basis, target, w2)
    return num / den if den > 0 else np.nan


class _ClosedFormStart:
    """Models linear in their one impact coefficient (params[1]) start at its weighted
    least-squares value over every row: `start_terms` gives the two sums, `start_from_terms`
    the start, so a streamed fit starts where the in-memory fit does."""

    def _basis(self, f):   # pragma: no cover - subclasses
        raise NotImplementedError

    def start_terms(self, features, cost_bps, weights, theta) -> tuple[float, float]:
        target = _impact_only(cost_bps, features, theta[0])
        return _wls_terms(self._basis(features), target, None if weights is None else weights ** 2)

    def start_from_terms(self, num: float, den: float, theta, free) -> np.ndarray:
        out = theta.copy()
        if 1 not in free:
            return out
        coef = num / den if den > 0 else np.nan
        if np.isfinite(coef):
            out[1] = float(np.clip(coef, self.params[1].lower, self.params[1].upper))
        return out

    def start(self, features, cost_bps, weights, theta, free):
        if 1 not in free:
            return theta
        return self.start_from_terms(*self.start_terms(features, cost_bps, weights, theta), theta, free)


def _subsample(n: int, size: int = 50_000) -> slice | np.ndarray:
    """Deterministic evenly spaced subsample for start values (never random: same input → same start)."""
    if n <= size:
        return slice(None)
    return np.linspace(0, n - 1, size).astype(np.int64)


class PowerLaw(ImpactModel):
    name = "power_law"
    label = "Power law"
    formula = "cost_bps = h·spread_bps/2 + 1e4·Y·sigma·(Q/V)^delta"
    reference = "Bouchaud et al.; Tóth et al. (2011) 'Anomalous price impact and the critical nature of liquidity'"
    params = (H_PARAM,
              Param("Y", 1.0, 0.0, 20.0, "×", "impact prefactor (Y ≈ 0.5–1 in most markets)"),
              Param("delta", 0.5, 0.05, 1.5, "", "impact exponent in participation (0.5 = square root)"))

    def _impact(self, theta, f):
        y_coef, delta = theta[1], theta[2]
        out = np.multiply(f.log_participation, delta)
        np.exp(out, out=out)
        out *= f.sigma_bps
        out *= y_coef
        return out

    def _impact_jacobian(self, theta, f, out, rest):
        y_coef, delta = theta[1], theta[2]
        base = np.multiply(f.log_participation, delta)
        np.exp(base, out=base)
        base *= f.sigma_bps            # 1e4·sigma·(Q/V)^delta
        for row, i in rest:
            if i == 1:
                out[row] = base
            else:
                np.multiply(base, f.log_participation, out=out[row])
                out[row] *= y_coef

    def start(self, features, cost_bps, weights, theta, free):
        # Profile over delta: for a fixed delta the model is linear in Y, so a coarse grid of
        # closed-form fits on a subsample gives a start close enough for a few Gauss-Newton steps.
        free = set(free)
        if not ({1, 2} & free):
            return theta
        sub = _subsample(features.n)
        target = _impact_only(cost_bps[sub], features.take_rows(sub, labels=False), theta[0])
        log_p, sig = features.log_participation[sub], features.sigma_bps[sub]
        w2 = None if weights is None else weights[sub] ** 2
        lo, hi = self.params[2].lower, self.params[2].upper
        deltas = np.linspace(max(lo, 0.1), min(hi, 1.2), 12) if 2 in free else [theta[2]]
        best = (np.inf, theta[1], theta[2])
        for d in deltas:
            basis = sig * np.exp(d * log_p)
            y_coef = _wls_scale(basis, target, w2) if 1 in free else theta[1]
            if not np.isfinite(y_coef):
                continue
            y_coef = float(np.clip(y_coef, self.params[1].lower, self.params[1].upper))
            r = target - y_coef * basis
            sse = float(np.nansum(r * r * w2) if w2 is not None else np.nansum(r * r))
            if sse < best[0]:
                best = (sse, y_coef, d)
        out = theta.copy()
        out[1], out[2] = best[1], best[2]
        return out


class SquareRoot(_ClosedFormStart, ImpactModel):
    name = "sqrt"
    label = "Square-root law"
    formula = "cost_bps = h·spread_bps/2 + 1e4·Y·sigma·(Q/V)^0.5"
    reference = "Grinold & Kahn (2000); Almgren et al. (2005); Tóth et al. (2011)"
    params = (H_PARAM,
              Param("Y", 1.0, 0.0, 20.0, "×", "impact prefactor of the square-root law"))

    def _impact(self, theta, f):
        out = np.multiply(f.sqrt_participation, f.sigma_bps)
        out *= theta[1]
        return out

    def _impact_jacobian(self, theta, f, out, rest):
        for row, _ in rest:
            np.multiply(f.sqrt_participation, f.sigma_bps, out=out[row])

    def _basis(self, f):
        return f.sqrt_participation * f.sigma_bps


class Linear(_ClosedFormStart, ImpactModel):
    name = "linear"
    label = "Linear (Kyle)"
    formula = "cost_bps = h·spread_bps/2 + 1e4·lambda·sigma·(Q/V)"
    reference = "Kyle (1985)"
    params = (H_PARAM,
              Param("lambda", 1.0, 0.0, 1000.0, "×", "linear impact coefficient (Kyle's lambda, "
                    "in units of daily sigma per unit of participation)"))

    def _impact(self, theta, f):
        out = np.multiply(f.participation, f.sigma_bps)
        out *= theta[1]
        return out

    def _impact_jacobian(self, theta, f, out, rest):
        for row, _ in rest:
            np.multiply(f.participation, f.sigma_bps, out=out[row])

    def _basis(self, f):
        return f.participation * f.sigma_bps


class Almgren(ImpactModel):
    name = "almgren"
    label = "Almgren–Thum–Hauptmann–Li (2005)"
    formula = ("cost_bps = h·spread_bps/2 + 1e4·sigma·(gamma/2·(Q/V) + eta·(Q/(V·T))^beta), "
               "T = duration in days")
    reference = ("Almgren, Thum, Hauptmann & Li (2005) 'Direct estimation of equity market impact' "
                 "(their estimates: gamma 0.314, eta 0.142, beta 0.6)")
    params = (H_PARAM,
              Param("gamma", 0.314, 0.0, 50.0, "×", "permanent impact coefficient (half of it is paid)"),
              Param("eta", 0.142, 0.0, 50.0, "×", "temporary impact coefficient"),
              Param("beta", 0.6, 0.05, 1.5, "", "temporary impact exponent in trading rate Q/(V·T)"))
    needs = ("participation", "sigma", "T_days")

    def _impact(self, theta, f):
        gamma, eta, beta = theta[1], theta[2], theta[3]
        out = np.multiply(f.log_rate, beta)
        np.exp(out, out=out)
        out *= eta
        out += (0.5 * gamma) * f.participation
        out *= f.sigma_bps
        return out

    def _impact_jacobian(self, theta, f, out, rest):
        eta, beta = theta[2], theta[3]
        rate_pow = None
        for row, i in rest:
            if i == 1:
                np.multiply(f.participation, f.sigma_bps, out=out[row])
                out[row] *= 0.5
                continue
            if rate_pow is None:
                rate_pow = np.multiply(f.log_rate, beta)
                np.exp(rate_pow, out=rate_pow)
                rate_pow *= f.sigma_bps          # 1e4·sigma·(Q/(V·T))^beta
            if i == 2:
                out[row] = rate_pow
            else:
                np.multiply(rate_pow, f.log_rate, out=out[row])
                out[row] *= eta

    def start(self, features, cost_bps, weights, theta, free):
        # Profile over beta; for fixed beta the model is linear in (gamma, eta): a 2-column
        # non-negative least squares on a subsample.
        if not ({1, 2, 3} & set(free)):
            return theta
        sub = _subsample(features.n)
        fs = features.take_rows(sub, labels=False)
        target = _impact_only(cost_bps[sub], fs, theta[0])
        sw = None if weights is None else weights[sub]
        betas = np.linspace(0.2, 1.2, 11) if 3 in free else [theta[3]]
        best = (np.inf, theta)
        for b in betas:
            perm = 0.5 * fs.participation * fs.sigma_bps
            temp = np.exp(b * fs.log_rate) * fs.sigma_bps
            A = np.column_stack([perm, temp])
            ok = np.isfinite(A).all(axis=1) & np.isfinite(target)
            if ok.sum() < 3:
                continue
            Aw, tw = A[ok], target[ok]
            if sw is not None:
                Aw, tw = Aw * sw[ok, None], tw * sw[ok]
            coef = np.linalg.lstsq(Aw, tw, rcond=None)[0]
            cand = theta.copy()
            if 1 in free:
                cand[1] = np.clip(coef[0], 0.0, self.params[1].upper)
            if 2 in free:
                cand[2] = np.clip(coef[1], 0.0, self.params[2].upper)
            cand[3] = b
            r = tw - Aw @ np.array([cand[1], cand[2]])
            sse = float(np.einsum("i,i->", r, r))
            if sse < best[0]:
                best = (sse, cand)
        return best[1]


class IStar(ImpactModel):
    name = "istar"
    label = "Kissell I-Star"
    formula = ("cost_bps = h·spread_bps/2 + MI, MI = b1·I*·POV^a4 + (1−b1)·I*, "
               "I* = a1·(Q/V)^a2·sigma_ann^a3, sigma_ann = sigma·√365 (annualised, fraction), "
               "POV = Q/(Q+market_volume) (or Q/(V·T) capped at 1 without market_volume)")
    reference = ("Kissell, Glantz & Malamut (2004); Kissell (2013) 'The Science of Algorithmic "
                 "Trading and Portfolio Management' (a1 708, a2 0.55, a3 0.71, a4 0.50, b1 0.98 "
                 "with annualised volatility as a fraction)")
    params = (H_PARAM,
              Param("a1", 708.0, 1.0, 1e4, "bps", "instantaneous impact scale (bps)"),
              Param("a2", 0.55, 0.05, 1.5, "", "size exponent on Q/V"),
              Param("a3", 0.71, 0.0, 2.0, "", "volatility exponent on annualised sigma (fraction)"),
              Param("a4", 0.5, 0.0, 2.0, "", "participation-rate exponent on POV"),
              Param("b1", 0.98, 0.0, 1.0, "", "share of I* that is temporary (scales with POV)"))
    needs = ("participation", "sigma", "pov")

    def _istar(self, theta, f) -> np.ndarray:
        log_istar = np.multiply(f.log_participation, theta[2])
        log_istar += theta[3] * f.log_sigma_ann
        log_istar += np.log(theta[1])
        return np.exp(log_istar, out=log_istar)

    def _impact(self, theta, f):
        a4, b1 = theta[4], theta[5]
        pov_pow = np.multiply(f.log_pov, a4)
        np.exp(pov_pow, out=pov_pow)
        # MI = I*·(b1·POV^a4 + 1 − b1)
        pov_pow *= b1
        pov_pow += 1.0 - b1
        pov_pow *= self._istar(theta, f)
        return pov_pow

    def _impact_jacobian(self, theta, f, out, rest):
        a1, a4, b1 = theta[1], theta[4], theta[5]
        istar = self._istar(theta, f)
        pov_pow = np.exp(a4 * f.log_pov)
        shape = b1 * pov_pow + (1.0 - b1)
        mi = istar * shape
        for row, i in rest:
            if i == 1:
                np.divide(mi, a1, out=out[row])
            elif i == 2:
                np.multiply(mi, f.log_participation, out=out[row])
            elif i == 3:
                np.multiply(mi, f.log_sigma_ann, out=out[row])
            elif i == 4:
                np.multiply(istar, pov_pow, out=out[row])
                out[row] *= f.log_pov
                out[row] *= b1
            else:
                np.multiply(istar, pov_pow - 1.0, out=out[row])

    def start(self, features, cost_bps, weights, theta, free):
        # MI is linear in a1 for the other parameters at their defaults: rescale a1 only.
        if 1 not in free:
            return theta
        sub = _subsample(features.n)
        fs = features.take_rows(sub, labels=False)
        target = _impact_only(cost_bps[sub], fs, theta[0])
        basis = self._impact(theta, fs) / theta[1]
        a1 = _wls_scale(basis, target, None if weights is None else weights[sub] ** 2)
        out = theta.copy()
        if np.isfinite(a1):
            out[1] = float(np.clip(a1, self.params[1].lower, self.params[1].upper))
        return out


SQUARE_ROOT, POWER_LAW, ALMGREN, ISTAR, LINEAR = SquareRoot(), PowerLaw(), Almgren(), IStar(), Linear()
IMPACT_MODELS: tuple[ImpactModel, ...] = (SQUARE_ROOT, POWER_LAW, ALMGREN, ISTAR, LINEAR)
