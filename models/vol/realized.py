"""Realised volatility: what the bars (or trades) say the volatility was, period by period.

Estimators (`ESTIMATORS`), each a per-bar variance averaged over the bars of a period (a UTC day by
default) and scaled to a day: sigma_daily = sqrt(mean per-bar variance × bars per day). Using the
mean rather than the sum keeps a partial day (first / last day of a file) unbiased; `complete`
flags the periods with every bar present. Crypto trades 24/7: annualised = daily × sqrt(365).

- close_to_close: sample variance (mean removed, ddof 1) of bar-to-bar log returns ln(C_i/C_{i-1}).
- realized_variance: mean of squared bar-to-bar log returns (no mean removed).
- bipower: (π/2)·mean |r_i||r_{i-1}| (Barndorff-Nielsen & Shephard 2004): robust to jumps.
- parkinson: ln(H/L)² / (4 ln 2) (Parkinson 1980).
- garman_klass: ½ ln(H/L)² − (2 ln 2 − 1) ln(C/O)² (Garman & Klass 1980, no opening jump).
- rogers_satchell: ln(H/C)ln(H/O) + ln(L/C)ln(L/O) (Rogers & Satchell 1991): drift-robust.
- yang_zhang: V_open + k·V_close + (1−k)·V_RS, k = 0.34 / (1.34 + (n+1)/(n−1)) over the period's
  n bars (Yang & Zhang 2000); V_open = sample variance of ln(O_i/C_{i-1}).

`window=w` pools w consecutive periods (daily bars with window=20 give the classic 20-day
estimators). Range estimators on bars built from a discrete path are biased low (the high and low
are only seen at the sampled points); tests/vol/test_realized.py measures this bias.

The registry's "realized" model (`VolatilityCalibrator("realized", estimator=...)`) averages the
chosen estimator over the complete periods: a closed form (`OptimizerReport.closed_form`) with a
Newey–West standard error (daily variances are autocorrelated).

Jump tests (`jump_test`): Barndorff-Nielsen–Shephard per period (ratio statistic with tri-power
quarticity, Huang & Tauchen 2005) and Lee–Mykland per bar (return / local bipower volatility from
the K bars strictly before it, Gumbel critical value), which flags jump *times*.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Mapping

import numpy as np
import pandas as pd
from scipy import special

from execal.models.core.jsonable import num as _num
from execal.models.core.params import DAYS_PER_YEAR, NS_PER_DAY, NS_PER_S, SECONDS_PER_DAY, Param  # noqa: F401
from execal.models.core.report import OptimizerReport
from execal.models.data.bars import (GAP_POLICIES, TRADE_BAR, BarSeries, Returns, _as_dataset, _freq_label,  # noqa: F401
                                     _time_ns, check_not_constant,
                                     _rows_text, bar_series, parse_freq, resample_bars, returns_from,
                                     returns_of_bars)
from execal.models.data.io import load
from execal.models.data.schema import DataError
from execal.models.vol.base import (MIN_HAC_WINDOW, VolatilityModel, VolatilityResult, annualize,  # noqa: F401
                                    data_info, default_hac_lags, few_observations, hac_covariance,
                                    prepare_bars, to_daily)

MIN_PERIODS = 10          # below this the standard error of the average is unreliable (warned)
LN2 = math.log(2.0)
MU1 = math.sqrt(2.0 / math.pi)   # E|Z|
MU43 = 2.0 ** (2.0 / 3.0) * math.gamma(7.0 / 6.0) / math.gamma(0.5)   # E|Z|^(4/3)

ESTIMATORS: dict[str, str] = {
    "close_to_close": "sample variance of bar-to-bar log returns (mean removed)",
    "realized_variance": "mean squared bar-to-bar log return",
    "bipower": "bipower variation (π/2)·|r_i||r_{i-1}|: robust to jumps",
    "parkinson": "high-low range: ln(H/L)²/(4 ln 2)",
    "garman_klass": "½ln(H/L)² − (2ln2−1)ln(C/O)²",
    "rogers_satchell": "ln(H/C)ln(H/O) + ln(L/C)ln(L/O): drift-robust range estimator",
    "yang_zhang": "open-jump + open-to-close + Rogers–Satchell mix (Yang–Zhang)",
}



# --- realised estimators -----------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class _BarTerms:
    """Per-bar ingredients of every estimator; NaN where a bar has no previous close."""
    r: np.ndarray          # ln(C_i / C_{i-1})
    o: np.ndarray          # ln(O_i / C_{i-1})
    c: np.ndarray          # ln(C_i / O_i)
    park: np.ndarray
    gk: np.ndarray
    rs: np.ndarray
    bp: np.ndarray         # |r_i||r_{i-1}|
    tq: np.ndarray         # |r_i r_{i-1} r_{i-2}|^(4/3)


def _bar_terms(b: BarSeries) -> _BarTerms:
    lo_, lh, ll, lc = np.log(b.open), np.log(b.high), np.log(b.low), np.log(b.close)
    u = lh - lo_
    d = ll - lo_
    c = lc - lo_
    hl = lh - ll
    park = hl * hl
    park *= 1.0 / (4.0 * LN2)
    gk = 0.5 * hl * hl - (2.0 * LN2 - 1.0) * c * c
    rs = u * (u - c) + d * (d - c)
    prev = np.empty_like(lc)
    prev[0] = np.nan
    prev[1:] = lc[:-1]
    prev[~b.contiguous] = np.nan
    r = lc - prev
    o = lo_ - prev
    a = np.abs(r)
    bp = np.full_like(a, np.nan)
    bp[1:] = a[1:] * a[:-1]
    a43 = a ** (4.0 / 3.0)
    tq = np.full_like(a, np.nan)
    tq[2:] = a43[2:] * a43[1:-1] * a43[:-2]
    return _BarTerms(r, o, c, park, gk, rs, bp, tq)


def _period_sums(period_idx: np.ndarray, n_periods: int, values: np.ndarray, mask=None):
    """(count, sum, sum of squares) of `values` per period over finite entries (and `mask`)."""
    ok = np.isfinite(values)
    if mask is not None:
        ok &= mask
    idx = period_idx[ok]
    v = values[ok]
    return (np.bincount(idx, minlength=n_periods).astype(np.float64),
            np.bincount(idx, v, minlength=n_periods),
            np.bincount(idx, v * v, minlength=n_periods))


def _pool(x: np.ndarray, window: int) -> np.ndarray:
    """Sum over the `window` periods ending at each period (a rolling sum via cumsum)."""
    if window == 1:
        return x
    cs = np.concatenate([[0.0], np.cumsum(x)])
    out = cs[window:] - cs[:-window]
    return np.concatenate([np.full(min(window - 1, x.shape[0]), np.nan), out])[: x.shape[0]]


def _sample_var(n, s, s2):
    with np.errstate(invalid="ignore", divide="ignore"):
        v = (s2 - s * s / n) / (n - 1)
    v[n < 2] = np.nan
    return np.maximum(v, 0.0)


def _mean(n, s):
    with np.errstate(invalid="ignore", divide="ignore"):
        m = s / n
    m[n < 1] = np.nan
    return m


@dataclass(frozen=True, eq=False)
class RealizedResult(VolatilityResult):
    """Realised volatility per period for every estimator, and the chosen estimator's average."""
    table: pd.DataFrame | None = None       # wide: one row per period, sigma_daily per estimator
    estimator: str = "yang_zhang"

    def tidy(self) -> pd.DataFrame:
        """Long frame for a figure: period, estimator, sigma_daily, sigma_annualized, n_bars, complete."""
        t = self.table
        long = t.melt(id_vars=["period", "n_bars", "complete"], value_vars=list(ESTIMATORS),
                      var_name="estimator", value_name="sigma_daily")
        long["sigma_annualized"] = long["sigma_daily"] * math.sqrt(DAYS_PER_YEAR)
        return long[["period", "estimator", "sigma_daily", "sigma_annualized", "n_bars", "complete"]]

    def stat_lines(self) -> list[str]:
        s = self.stats or {}
        by = s.get("by_estimator_sigma_daily") or {}
        lines = []
        if s.get("periods_used") is not None:
            lines.append(f"{self.estimator} averaged over {s['periods_used']} of {s['periods']} period(s) "
                         f"(HAC standard error, {s.get('hac_lags')} lags)")
        if by:
            lines.append("σ daily by estimator: " + ", ".join(
                f"{e} {100 * v:.3g} %" for e, v in by.items() if v is not None))
        j = s.get("jumps") or {}
        if j:
            lines.append(f"jumps: {j.get('jump_times', 0)} Lee–Mykland jump time(s) in {j.get('returns_tested', 0):,} "
                         f"returns; {j.get('bns_jump_periods', 0)} of {j.get('bns_periods_tested', 0)} periods "
                         f"with a BNS jump (α = {j.get('alpha')})")
        return lines

    def to_dict(self) -> dict:
        out = super().to_dict()
        t = self.table
        out["periods"] = [
            {"period": p.isoformat(), "n_bars": int(n), "complete": bool(c),
             **{e: _num(t[e].iat[i]) for e in ESTIMATORS}}
            for i, (p, n, c) in enumerate(zip(t["period"], t["n_bars"], t["complete"]))]
        return out


