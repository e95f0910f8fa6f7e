"""Volatility & regimes panel, server side, on 1,000,000 one-minute bars (two years; 100,000 with quick=True).

Setup: a GBM of 1-minute bars (bench_vol's generator) is put in the session store as an upload would be.
The panel's own job (`vol_panel.run_fit`) validates the bars, runs the jump tests and fits the realised
estimators and GARCH(1,1). The Markov regimes and Merton's jump-diffusion are fitted on the first 100,000
returns (a Markov fit on 1M returns takes minutes on this machine: bench_vol times the fits) and their
probabilities are carried to every return at those parameters (`MarkovResult.filter`), so the panel draws
1M-point regime paths, as it would after a full fit; they are stored under the view's keys before the job
runs, so the job skips them as cached.

Rows (each against a baseline on the same data in the same run):
- the fit job (bars, jump tests, realised, GARCH) vs the same model calls made directly (the panel's
  overhead: validation of the filtered series, storing the results);
- pressing Fit again (every fit cached: a lookup) vs that job;
- the first draw of the status, price + regime shading + jumps, probabilities and tables; a redraw after
  ticking an estimator; a redraw after changing the forecast horizon: server time, floor 150 ms for the
  redraws (the issue's budget for a change to update every view), vs building the same figures with every
  point (no downsampling) and serialising them;
- the size of each callback's response (limit 5 MB: `meets floor` is the size test here), vs the same
  figures with every point.
"""
from __future__ import annotations

import dataclasses
import math
import tempfile
import time

import diskcache
import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.io.json import to_json_plotly

from bench.bench_vol import _bars
from bench.common import best_of, row
from execal.components import results as R
from execal.components import store as S
from execal.components import vol_panel as P
from execal.models.vol.base import VolatilityCalibrator
from execal.models.vol.realized import bar_series, jump_test, returns_of_bars
from execal.models.data.schema import Dataset, ValidationReport

LIMIT_BYTES = 5 * 2**20
REDRAW_FLOOR_S = 0.15
PREFIT_RETURNS = 100_000


def _nbytes(outputs) -> int:
    """Bytes of a callback response carrying `outputs` (Dash serialises with plotly's JSON encoder)."""
    return len(to_json_plotly({"response": outputs}))


def _naive_price(series, markov) -> go.Figure:
    """Every bar, one shaded rectangle per regime run, every probability: no downsampling."""
    fig = go.Figure(go.Scatter(x=pd.to_datetime(series.t_ns, unit="ns", utc=True), y=series.close, mode="lines"))
    path = markov.regime_path()
    s = path["regime"].to_numpy()
    starts = np.flatnonzero(np.concatenate([[True], s[1:] != s[:-1]]))
    ts = path["timestamp"]
    for a, b in zip(starts, np.concatenate([starts[1:], [len(s)]]) - 1):
        fig.add_vrect(x0=ts.iloc[a], x1=ts.iloc[b], fillcolor="red" if s[a] else "green", opacity=0.15, line_width=0)
    return fig


def _naive_probabilities(markov) -> go.Figure:
    pf = markov.probabilities_frame()
    fig = go.Figure()
    for j in range(markov.k_regimes):
        part = pf[pf["regime"] == j]
        fig.add_trace(go.Scatter(x=part["timestamp"], y=part["smoothed"], stackgroup="one"))
    return fig


def _naive_realized(realized, estimators) -> go.Figure:
    tidy = realized.tidy()
    fig = go.Figure()
    for e in estimators:
        part = tidy[tidy["estimator"] == e]
        fig.add_trace(go.Scatter(x=part["period"], y=100 * part["sigma_annualized"], mode="lines+markers"))
    return fig


def _naive_garch(garch, horizon) -> go.Figure:
    vf = garch.volatility_frame()
    fc = garch.forecast(horizon)
    fig = go.Figure(go.Scatter(x=vf["timestamp"], y=100 * vf["sigma_annualized"], mode="lines"))
    fig.add_trace(go.Scatter(x=fc["timestamp"], y=100 * fc["sigma_annualized"], mode="lines+markers"))
    return fig


def _prefit(returns, m: int):
    """Markov and Merton fitted on the first `m` returns, their paths carried to all returns."""
    head = dataclasses.replace(returns, values=returns.values[:m], t_ns=returns.t_ns[:m],
                               rows=None if returns.rows is None else returns.rows[:m])
    small = VolatilityCalibrator("markov").fit(head)
    _, filtered = small.filter(returns.values)
    markov = dataclasses.replace(small, returns=returns, filtered=filtered, smoothed=filtered, n_obs=returns.n)
    merton = dataclasses.replace(VolatilityCalibrator("merton").fit(head), returns=returns, n_obs=returns.n)
    return markov, merton


