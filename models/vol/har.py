"""HAR-RV (Corsi 2009): forecasting realised variance from its daily, weekly and monthly averages.

    RV_{t+a} = β0 + β_d·RV_t + β_w·RV_t^(w) + β_m·RV_t^(m) + ε_{t+a},
    RV_t^(w) = mean(RV_{t−4..t}),  RV_t^(m) = mean(RV_{t−21..t})        (lags 1, 5, 22 periods)

`log=True` is the log version (Andersen, Bollerslev & Diebold 2007): log RV_{t+a} on the logs of
the same averages; its level forecasts are exp(log forecast + s²/2) (s² the residual variance, the
lognormal correction).

Realised variance per period (a UTC day by default): from bars or trades, the per-period variance
of `execal.models.vol.realized.realized_table` (the estimator's mean per-bar variance × bars per
period: on a complete day that is the sum of squared intraday returns, and a partial day stays
unbiased). The default estimator is `realized_variance`, squared close-to-close log returns
(Andersen & Bollerslev 1998): it is what Corsi's model is written for; pick `bipower` for a
jump-robust RV or a range estimator for bars with informative highs and lows. Use 5-minute bars
(`bar="5min"`) when the data are finer: at one minute microstructure noise inflates the RV, and
5-minute RV is hard to beat (Liu, Patton & Sheppard 2015). Given returns (`Returns`, a Series or an
array) give RV = mean r² (or bipower) × returns per period. A period with fewer than half its bars
(or returns) is dropped and counted; missing periods are skipped (the trading-day convention: the
5- and 22-period windows count periods with data, which is exact for 24/7 markets without gaps).

Estimation: ordinary least squares (closed form, `OptimizerReport.closed_form`). Standard errors
are Newey–West (Bartlett kernel) HAC: the weekly and monthly regressors are overlapping averages,
so neighbouring rows share most of their information, and the residuals of a long-memory series
are autocorrelated; for a target `ahead` > 1 periods away the targets overlap too. Lags
(`hac_lags=None`): `base.default_hac_lags` = at least the longest window (22), at least ahead − 1,
at least the Newey–West rule ⌊4(n/100)^(2/9)⌋, at most a quarter of the rows. `hac_correction`
multiplies by n/(n − k) (statsmodels' `use_correction`; off by default, as statsmodels).
tests/vol/test_har.py checks the coefficients (to 1e-10) and the HAC standard errors against
statsmodels' OLS with `cov_type="HAC"` on the same design.

Forecasts (`forecast(H)`, `ahead` = 1): the multi-step recursion, each forecast fed back as the
next period's RV into the daily, weekly and monthly averages. In-sample R² always; with
`test_fraction` > 0 the last share of the rows is held out (the coefficients are fitted on the rest,
leaving a gap of ahead − 1 rows so no target overlaps the test rows) and the out-of-sample R²
(against the training mean), MSE and QLIKE are reported.

Boundaries: β_d + β_w + β_m ≥ 1 means the fitted RV does not revert (no long-run level, no
half-life): warned about, with the reason in `stats`. Fewer than 250 regression rows warn (HAC
standard errors need long samples).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from execal.models.core.frozen import freeze_arrays
from execal.models.core.params import DAYS_PER_YEAR, NS_PER_DAY, Param
from execal.models.core.report import OptimizerReport
from execal.models.data.bars import GAP_POLICIES, Returns, _freq_label, check_not_constant, parse_freq
from execal.models.data.schema import DataError
from execal.models.vol.base import (GIVEN_RETURNS, VolatilityModel, VolatilityResult, data_info,
                                    default_hac_lags, few_observations, hac_covariance, prepare_bars,
                                    prepare_returns)
from execal.models.vol.realized import ESTIMATORS, realized_table

NAMES = ("const", "beta_d", "beta_w", "beta_m")
RETURN_ESTIMATORS = ("realized_variance", "bipower")     # what given returns (no bars) allow
MIN_ROWS = 50             # refused below
FEW_ROWS = 250            # warned below
MIN_SHARE = 0.5           # a period needs at least half its bars / returns
STATIONARY_TOL = 1e-9
MAX_IRF = 10_000          # periods the impulse response is followed for the half-life


# --- realised variance per period -------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class RVSeries:
    """Realised variance per period (fraction² per period), the periods kept and what was dropped."""
    t_ns: np.ndarray           # period start, UTC ns
    rv: np.ndarray
    period_ns: int
    per_period: float          # bars (or returns) a complete period has
    source: str
    symbol: str | None
    notes: tuple[str, ...]
    report: Any = None
    span_ns: tuple[int, int] = (0, 0)

    def __post_init__(self):
        freeze_arrays(self, ("t_ns", "rv"))


def _keep_note(kept: np.ndarray, counts: np.ndarray, expected: float, what: str, freq: str) -> list[str]:
    out = []
    partial = int(((counts > 0) & ~kept).sum())
    if partial:
        out.append(f"{partial} {freq} period(s) with fewer than half their {what} dropped from the realised "
                   f"variance series")
    empty = int((counts == 0).sum())
    if empty:
        out.append(f"{empty} {freq} period(s) without data skipped: the HAR windows count periods with data "
                   f"(the trading-day convention)")
    return out


def realized_variance_series(data, *, estimator: str = "realized_variance", freq: str = "1D",
                             symbol: str | None = None, bar: str | None = None, gaps: str = "error",
                             period: str | None = None) -> RVSeries:
    """Realised variance per `freq` period of bars / trades / a path / a Dataset (any realised
    estimator) or of given returns (`realized_variance` or `bipower`)."""
    freq_ns = parse_freq(freq)
    freq_label = _freq_label(freq_ns)
    if isinstance(data, (Returns,) + GIVEN_RETURNS):
        if estimator not in RETURN_ESTIMATORS:
            raise ValueError(f"from returns (no bars) the realised variance is one of {RETURN_ESTIMATORS}, "
                             f"not {estimator!r}")
        r, notes = prepare_returns(data, period=period)
        if freq_ns < r.period_ns or freq_ns % r.period_ns:
            raise DataError(f"freq {freq_label} must be a multiple of the returns' period "
                            f"{_freq_label(r.period_ns)}", file=r.source)
        per = freq_ns // r.period_ns
        t = np.asarray(r.t_ns)
        v = np.asarray(r.values, dtype=np.float64)
        p = t // freq_ns
        p0 = int(p[0])
        idx = (p - p0).astype(np.intp)
        n_p = int(idx[-1]) + 1
        counts = np.bincount(idx, minlength=n_p).astype(np.float64)
        if estimator == "realized_variance":
            terms, n_terms = v * v, counts
        else:                                           # bipower: consecutive returns in one period
            pair = np.zeros(v.shape[0], bool)
            pair[1:] = (np.diff(t) == r.period_ns) & (idx[1:] == idx[:-1])
            prod = np.zeros_like(v)
            prod[1:] = np.abs(v[1:]) * np.abs(v[:-1])
            terms = np.where(pair, prod * (math.pi / 2.0), 0.0)
            n_terms = np.bincount(idx[pair], minlength=n_p).astype(np.float64)
        sums = np.bincount(idx, terms, minlength=n_p)
        with np.errstate(invalid="ignore", divide="ignore"):
            rv = sums / n_terms * per
        kept = (counts >= MIN_SHARE * per) & np.isfinite(rv)
        notes = list(notes) + _keep_note(kept, counts, per, "returns", freq_label)
        t_p = (p0 + np.arange(n_p)) * freq_ns
        return RVSeries(t_p[kept], rv[kept], freq_ns, float(per), r.source, r.symbol, tuple(notes), r.report,
                        (int(t[0]), int(t[-1])))
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown estimator {estimator!r}; choose one of {', '.join(ESTIMATORS)}")
    bars, notes = prepare_bars(data, symbol=symbol, bar=bar, gaps=gaps)
    if bars.n < 2:
        raise DataError(f"too few observations: {bars.n} bar(s)", file=bars.source)
    check_not_constant(bars)
    table = realized_table(bars, freq, 1)
    per = freq_ns / bars.bar_ns
    counts = table["n_bars"].to_numpy(np.float64)
    sigma_daily = table[estimator].to_numpy(np.float64)
    rv = sigma_daily ** 2 * (freq_ns / NS_PER_DAY)
    kept = (counts >= MIN_SHARE * per) & np.isfinite(rv)
    notes = list(notes) + _keep_note(kept, counts, per, "bars", freq_label)
    if per <= 1:
        notes.append(f"one bar per {freq_label} period: the realised variance of a period is one squared "
                     f"return, a very noisy measure (give finer bars)")
    t_p = table["period"].to_numpy("datetime64[ns]").astype(np.int64)
    return RVSeries(t_p[kept], rv[kept], freq_ns, float(per), bars.source, bars.symbol, tuple(notes), bars.report,
                    (int(bars.t_ns[0]), int(bars.t_ns[-1])))


# --- the regression ---------------------------------------------------------------------------

def _check_lags(lags: Sequence[int]) -> tuple[int, int, int]:
    try:
        out = tuple(int(x) for x in lags)
    except (TypeError, ValueError):
        raise ValueError(f"lags must be three whole numbers of periods, got {lags!r}") from None
    if len(out) != 3 or out[0] < 1 or not out[0] < out[1] < out[2]:
        raise ValueError(f"lags must be three increasing positive periods (daily, weekly, monthly), got {lags!r}")
    return out   # type: ignore[return-value]


def _averages(rv: np.ndarray, lags: Sequence[int]) -> np.ndarray:
    """(T, 3) trailing means of the last lags[j] values at each t (NaN before the window is full)."""
    cs = np.concatenate([[0.0], np.cumsum(rv)])
    T = rv.shape[0]
    out = np.full((T, len(lags)), np.nan)
    for j, L in enumerate(lags):
        if T >= L:
            out[L - 1:, j] = (cs[L:] - cs[:-L]) / L
    return out


def har_design(rv: np.ndarray, lags: Sequence[int] = (1, 5, 22), ahead: int = 1,
               log: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(X with a constant column, target y, base index t) of the HAR regression on a realised
    variance series: row t regresses RV_{t+ahead} (or its log) on the trailing averages at t."""
    lags = _check_lags(lags)
    rv = np.asarray(rv, dtype=np.float64)
    avg = _averages(rv, lags)
    t = np.arange(lags[-1] - 1, rv.shape[0] - ahead)
    X = avg[t]
    y = rv[t + ahead]
    if log:
        X, y = np.log(X), np.log(y)
    return np.column_stack([np.ones(t.shape[0]), X]), y, t