def realized_table(bars: BarSeries, freq: str = "1D", window: int = 1) -> pd.DataFrame:
    """Every estimator's daily sigma per `freq` period (pooling `window` periods), vectorised.

    Columns: period (UTC start), n_bars, n_returns, complete, and one sigma_daily column per
    estimator. Periods without data inside the span appear with n_bars 0 and NaN estimates.
    """
    if window < 1:
        raise ValueError("window must be >= 1")
    freq_ns = parse_freq(freq)
    if freq_ns < bars.bar_ns or freq_ns % bars.bar_ns:
        raise DataError(f"freq {_freq_label(freq_ns)} must be a multiple of the bar length "
                        f"{_freq_label(bars.bar_ns)}", file=bars.source)
    if bars.n == 0:
        raise DataError("no bars", file=bars.source)
    terms = _bar_terms(bars)
    p_all = bars.t_ns // freq_ns
    p0 = int(p_all[0])
    idx = (p_all - p0).astype(np.intp)
    n_p = int(idx[-1]) + 1
    per_day = bars.bars_per_day

    n_b = np.bincount(idx, minlength=n_p).astype(np.float64)
    park = np.bincount(idx, terms.park, minlength=n_p)
    gk = np.bincount(idx, terms.gk, minlength=n_p)
    rs_all = np.bincount(idx, terms.rs, minlength=n_p)
    nr, sr, sr2 = _period_sums(idx, n_p, terms.r)
    nbp, sbp, _ = _period_sums(idx, n_p, terms.bp)
    has_prev = np.isfinite(terms.o)
    no, so, so2 = _period_sums(idx, n_p, terms.o)
    _, sc, sc2 = _period_sums(idx, n_p, terms.c, has_prev)
    rs_prev = np.bincount(idx[has_prev], terms.rs[has_prev], minlength=n_p)

    pooled = {name: _pool(x, window) for name, x in dict(
        n_b=n_b, park=park, gk=gk, rs_all=rs_all, nr=nr, sr=sr, sr2=sr2, nbp=nbp, sbp=sbp,
        no=no, so=so, so2=so2, sc=sc, sc2=sc2, rs_prev=rs_prev).items()}
    P = pooled
    var = {
        "close_to_close": _sample_var(P["nr"], P["sr"], P["sr2"]),
        "realized_variance": _mean(P["nr"], P["sr2"]),
        "bipower": (math.pi / 2.0) * _mean(P["nbp"], P["sbp"]),
        "parkinson": _mean(P["n_b"], P["park"]),
        "garman_klass": _mean(P["n_b"], P["gk"]),
        "rogers_satchell": _mean(P["n_b"], P["rs_all"]),
    }
    n = P["no"]
    with np.errstate(invalid="ignore", divide="ignore"):
        k = 0.34 / (1.34 + (n + 1.0) / (n - 1.0))
    yz = _sample_var(n, P["so"], P["so2"]) + k * _sample_var(n, P["sc"], P["sc2"]) \
        + (1.0 - k) * _mean(n, P["rs_prev"])
    yz[n < 2] = np.nan
    var["yang_zhang"] = yz

    expected = freq_ns // bars.bar_ns * window
    out = {"period": pd.to_datetime((p0 + np.arange(n_p)) * freq_ns, unit="ns", utc=True),
           "n_bars": P["n_b"].astype(np.float64), "n_returns": P["nr"],
           "complete": P["n_b"] == expected}
    for name in ESTIMATORS:
        v = var[name] * per_day
        with np.errstate(invalid="ignore"):
            out[name] = np.where(v >= 0, np.sqrt(v), np.nan)
    frame = pd.DataFrame(out)
    frame["n_bars"] = frame["n_bars"].fillna(0).astype(np.int64)
    frame["n_returns"] = frame["n_returns"].fillna(0).astype(np.int64)
    return frame