def run(quick: bool = False) -> list[dict]:
    n = 100_000 if quick else 1_000_000
    rows: list[dict] = []
    frame = _bars(n)
    with tempfile.TemporaryDirectory() as tmp, diskcache.Cache(tmp) as cache:
        st, rs = S.SessionStore(cache), R.ResultStore(cache)
        dataset = Dataset("bars", frame, "bench_bars.csv", "b" * 64, ValidationReport(rows_read=n, rows_kept=n))
        key = st.put_dataset(None, dataset)
        settings = P.build_settings(symbol=None, bar="data", period="1D", garch="garch", dist="normal", k_regimes=2,
                                    switching_mean=False, merton=True)
        plan = P.plan_fit(st, rs, None, session_id=None, source=key, filters={}, settings=settings)
        job = plan["job"]
        bars = bar_series(st.get_dataset(key))
        returns = returns_of_bars(bars)
        markov, merton = _prefit(returns, 20_000 if quick else PREFIT_RETURNS)

        def job_once():
            for name in ("series", "realized", "garch"):
                rs.cache.delete(job["keys"][name])
            fresh = R.ResultStore(cache)      # no per-process copies of the deleted fits
            fresh.put(job["keys"]["markov"], markov)
            fresh.put(job["keys"]["merton"], merton)
            return P.run_fit(st, fresh, job)

        def direct():
            b = bar_series(dataset)
            jump_test(b)
            VolatilityCalibrator("realized", estimator="yang_zhang", freq="1D", gaps="skip").fit(dataset)
            g = VolatilityCalibrator("garch").fit(returns_of_bars(b))
            _ = dict(g.std_errors)

        job_s, out = best_of(job_once, repeat=1 if quick else 2)
        view = out["view"]
        assert view["errors"] == {}, view["errors"]
        direct_s, _ = best_of(direct, repeat=1 if quick else 2)
        rows.append(row(f"vol panel: fit job, {n:,} bars (bars, jump tests, realised, GARCH)", job_s,
                        baseline="the same model calls, direct", baseline_s=direct_s,
                        note=f"Markov / Merton prefit on {20_000 if quick else PREFIT_RETURNS:,} returns and cached "
                             "(see module docstring)"))
        repeat_s, again = best_of(lambda: P.plan_fit(st, rs, None, session_id=None, source=key, filters={},
                                                     settings=settings), repeat=5)
        assert again["job"] is None
        rows.append(row(f"vol panel: Fit again, all cached ({n:,} bars)", repeat_s,
                        baseline="the fit job", baseline_s=job_s, note="a lookup per model in the ResultStore"))

        estimators = ["close_to_close", "parkinson", "garman_klass", "yang_zhang"]
        fits = P._fits(rs, view)

        def first_draw():
            P._prepared.clear()
            return P.main_outputs(rs, view)

        def naive_main():
            figs = [_naive_price(fits["series"], markov), _naive_probabilities(markov)]
            return _nbytes(figs)

        main_s, main = best_of(first_draw, repeat=3)
        naive_main_s, naive_main_bytes = best_of(naive_main, repeat=1)
        main_bytes = _nbytes(list(main.values()))
        rows.append(row(f"vol panel: first draw, status + price/regimes/jumps + probabilities + tables ({n:,} bars)",
                        main_s, baseline="every point and one shape per regime run, serialised",
                        baseline_s=naive_main_s,
                        note=f"response {main_bytes / 2**20:.2f} MB vs {naive_main_bytes / 2**20:.1f} MB"))
        real_s, real = best_of(lambda: P.realized_outputs(rs, view, estimators[:3]), repeat=5)
        naive_real_s, naive_real_bytes = best_of(lambda: _nbytes([_naive_realized(fits["realized"], estimators[:3])]),
                                                 repeat=3)
        real_bytes = _nbytes(list(real.values()))
        rows.append(row(f"vol panel: redraw after ticking an estimator ({n:,} bars)", real_s, floor_s=REDRAW_FLOOR_S,
                        baseline="the same figure with every point, serialised", baseline_s=naive_real_s,
                        note=f"response {real_bytes / 2**10:.0f} kB vs {naive_real_bytes / 2**10:.0f} kB "
                             f"({math.ceil(n / 1440)} daily periods: nothing to thin)"))
        garch_s, garch = best_of(lambda: P.garch_outputs(rs, view, 48, estimators), repeat=5)
        naive_garch_s, naive_garch_bytes = best_of(lambda: _nbytes([_naive_garch(fits["garch"], 48)]), repeat=1)
        garch_bytes = _nbytes(list(garch.values()))
        rows.append(row(f"vol panel: redraw after changing the forecast horizon ({n:,} bars)", garch_s,
                        floor_s=REDRAW_FLOOR_S, baseline="the same figure with every point, serialised",
                        baseline_s=naive_garch_s,
                        note=f"response {garch_bytes / 2**20:.2f} MB vs {naive_garch_bytes / 2**20:.1f} MB"))
        for name, size, seconds, naive_bytes in (("first draw (6 outputs)", main_bytes, main_s, naive_main_bytes),
                                                 ("realised estimators", real_bytes, real_s, naive_real_bytes),
                                                 ("GARCH", garch_bytes, garch_s, naive_garch_bytes)):
            r = row(f"vol panel response size: {name} ({n:,} bars)", seconds,
                    baseline="every point (bytes in note)", baseline_s=None,
                    note=f"{size / 2**20:.3f} MB (limit 5 MB); every point: {naive_bytes / 2**20:.1f} MB")
            r["meets_floor"] = size <= LIMIT_BYTES   # the floor here is bytes, see note
            rows.append(r)
    return rows


if __name__ == "__main__":
    t0 = time.perf_counter()
    for r in run(quick=True):
        print(r)
    print(f"{time.perf_counter() - t0:.1f} s")