def _ols(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    beta, *_ = np.linalg.lstsq(X, y, rcond=None)
    return beta


def _impulse_half_life(beta: np.ndarray, lags: Sequence[int]) -> float | None:
    """Periods until the forecast's response to a one-off RV shock first falls to half: the HAR as
    an AR(lags[-1]) (weights β_j / L_j on each of the last L_j periods)."""
    L = lags[-1]
    w = np.zeros(L)
    for b, lag in zip(beta[1:], lags):
        w[:lag] += b / lag
    resp = np.zeros(MAX_IRF + L)
    resp[L - 1] = 1.0                       # the shock, with L−1 zeros before it
    for k in range(L, resp.shape[0]):
        resp[k] = w @ resp[k - L:k][::-1]
        if resp[k] <= 0.5:
            prev = resp[k - 1]
            frac = (prev - 0.5) / (prev - resp[k]) if prev != resp[k] else 1.0
            return float(k - L + frac)
    return None


@dataclass(frozen=True, eq=False)
class HarResult(VolatilityResult):
    """A HAR-RV fit (or hand-set coefficients) with its RV series, design and forecasts."""
    log: bool = False
    lags: tuple[int, int, int] = (1, 5, 22)
    ahead: int = 1
    period_ns: int = NS_PER_DAY
    t_ns: np.ndarray | None = None             # period start of each RV
    rv: np.ndarray | None = None               # realised variance per period (fraction²)
    X: np.ndarray | None = None                # design with a constant column (logs with log=True)
    y: np.ndarray | None = None                # target
    base: np.ndarray | None = None             # index of each row's base period in rv
    train: np.ndarray | None = None            # rows the coefficients were fitted on
    resid_var: float = float("nan")            # residual variance of the training rows (log units with log)

    def __post_init__(self):
        freeze_arrays(self, ("t_ns", "rv", "X", "y", "base", "train"))

    @property
    def beta(self) -> np.ndarray:
        return np.array([self.params[n] for n in NAMES])

    def _level(self, fitted: np.ndarray) -> np.ndarray:
        """Level (variance) forecasts from fitted values of the regression."""
        return np.exp(fitted + 0.5 * self.resid_var) if self.log else fitted

    def rv_series(self) -> pd.Series:
        return pd.Series(np.asarray(self.rv), index=pd.to_datetime(np.asarray(self.t_ns), unit="ns", utc=True),
                         name="rv")

    def design_frame(self) -> pd.DataFrame:
        """The regression as fitted: base period, target period, target, the regressors (with the
        constant), fitted values and whether the row was used for the coefficients."""
        t = np.asarray(self.t_ns)
        base = np.asarray(self.base)
        fitted = np.asarray(self.X) @ self.beta
        return pd.DataFrame({
            "base": pd.to_datetime(t[base], unit="ns", utc=True),
            "timestamp": pd.to_datetime(t[base + self.ahead], unit="ns", utc=True),
            "target": np.asarray(self.y), "const": np.asarray(self.X)[:, 0], "rv_d": np.asarray(self.X)[:, 1],
            "rv_w": np.asarray(self.X)[:, 2], "rv_m": np.asarray(self.X)[:, 3], "fitted": fitted,
            "train": np.asarray(self.train)})

    def volatility_frame(self) -> pd.DataFrame:
        """Per target period: timestamp, rv (realised), variance (the model's fitted forecast of it),
        sigma (per period), sigma_daily, sigma_annualized: figure-ready like a GARCH path."""
        d = self.design_frame()
        var = self._level(d["fitted"].to_numpy())
        rv = np.asarray(self.rv)[np.asarray(self.base) + self.ahead]
        per_day = NS_PER_DAY / self.period_ns
        with np.errstate(invalid="ignore"):
            sigma = np.sqrt(np.where(var > 0, var, np.nan))
        daily = sigma * math.sqrt(per_day)
        return pd.DataFrame({"timestamp": d["timestamp"], "rv": rv, "variance": var, "sigma": sigma,
                             "sigma_daily": daily, "sigma_annualized": daily * math.sqrt(DAYS_PER_YEAR)})

    def forecast(self, horizon: int = 10) -> pd.DataFrame:
        """Variance forecasts h = 1..horizon periods after the last RV by the multi-step recursion
        (each forecast fed back into the averages; `ahead` = 1), or, for a model of RV `ahead` > 1
        periods away, its direct forecast at h = ahead only. Columns as `GarchResult.forecast`:
        h, timestamp, variance (per period), sigma, sigma_daily, sigma_annualized,
        sigma_daily_horizon (σ of the cumulative return over the next h periods, per day)."""
        if horizon < 1:
            raise ValueError("horizon must be >= 1")
        beta = self.beta
        rv = np.asarray(self.rv, dtype=np.float64)
        L = self.lags[-1]
        if self.ahead == 1:
            hist = list(rv[-L:])
            point = np.empty(horizon)
            for j in range(horizon):
                x = np.array([np.mean(hist[-lag:]) for lag in self.lags])
                f = beta[0] + beta[1:] @ (np.log(x) if self.log else x)
                point[j] = f
                hist.append(math.exp(f) if self.log else f)    # the median fed back in the log model
            h = np.arange(1, horizon + 1)
        else:
            x = np.array([np.mean(rv[-lag:]) for lag in self.lags])
            point = np.array([beta[0] + beta[1:] @ (np.log(x) if self.log else x)])
            h = np.array([self.ahead])
        var = self._level(point)
        per_day = NS_PER_DAY / self.period_ns
        with np.errstate(invalid="ignore"):
            sigma = np.sqrt(np.where(var > 0, var, np.nan))
        daily = sigma * math.sqrt(per_day)
        last = int(np.asarray(self.t_ns)[-1])
        cum = np.cumsum(var) if self.ahead == 1 else var * h
        return pd.DataFrame({
            "h": h, "timestamp": pd.to_datetime(last + h * self.period_ns, unit="ns", utc=True),
            "variance": var, "sigma": sigma, "sigma_daily": daily,
            "sigma_annualized": daily * math.sqrt(DAYS_PER_YEAR),
            "sigma_daily_horizon": np.sqrt(np.where(cum > 0, cum, np.nan) / (h / per_day))})

    def stat_lines(self) -> list[str]:
        s = self.stats or {}
        fmt = lambda x, d=4: "—" if x is None else f"{x:.{d}g}"      # noqa: E731
        lines = [f"{'log ' if self.log else ''}RV per {s.get('period', '?')} ({s.get('estimator')}), lags "
                 f"{list(self.lags)}, target {self.ahead} period(s) ahead; HAC (Newey-West) standard errors, "
                 f"{s.get('hac_lags')} lags",
                 f"R² in sample {fmt(s.get('r2'))}" + (
                     f"; out of sample {fmt(s.get('r2_oos'))} on {s.get('test_rows')} rows (MSE "
                     f"{fmt(s.get('mse_oos'))}, QLIKE {fmt(s.get('qlike_oos'))})" if s.get("test_rows") else ""),
                 f"persistence β_d + β_w + β_m = {fmt(s.get('persistence'), 6)}; half-life "
                 + (f"{fmt(s.get('half_life_days'))} days" if s.get("half_life_days") is not None
                    else f"— ({s.get('half_life_note')})")]
        lr = s.get("sigma_annualized_long_run")
        lines.append("long-run σ annualised " + (f"{100 * lr:.4g} % ({s.get('long_run_note')})" if lr is not None
                                                   else f"— ({s.get('long_run_note')})"))
        return lines


def _stats(beta, lags, log, resid_var, period_ns, rv, X, y, train, n_test, estimator, hac_lags) -> dict:
    per_day = NS_PER_DAY / period_ns
    persistence = float(np.sum(beta[1:]))
    fitted = X @ beta
    ytr = y[train]
    sst = float(np.sum((ytr - ytr.mean()) ** 2))
    r2 = 1.0 - float(np.sum((ytr - fitted[train]) ** 2)) / sst if sst > 0 else None
    out: dict[str, Any] = {"period": _freq_label(period_ns), "estimator": estimator, "log": log,
                           "lags": list(lags), "hac_lags": hac_lags, "rows": int(y.shape[0]),
                           "train_rows": int(train.sum()), "r2": r2, "persistence": persistence,
                           "persistence_formula": "β_d + β_w + β_m", "rv_periods": int(rv.shape[0]),
                           "rv_mean": float(rv.mean()), "residual_variance": resid_var}
    test = np.zeros(y.shape[0], bool)
    if n_test:
        test[y.shape[0] - n_test:] = True
    if test.any():
        yt, ft = y[test], fitted[test]
        out["test_rows"] = int(test.sum())
        out["mse_oos"] = float(np.mean((yt - ft) ** 2))
        denom = float(np.sum((yt - ytr.mean()) ** 2))
        out["r2_oos"] = 1.0 - float(np.sum((yt - ft) ** 2)) / denom if denom > 0 else None
        level_y = np.exp(yt) if log else yt
        level_f = np.exp(ft + 0.5 * resid_var) if log else ft
        ok = (level_f > 0) & (level_y > 0)
        ratio = level_y[ok] / level_f[ok]
        out["qlike_oos"] = float(np.mean(ratio - np.log(ratio) - 1.0)) if ok.any() else None
        out["oos_note"] = ("R² against the training mean; MSE in the regression's units; QLIKE = mean(RV/F − "
                           "ln(RV/F) − 1) on variances")
    if persistence < 1 - STATIONARY_TOL:
        m = beta[0] / (1.0 - persistence)
        level = math.exp(m) if log else m
        if level > 0:
            out.update(variance_long_run=level,
                       sigma_daily_long_run=math.sqrt(level * per_day),
                       sigma_annualized_long_run=math.sqrt(level * per_day * DAYS_PER_YEAR),
                       long_run_note="exp(β0 / (1 − Σβ)): the geometric long-run level" if log
                       else "β0 / (1 − β_d − β_w − β_m)")
        else:
            out.update(variance_long_run=None, sigma_daily_long_run=None, sigma_annualized_long_run=None,
                       long_run_note=f"undefined: β0 / (1 − Σβ) = {level:.3g} is not a positive variance")
        hl = _impulse_half_life(beta, lags)
        out.update(half_life_periods=hl, half_life_days=None if hl is None else hl / per_day,
                   half_life_note="first horizon where the forecast's response to a one-off RV shock falls to half"
                   if hl is not None else f"the response to a shock does not halve within {MAX_IRF} periods")
    else:
        why = (f"undefined: persistence β_d + β_w + β_m = {persistence:.6f} is on or beyond the stationarity "
               f"boundary 1: the fitted RV does not revert")
        out.update(variance_long_run=None, sigma_daily_long_run=None, sigma_annualized_long_run=None,
                   long_run_note=why, half_life_periods=None, half_life_days=None, half_life_note=why)
    return out


def _prepare(data, estimator, freq, lags, ahead, log, symbol, bar, gaps, period):
    lags = _check_lags(lags)
    if int(ahead) < 1:
        raise ValueError(f"ahead must be >= 1, got {ahead}")
    ahead = int(ahead)
    series = realized_variance_series(data, estimator=estimator, freq=freq, symbol=symbol, bar=bar,
                                      gaps=gaps, period=period)
    notes = list(series.notes)
    t_ns, rv = np.asarray(series.t_ns), np.asarray(series.rv)
    if log:
        pos = rv > 0
        if not pos.all():
            notes.append(f"{int((~pos).sum())} period(s) with zero realised variance dropped (log HAR: the log "
                         f"of zero is undefined; flat bars?)")
            t_ns, rv = t_ns[pos], rv[pos]
    X, y, base = har_design(rv, lags, ahead, log)
    what = f"HAR-RV ({_freq_label(series.period_ns)} realised variance)"
    if y.shape[0] < MIN_ROWS:
        raise DataError(f"too few observations for {what}: {rv.shape[0]} period(s) give {max(y.shape[0], 0)} "
                        f"regression row(s) with lags {list(lags)}, need at least {MIN_ROWS} (a longer file)",
                        file=series.source)
    if not np.any(rv != rv[0]):
        raise DataError(f"constant realised variance ({rv[0]:g}): nothing to regress", file=series.source)
    return series, notes, lags, ahead, t_ns, rv, X, y, base


def _result(series, notes, lags, ahead, log, t_ns, rv, X, y, base, train, n_test, beta, se, report, status,
            estimator, hac_lags, extra_warn) -> HarResult:
    resid = y - X @ beta
    resid_var = float(np.var(resid[train], ddof=X.shape[1])) if train.sum() > X.shape[1] else float("nan")
    stats = _stats(beta, lags, log, resid_var, series.period_ns, rv, X, y, train, n_test, estimator, hac_lags)
    warnings = list(notes) + list(extra_warn)
    if stats["persistence"] >= 1 - STATIONARY_TOL:
        warnings.append(f"on the stationarity boundary: β_d + β_w + β_m = {stats['persistence']:.6f} ≥ 1, the "
                        f"fitted realised variance does not revert, so the long-run level and the half-life are "
                        f"undefined (None) and the forecasts drift")
    if not log:
        neg = int((X @ beta <= 0).sum())
        if neg:
            warnings.append(f"{neg} fitted variance(s) ≤ 0 (the level HAR is not constrained positive): those "
                            f"periods have no σ; the log version (log=True) cannot go negative")
    unit = "log(fraction² per period)" if log else "fraction² per period"
    units = {"const": unit, "beta_d": "-", "beta_w": "-", "beta_m": "-"}
    span = np.array(series.span_ns)
    info = data_info(series.source, series.symbol, span, series.period_ns)
    return HarResult(
        model="har", params=dict(zip(NAMES, map(float, beta))), std_errors=dict(zip(NAMES, map(float, se))),
        report=report, loglikelihood=None, n_obs=int(train.sum()), status=status, units=units, stats=stats,
        settings={"lags": list(lags), "ahead": ahead, "log": log, "estimator": estimator},
        warnings=tuple(dict.fromkeys(warnings)), data=info, validation=series.report, log=log,
        lags=tuple(lags), ahead=ahead, period_ns=series.period_ns, t_ns=t_ns, rv=rv, X=X, y=y, base=base,
        train=train, resid_var=resid_var)


def _fit_har(data, *, estimator: str = "realized_variance", freq: str = "1D",
             lags: Sequence[int] = (1, 5, 22), ahead: int = 1, log: bool = False, hac_lags: int | None = None,
             hac_correction: bool = False, test_fraction: float = 0.0, symbol: str | None = None,
             bar: str | None = None, gaps: str = "error", period: str | None = None) -> HarResult:
    """Fit HAR-RV by OLS with Newey–West standard errors (see the module docstring)."""
    if not 0.0 <= float(test_fraction) < 0.9:
        raise ValueError(f"test_fraction must be in [0, 0.9), got {test_fraction}")
    series, notes, lags, ahead, t_ns, rv, X, y, base = _prepare(data, estimator, freq, lags, ahead, log,
                                                                symbol, bar, gaps, period)
    m = y.shape[0]
    n_test = int(round(float(test_fraction) * m))
    train = np.ones(m, bool)
    if n_test:
        train[m - n_test - (ahead - 1):] = False          # gap of ahead − 1 rows: no overlapping target
        if train.sum() < MIN_ROWS:
            raise DataError(f"test_fraction {test_fraction} leaves {int(train.sum())} training rows, need at least "
                            f"{MIN_ROWS}", file=series.source)
    Xt, yt = X[train], y[train]
    beta = _ols(Xt, yt)
    L = default_hac_lags(int(train.sum()), lags[-1], ahead) if hac_lags is None else int(hac_lags)
    if L < 0:
        raise ValueError(f"hac_lags must be >= 0, got {hac_lags}")
    cov = hac_covariance(Xt, yt - Xt @ beta, L, bool(hac_correction))
    d = np.diag(cov)
    se = np.where(d > 0, np.sqrt(np.where(d > 0, d, 0.0)), np.nan)
    cond = float(np.linalg.cond(Xt))
    extra = few_observations(int(train.sum()), FEW_ROWS, "HAR-RV", "HAC standard errors need long samples")
    if cond > 1e12:
        extra.append(f"the design is nearly singular (condition number {cond:.3g}): the coefficients are not "
                     f"separately identified")
    report = OptimizerReport.closed_form(
        f"ordinary least squares on {int(train.sum())} rows; HAC (Newey-West, Bartlett, {L} lags"
        + (", small-sample correction" if hac_correction else "") + ") standard errors",
        hac_lags=L, hac_correction=bool(hac_correction), condition_number=cond)
    return _result(series, notes, lags, ahead, bool(log), t_ns, rv, X, y, base, train, n_test, beta, se, report,
                   "closed_form", estimator, L, extra)


def _fix_har(params: Mapping[str, float], data, *, estimator: str = "realized_variance", freq: str = "1D",
             lags: Sequence[int] = (1, 5, 22), ahead: int = 1, log: bool = False, hac_lags: int | None = None,
             hac_correction: bool = False, test_fraction: float = 0.0, symbol: str | None = None,
             bar: str | None = None, gaps: str = "error", period: str | None = None) -> HarResult:
    """A HarResult at hand-set coefficients (const, beta_d, beta_w, beta_m) on the data's RV series:
    fitted values, R² and forecasts there. The estimation settings (hac_*, test_fraction) are unused."""
    missing = [n for n in NAMES if n not in params]
    unknown = [n for n in params if n not in NAMES]
    if missing or unknown:
        raise ValueError(f"HAR-RV takes parameters {list(NAMES)}" + (f"; missing {missing}" if missing else "")
                         + (f"; unknown {unknown}" if unknown else ""))
    series, notes, lags, ahead, t_ns, rv, X, y, base = _prepare(data, estimator, freq, lags, ahead, log,
                                                                symbol, bar, gaps, period)
    beta = np.array([float(params[n]) for n in NAMES])
    train = np.ones(y.shape[0], bool)
    return _result(series, notes, lags, ahead, bool(log), t_ns, rv, X, y, base, train, 0, beta,
                   np.full(4, np.nan), OptimizerReport.fixed(), "fixed", estimator, None, [])


HAR_MODEL = VolatilityModel(
    name="har", label="HAR-RV (realised variance forecast)",
    formula="RV_{t+1} = β0 + β_d·RV_t + β_w·mean(RV_{t−4..t}) + β_m·mean(RV_{t−21..t}) + ε (or in logs)",
    params=(Param("const", 1e-4, -1.0, 1.0, "fraction² per period (log units with log)", "intercept"),
            Param("beta_d", 0.4, -2.0, 2.0, "-", "weight of yesterday's RV"),
            Param("beta_w", 0.3, -2.0, 2.0, "-", "weight of the weekly average RV"),
            Param("beta_m", 0.2, -2.0, 2.0, "-", "weight of the monthly average RV")),
    options={"estimator": tuple(ESTIMATORS), "freq": "1D", "log": (False, True), "gaps": GAP_POLICIES,
             "hac_correction": (False, True)},
    reference="Corsi 2009; Andersen, Bollerslev & Diebold 2007 (log HAR); Newey & West 1987",
    fit_fn=_fit_har, fix_fn=_fix_har, forecasts=True,
    option_help={"estimator": "realised variance estimator per period (default: squared intraday returns)",
                 "freq": "the RV period (default 1D)",
                 "lags": "daily, weekly, monthly windows in periods (default 1,5,22; 24/7 markets may prefer 1,7,30)",
                 "ahead": "the regression target is RV this many periods ahead (1: multi-step recursion)",
                 "log": "regress log RV on the logs of the averages",
                 "hac_lags": "Newey-West lags (default: max(22, ahead-1, Newey-West rule), at most a quarter)",
                 "hac_correction": "HAC small-sample correction n/(n-k)",
                 "test_fraction": "last share of the rows held out for out-of-sample R², MSE, QLIKE"})