def _realized(data, estimator: str, freq: str, window: int, symbol, bar, gaps):
    """(bars, notes, per-period table) for the realised estimators."""
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown estimator {estimator!r}; choose one of {', '.join(ESTIMATORS)}")
    bars, notes = prepare_bars(data, symbol=symbol, bar=bar, gaps=gaps)
    if bars.n < 2:
        raise DataError(f"too few observations: {bars.n} bar(s), a realised volatility needs at least 2",
                        file=bars.source)
    check_not_constant(bars)
    return bars, notes, realized_table(bars, freq, window)


def _periods_used(table: pd.DataFrame, estimator: str, warnings: list[str]) -> np.ndarray:
    use = table["complete"].to_numpy() & table[estimator].notna().to_numpy()
    if not use.any():
        use = table[estimator].notna().to_numpy()
        warnings.append("no complete period: the average uses partial periods")
    return use


def _realized_result(bars, notes, table, *, estimator, freq, window, params, std_errors, report,
                     status, warnings, stats) -> "RealizedResult":
    jt = jump_test(bars, freq=freq)
    stats = {**stats, "jumps": jt.summary()}
    return RealizedResult(
        model="realized", params=params, std_errors=std_errors, report=report, loglikelihood=None,
        n_obs=bars.n, status=status,
        units={"sigma_daily": "fraction per day", "sigma_annualized": "fraction per year (365 days)"},
        stats=stats,
        settings={"estimator": estimator, "freq": freq, "window": window,
                  "bar": _freq_label(bars.bar_ns) if bars.from_trades else None},
        warnings=tuple(dict.fromkeys(notes + warnings)),
        data=data_info(bars.source, bars.symbol, bars.t_ns, bars.bar_ns),
        validation=bars.report, table=table, estimator=estimator)


