"""Tweak and Diagnostics server time on 1,000,000 fills, and the size of what goes to the browser.

Rows (each against a baseline measured on the same fitted result in the same run):
- one tweak update (floor 150 ms): what the Tweak panel's move callback does for a slider move —
  `Calibrator.fix` on the result's cached `Features`, in- and out-of-sample metrics with Δ against
  the fit, the cost-vs-participation curves, the Patch of predicted vs actual (≤ 20,000 drawn orders)
  — plus Dash's JSON encoding of the response (`plotly.io.json.to_json_plotly`, what Dash sends);
  * baseline A: the same update without cached features (`Calibrator.fix` on the frame: features
    rebuilt from the columns on every move);
  * baseline B: the same update without downsampling (the whole predicted-vs-actual figure with every
    order, hover texts included, rebuilt and sent on every move).
  The note gives the JSON size of the response (limit 5 MB) and of baseline B's.
- preparing the tweak state once per result (the first move after a fit), against nothing cheaper:
  baseline = the same preparation plus one update, for scale.
- the Diagnostics panel's first render of a result (every figure and table, JSON-encoded) against the
  same render without downsampling; the note gives both response sizes.
"""
from __future__ import annotations

import time
import warnings

import numpy as np
from plotly.io.json import to_json_plotly

from bench.common import best_of, row
from execal.components import diagnostics_panel as D
from execal.components import impact_figures as F
from execal.components import tweak_panel as T
from execal.models.impact.fit import Calibrator
from execal.models.impact.simulate import simulate_fills

FLOOR_S = 0.15
MAX_RESPONSE_BYTES = 5 * 2**20


class _Results:
    """The two ResultStore methods the callbacks use, in memory (no disk in the timing)."""

    def __init__(self, key, result):
        self.key, self.result = key, result

    def get(self, key):
        return self.result if key == self.key else None


def _mb(n: int) -> str:
    return f"{n / 2**20:.2f} MB"


def run(quick: bool = False) -> list[dict]:
    n = 100_000 if quick else 1_000_000
    fills, _ = simulate_fills(n, params={"Y": 0.7, "delta": 0.5}, seed=7, outlier_share=0.01)
    cal = Calibrator(test_fraction=0.2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        result = cal.fit(fills)
        fit_s = time.perf_counter() - t0
    key = "result:" + "0" * 32
    results = _Results(key, result)
    base = T.controls_outputs(results, {"key": key}, None, None)["base"]
    order = base["order"]
    rows = []

    # --- preparing the state (once per result and process) -------------------------------------
    T._states.clear()
    t0 = time.perf_counter()
    state = T.tweak_state(key, T.POOLED, result)
    prep_s = time.perf_counter() - t0

    # --- one slider move ---------------------------------------------------------------------------
    values = iter(np.linspace(0.45, 0.55, 1000))

    def update():
        delta = float(next(values))
        sliders = {**base["fitted"], "delta": delta}
        resp = T.tweak_response(results, base, None, {"type": T.SLIDER, "param": "delta"}, sliders,
                                base["fitted"], order)
        return to_json_plotly([resp.sliders, resp.boxes, resp.params, *resp.outputs.values()])

    update()
    secs, body = best_of(update, repeat=7)
    size = len(body.encode())

    # baseline A: no cached features — the fix rebuilds them from the frame on every move
    def update_from_frame():
        fixed = cal.fix({**base["fitted"], "delta": float(next(values))}, fills)
        metrics = state.metrics(np.asarray(fixed.predicted_bps))
        series = F.participation_series(state.view, state.bins, {"fitted": state.view.predicted_bps,
                                                                 "tweaked": fixed.predicted_bps})
        patch = F.predicted_vs_actual_update(np.asarray(fixed.predicted_bps), state.plan)
        return to_json_plotly([metrics, F.cost_vs_participation_figure(series), patch])
    base_a, _ = best_of(update_from_frame, repeat=3)

    # baseline B: no downsampling — the whole figure with every order, rebuilt and sent per move
    full_plan = F.scatter_plan(state.view, None)

    def update_full_figure():
        up = state.update({**base["fitted"], "delta": float(next(values))})
        view = state.view.with_predicted(up["predicted"])
        figs = [F.predicted_vs_actual_figure(view, plan=full_plan),
                F.cost_vs_participation_figure(up["series"], curve_styles=T.FIXED_STYLES)]
        return to_json_plotly([F.delta_rows(state.fitted_metrics, up["metrics"]), *figs])
    base_b, body_b = best_of(update_full_figure, repeat=1)
    size_b = len(body_b.encode())

    ok = "OK" if size <= MAX_RESPONSE_BYTES else "EXCEEDS 5 MB"
    rows.append(row(f"tweak update (fix on cached Features + metrics + curve + patch), {n:,} fills", secs,
                    floor_s=FLOOR_S, baseline="fix on the frame (features rebuilt per move)", baseline_s=base_a,
                    note=f"response {_mb(size)} ({ok}); {state.plan.drawn:,} of {n:,} orders drawn; "
                         f"fit took {fit_s:.2f} s"))
    rows.append(row(f"tweak update vs no downsampling, {n:,} fills", secs, floor_s=FLOOR_S,
                    baseline="whole predicted-vs-actual figure of every order per move", baseline_s=base_b,
                    note=f"response {_mb(size)} vs {_mb(size_b)} without downsampling "
                         f"({'over' if size_b > MAX_RESPONSE_BYTES else 'under'} the 5 MB limit)"))
    del body_b, full_plan

    # --- tweak state preparation -------------------------------------------------------------------
    rows.append(row(f"tweak state prepared once per result, {n:,} fills", prep_s,
                    baseline="preparation + one update", baseline_s=prep_s + secs,
                    note="downsample index, hover texts, bins, fitted curve and metrics, fit objective"))

    # --- diagnostics first render ------------------------------------------------------------------
    def render(max_points):
        out = D.build_diagnostics(result, max_points=max_points)
        return to_json_plotly([out[k] for k in D.OUTPUT_PROPS])
    diag_s, diag_body = best_of(lambda: render(F.MAX_SCATTER_POINTS), repeat=2)
    diag_size = len(diag_body.encode())
    full_s, full_body = best_of(lambda: render(n), repeat=1)
    full_size = len(full_body.encode())
    del full_body
    ok = "OK" if diag_size <= MAX_RESPONSE_BYTES else "EXCEEDS 5 MB"
    rows.append(row(f"diagnostics first render (all figures + tables), {n:,} fills", diag_s,
                    baseline="same without downsampling", baseline_s=full_s,
                    note=f"response {_mb(diag_size)} ({ok}) vs {_mb(full_size)}; cached per result afterwards"))
    return rows


if __name__ == "__main__":
    for r in run():
        print(r)