def _fit_realized(data, *, estimator: str = "yang_zhang", freq: str = "1D", window: int = 1,
                  symbol: str | None = None, bar: str | None = None, gaps: str = "error") -> "RealizedResult":
    """Realised volatility of bars or trades: every estimator per period, the chosen one averaged.

    `params["sigma_daily"]` = sqrt(mean daily variance of `estimator` over the complete periods, or
    all periods when none is complete). Its standard error is the Newey–West (HAC, Bartlett) standard
    error of that mean, by the delta method: daily variances are strongly autocorrelated (volatility
    clusters), so the periods are not treated as independent (lags: `base.default_hac_lags`, at least
    the pooling window and 22 periods).
    """
    bars, notes, table = _realized(data, estimator, freq, window, symbol, bar, gaps)
    warnings: list[str] = []
    use = _periods_used(table, estimator, warnings)
    if not use.any():
        raise DataError(f"too few observations: no period has enough bars for {estimator}",
                        file=bars.source)
    var = table[estimator].to_numpy()[use] ** 2
    mean_var = float(var.mean())
    sigma = math.sqrt(mean_var)
    m = var.shape[0]
    lags = default_hac_lags(m, max(MIN_HAC_WINDOW, window))
    if m > 1:
        cov = hac_covariance(np.ones((m, 1)), var - mean_var, lags)
        se_var = math.sqrt(max(float(cov[0, 0]), 0.0))
    else:
        se_var = float("nan")
    se_sigma = se_var / (2 * sigma) if sigma > 0 else float("nan")
    warnings += few_observations(m, MIN_PERIODS, "a realised volatility average",
                                 "the HAC standard error of a mean of so few periods is unreliable")
    params = {"sigma_daily": sigma, "sigma_annualized": sigma * math.sqrt(DAYS_PER_YEAR)}
    std_errors = {"sigma_daily": se_sigma, "sigma_annualized": se_sigma * math.sqrt(DAYS_PER_YEAR)}
    freq_ns = parse_freq(freq)
    stats = {"estimator": estimator, "periods_used": int(m), "periods": int(len(table)),
             "hac_lags": lags,
             "by_estimator_sigma_daily": {
                 e: _num(math.sqrt(np.nanmean(table[e].to_numpy()[use] ** 2)))
                 if np.isfinite(table[e].to_numpy()[use]).any() else None for e in ESTIMATORS}}
    report = OptimizerReport.closed_form(
        f"{estimator} over {m} {_freq_label(freq_ns)} period(s); HAC (Newey-West, {lags} lags) standard error",
        estimator=estimator)
    return _realized_result(bars, notes, table, estimator=estimator, freq=freq, window=window, params=params,
                            std_errors=std_errors, report=report, status="closed_form", warnings=warnings,
                            stats=stats)


def _fix_realized(params: Mapping[str, float], data, *, estimator: str = "yang_zhang", freq: str = "1D",
                  window: int = 1, symbol: str | None = None, bar: str | None = None,
                  gaps: str = "error") -> "RealizedResult":
    """A RealizedResult at a hand-set `sigma_daily` (or `sigma_annualized`), with the data's table."""
    if "sigma_daily" in params:
        sigma = float(params["sigma_daily"])
    elif "sigma_annualized" in params:
        sigma = float(params["sigma_annualized"]) / math.sqrt(DAYS_PER_YEAR)
    else:
        raise ValueError("realised volatility takes 'sigma_daily' (or 'sigma_annualized')")
    if not sigma >= 0:
        raise ValueError(f"sigma_daily must be >= 0, got {sigma!r}")
    bars, notes, table = _realized(data, estimator, freq, window, symbol, bar, gaps)
    fixed = {"sigma_daily": sigma, "sigma_annualized": sigma * math.sqrt(DAYS_PER_YEAR)}
    return _realized_result(bars, notes, table, estimator=estimator, freq=freq, window=window, params=fixed,
                            std_errors={k: float("nan") for k in fixed}, report=OptimizerReport.fixed(),
                            status="fixed", warnings=[], stats={"estimator": estimator})


# --- jump tests --------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class JumpTestResult:
    """Jump times (Lee–Mykland) and jump periods (Barndorff-Nielsen–Shephard)."""
    times: pd.DataFrame       # flagged bars: timestamp, return, statistic, threshold, sigma_local
    periods: pd.DataFrame     # per period: period, n_returns, rv, bv, tq, z, p_value, jump
    alpha: float
    window: int
    n_tested: int

    def summary(self, max_times: int = 20) -> dict:
        t = self.times
        return {"alpha": self.alpha, "lee_mykland_window": self.window, "returns_tested": self.n_tested,
                "jump_times": int(len(t)),
                "first_jump_times": [ts.isoformat() for ts in t["timestamp"].iloc[:max_times]],
                "bns_periods_tested": int(self.periods["z"].notna().sum()),
                "bns_jump_periods": int(self.periods["jump"].sum())}


def lee_mykland_window(bars_per_day: float) -> int:
    """K = sqrt(bars per year), at least 10: Lee & Mykland's rule (K = sqrt(252·n) on 252 days;
    365 days here)."""
    return int(max(10, math.ceil(math.sqrt(DAYS_PER_YEAR * bars_per_day))))


def jump_test(data, *, alpha: float = 0.01, freq: str = "1D", window: int | None = None,
              symbol: str | None = None, bar: str | None = None, gaps: str = "error") -> JumpTestResult:
    """Flag jumps: Lee–Mykland per bar return and Barndorff-Nielsen–Shephard per period.

    Lee–Mykland: L_i = r_i / σ̂_i with σ̂_i² = mean of |r_j||r_{j-1}| over the `window` (K) returns
    strictly before i (no look-ahead); a jump when (|L_i| − C_n)/S_n > −ln(−ln(1 − alpha)), n = the
    number of returns tested (the family-wise level over the whole sample).
    BNS: z = ((RV − BV)/RV) / sqrt(((π/2)² + π − 5)·max(1, TQ/BV²)/n) per period; a jump period
    when 1 − Φ(z) < alpha.
    """
    bars = data if isinstance(data, BarSeries) else bar_series(data, symbol=symbol, bar=bar, gaps=gaps)
    terms = _bar_terms(bars)
    K = window or lee_mykland_window(bars.bars_per_day)
    # local bipower variance from products strictly before bar i: positions i-K+2 .. i-1
    bp = terms.bp
    ok = np.isfinite(bp)
    cs = np.concatenate([[0.0], np.cumsum(np.where(ok, bp, 0.0))])
    cn = np.concatenate([[0], np.cumsum(ok)])
    i = np.arange(bars.n)
    lo = np.maximum(i - K + 2, 0)
    cnt = cn[i] - cn[lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        local_var = (cs[i] - cs[lo]) / cnt
    enough = (cnt >= (K - 2) / 2) & (i >= K - 1)
    sigma_local = np.sqrt(local_var)
    testable = enough & np.isfinite(terms.r) & (sigma_local > 0)
    n = int(testable.sum())
    L = np.full(bars.n, np.nan)
    L[testable] = terms.r[testable] / sigma_local[testable]
    if n >= 2:
        log_n = math.log(n)
        cst = math.sqrt(2 * log_n) / MU1 - (math.log(math.pi) + math.log(log_n)) / (2 * MU1 * math.sqrt(2 * log_n))
        s_n = 1.0 / (MU1 * math.sqrt(2 * log_n))
        beta = -math.log(-math.log(1 - alpha))
        stat = (np.abs(L) - cst) / s_n
        flag = testable & (stat > beta)
    else:
        beta, stat, flag = float("nan"), np.full(bars.n, np.nan), np.zeros(bars.n, bool)
    times = pd.DataFrame({
        "timestamp": pd.to_datetime(bars.t_ns[flag], unit="ns", utc=True),
        "return": terms.r[flag], "statistic": stat[flag], "threshold": beta,
        "sigma_local": sigma_local[flag]})

    freq_ns = parse_freq(freq)
    p = bars.t_ns // freq_ns
    p0 = int(p[0]) if bars.n else 0
    idx = (p - p0).astype(np.intp)
    n_p = int(idx[-1]) + 1 if bars.n else 0
    nr, _, rv = _period_sums(idx, n_p, terms.r)
    nbp, sbp, _ = _period_sums(idx, n_p, terms.bp)
    ntq, stq, _ = _period_sums(idx, n_p, terms.tq)
    with np.errstate(invalid="ignore", divide="ignore"):
        bv = (math.pi / 2) * sbp * nr / np.maximum(nr - 1, 1)
        tq = nr * MU43 ** -3 * nr / np.maximum(nr - 2, 1) * stq
        theta = (math.pi / 2) ** 2 + math.pi - 5
        z = ((rv - bv) / rv) / np.sqrt(theta * np.maximum(1.0, tq / (bv * bv)) / nr)
    z[(nr < 10) | ~np.isfinite(z)] = np.nan
    pval = special.ndtr(-z)
    periods = pd.DataFrame({
        "period": pd.to_datetime((p0 + np.arange(n_p)) * freq_ns, unit="ns", utc=True),
        "n_returns": nr.astype(np.int64), "rv": rv, "bv": bv, "tq": tq, "z": z, "p_value": pval,
        "jump": np.nan_to_num(pval, nan=1.0) < alpha})
    return JumpTestResult(times, periods, alpha, K, n)


# --- fills: volatility without look-ahead ------------------------------------------------------

def _fill_days(fills: pd.DataFrame) -> np.ndarray:
    if "timestamp" not in fills.columns:
        raise DataError("missing column 'timestamp'", file="fills", column="timestamp")
    t = _time_ns(fills, "fills", np.arange(1, len(fills) + 1))
    return t // NS_PER_DAY


def fill_volatility(fills: pd.DataFrame, bars, estimator: str = "yang_zhang", window_days: int = 20,
                    *, overwrite: bool = False, gaps: str = "skip",
                    bar: str | None = None) -> tuple[pd.DataFrame, dict]:
    """Fill the `volatility` column (daily sigma, fraction) of a fills frame from `estimator`.

    For a fill arriving on UTC day d: sigma = sqrt(mean of the daily variances of days
    d−window_days .. d−1), each of which must be complete (all its bars present): only data
    strictly before the arrival day, so no look-ahead. Bars are matched by symbol when both frames
    carry one. Only NaN or absent values are filled unless `overwrite`. Returns (frame, report).
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown estimator {estimator!r}; choose one of {', '.join(ESTIMATORS)}")
    if window_days < 1:
        raise ValueError("window_days must be >= 1")
    if isinstance(bars, (str, os.PathLike)):
        bars = load(bars)            # once, not once per symbol
    frame, _, _, _ = _as_dataset(bars, "bars")
    day = _fill_days(fills)
    n = len(fills)
    new = np.full(n, np.nan)
    fill_sym = fills["symbol"].astype("string").to_numpy(object, na_value=None) \
        if "symbol" in fills.columns else None
    if fill_sym is not None and "symbol" in frame.columns:
        groups = [(s, np.flatnonzero(fill_sym == s)) for s in sorted(set(fill_sym) - {None})]
        available = set(map(str, frame["symbol"].astype("string").dropna().unique()))
        groups = [(s, rows) for s, rows in groups if s in available]
    else:
        groups = [(None, np.arange(n))]
    for sym, rows in groups:
        series = bar_series(bars, symbol=sym, bar=bar, gaps=gaps)
        table = realized_table(series, "1D", 1)
        v = table[estimator].to_numpy() ** 2
        ok = table["complete"].to_numpy() & np.isfinite(v)
        d0 = int(table["period"].iloc[0].value // NS_PER_DAY)
        cs = np.concatenate([[0.0], np.cumsum(np.where(ok, v, 0.0))])
        cn = np.concatenate([[0], np.cumsum(ok)])
        # window = days [d - window_days, d - 1] as table positions [a, b)
        b = np.clip(day[rows] - d0, 0, len(table))
        a = np.clip(day[rows] - d0 - window_days, 0, len(table))
        full = (cn[b] - cn[a] == window_days) & (day[rows] - d0 - window_days >= 0)
        with np.errstate(invalid="ignore", divide="ignore"):
            sigma = np.sqrt((cs[b] - cs[a]) / window_days)
        new[rows[full]] = sigma[full]
    current = pd.to_numeric(fills["volatility"], errors="coerce").to_numpy(np.float64, na_value=np.nan) \
        if "volatility" in fills.columns else np.full(n, np.nan)
    need = np.ones(n, bool) if overwrite else np.isnan(current)
    take = need & np.isfinite(new)
    out = fills.copy()
    out["volatility"] = np.where(take, new, current)
    report = {"filled": int(take.sum()), "missing_after": int(np.isnan(out["volatility"].to_numpy()).sum()),
              "estimator": estimator, "window_days": window_days,
              "note": "daily sigma from complete UTC days strictly before each fill's arrival day"}
    return out, report


# --- registry entry ------------------------------------------------------------------------------

REALIZED_MODEL = VolatilityModel(
    name="realized", label="Realised volatility",
    formula="sigma_daily = sqrt(mean per-bar variance estimate × bars per day)",
    params=(Param("sigma_daily", 0.03, 0.0, 10.0, "fraction/day", "average daily volatility"),
            Param("sigma_annualized", 0.57, 0.0, 200.0, "fraction/year", "sigma_daily × sqrt(365)")),
    options={"estimator": tuple(ESTIMATORS), "freq": "1D", "window": 1, "gaps": GAP_POLICIES},
    reference="Parkinson 1980; Garman & Klass 1980; Rogers & Satchell 1991; Yang & Zhang 2000; "
              "Barndorff-Nielsen & Shephard 2004, 2006; Lee & Mykland 2008",
    fit_fn=_fit_realized, fix_fn=_fix_realized,
    option_help={"estimator": "realised estimator reported in params (every estimator is in the table)",
                 "freq": "the period each estimate covers (a multiple of the bar length)",
                 "window": "periods pooled per estimate"})


# --- volatility from bars --------------------------------------------------------------------

def volatility_from_bars(fills: pd.DataFrame, bars, estimator: str = "yang_zhang",
                         window_days: int = 20) -> tuple[pd.DataFrame, dict]:
    """Replace the fills' `volatility` with a realised estimator's daily sigma from complete UTC
    days strictly before each arrival (`realized.fill_volatility`, no look-ahead). Fills without
    `window_days` of history get NaN, so the calibration drops and counts them instead of mixing
    in the file's own values. Returns (frame, provenance entry)."""
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown volatility estimator {estimator!r} (available: {', '.join(ESTIMATORS)})")
    frame, source, _, _ = _as_dataset(bars, "bars")
    blank = fills.assign(volatility=np.nan)
    out, report = fill_volatility(blank, bars, estimator, int(window_days), overwrite=False)
    entry = {"estimator": estimator, "window_days": int(window_days), "bars": source,
             "bars_sha256": getattr(bars, "sha256", None), "filled": report["filled"],
             "without_estimate": report["missing_after"], "note": report["note"]
             + "; fills without a full window have no volatility and are dropped by the calibration"}
    return out, entry
