"""Vol surface panel benchmarks: what a press of "Fit surface" and the redraw cost on the server.

Rows (each against a baseline measured on the same data in the same run):
- the fit callback's work on a cache miss (`surface_panel.fit_view`: resolve the chain, prepare it, fit,
  pickle the result into the app's diskcache, remember the session's view) for raw SVI (floor 0.1 s) and SSVI
  (floor 0.3 s), plain and with the no-arbitrage fit, on the bundled sample chain (572 rows, 8 expiries)
  and on a 12 expiries × 100 strikes chain,
  against the bare core (`prepare_chain` + `SurfaceCalibrator.fit`, nothing stored): the panel's overhead;
- the same press again (cache hit: a repeat, or a page reload) against the fit;
- everything drawn for a new surface (status, tables, smiles, 3D surface, term structure, residuals) against
  the figure-ready frames the result itself provides (`smile_frame` + `curve_frame`): the cost of the
  figures; the note gives the JSON size of the render and smiles responses (limit 5 MB).
"""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.io as pio

from bench.common import best_of, row
from execal.components import results as results_mod
from execal.components import store as store_mod
from execal.components import surface_panel as sp
from execal.models.surface.options import prepare_chain
from execal.models.data.schema import Dataset, ValidationReport
from execal.models.surface.svi import SurfaceCalibrator, ssvi_total_variance

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_DIR = ROOT / "sample_data"
SSVI_TRUTH = {"rho": -0.2, "eta": 1.2, "gamma": 0.45}
MAX_RESPONSE_BYTES = 5 * 2**20


def _big_chain_frame(n_exp: int = 12, n_k: int = 100, seed: int = 5) -> pd.DataFrame:
    """A chain frame on the sample's SSVI surface (+0.2 vol pt noise, ±0.5 vol pt bid/ask), IVs given."""
    rng = np.random.default_rng(seed)
    t0 = pd.Timestamp("2024-01-01T00:00:00Z")
    parts = []
    for T in np.geomspace(1 / 365, 2.0, n_exp):
        atm = 0.5 + 0.1 * (1 - np.exp(-T / 0.25))
        k = np.linspace(-3.5, 3.5, n_k) * atm * np.sqrt(T)
        iv = np.sqrt(ssvi_total_variance(k, atm * atm * T, **SSVI_TRUTH) / T) + rng.normal(0, 0.002, n_k)
        parts.append(pd.DataFrame({
            "timestamp": t0, "symbol": [f"BTC-X{int(T * 1e4)}-{i}" for i in range(n_k)],
            "expiry": t0 + pd.to_timedelta(round(T * 365 * 86400), unit="s"), "strike": 100.0 * np.exp(k),
            "option_type": np.where(k >= 0, "call", "put"), "futures_price": 100.0,
            "bid_iv": iv - 0.005, "ask_iv": iv + 0.005, "mark_iv": iv}))
    return pd.concat(parts, ignore_index=True)


def _stores(tmp: Path):
    cache = store_mod.open_cache(tmp / "cache")
    return store_mod.SessionStore(cache), results_mod.ResultStore(cache)


def _forget(rs: results_mod.ResultStore, key: str) -> None:
    """Make the next press a cache miss again (disk and both process memories)."""
    rs.cache.delete(key)
    rs.cache.delete(key + ":meta")
    rs._memory.pop(key, None)
    sp._results.clear()
    sp._prepared.clear()


def _bench_chain(rows: list, label: str, st, rs, session: str, source: str, dataset: Dataset, quick: bool) -> None:
    repeat = 3 if quick else 7
    for model, no_arb, floor in (("svi", False, 0.1), ("ssvi", False, 0.3), ("svi", True, 0.1), ("ssvi", True, 0.3)):
        settings = sp.build_settings(model=model, weights="vega", no_arbitrage=no_arb,
                                     underlying=sp.underlyings_of(dataset.frame)[0])
        name = model.upper() + (" no-arbitrage" if no_arb else "")
        view, _ = sp.fit_view(st, rs, SAMPLE_DIR, session_id=session, source=source, settings=settings,
                              filters={}, active=None)                                  # warm-up

        def press():
            _forget(rs, view["key"])
            return sp.fit_view(st, rs, SAMPLE_DIR, session_id=session, source=source, settings=settings,
                               filters={}, active=None)

        secs, (view, note) = best_of(press, repeat=repeat)
        calibrator = SurfaceCalibrator(model, "vega", no_arb)
        base_s, result = best_of(lambda: calibrator.fit(prepare_chain(dataset, underlying=settings["underlying"])),
                                 repeat=repeat)
        stored = len(rs.cache.get(view["key"]))
        rows.append(row(f"surface panel: {name} fit press (cache miss), {label}", secs, floor_s=floor,
                        baseline="core only: prepare_chain + SurfaceCalibrator.fit, nothing stored",
                        baseline_s=base_s,
                        note=f"{len(result.fitted_slices)}/{len(result.slices)} expiries fitted, RMSE "
                             f"{result.rmse_vol_pts:.3f} vol pts; stored result {stored / 1024:.0f} KiB"))
        if no_arb:
            continue
        sp._results.clear()
        hit_s, (_, hit_note) = best_of(lambda: sp.fit_view(st, rs, SAMPLE_DIR, session_id=session, source=source,
                                                           settings=settings, filters={}, active=None),
                                       repeat=repeat)
        rows.append(row(f"surface panel: {name} press again / reload (cache hit), {label}", hit_s,
                        baseline="the fit press (cache miss)", baseline_s=secs, note=hit_note))
        if model == "svi":
            def render():
                sp._prepared.clear()
                out = sp.render_outputs(rs, view)
                smiles = sp.smiles_output(rs, view, out["expiry_value"])
                return out, smiles

            render_s, (out, smiles) = best_of(render, repeat=repeat)
            res = sp.get_result(rs, view["key"])
            frames_s, _ = best_of(lambda: (res.smile_frame(), res.curve_frame(points=121)), repeat=repeat)
            figures_json = sum(len(pio.to_json(out[k], validate=False)) for k in (sp.SURFACE, sp.TERM, sp.RESIDUALS))
            tables_json = len(json.dumps([out[k].to_plotly_json() if out[k] is not None else None
                                          for k in sp.RENDER_OUTPUTS], default=lambda o: o.to_plotly_json()))
            smiles_json = len(pio.to_json(smiles, validate=False))
            largest = max(figures_json + tables_json, smiles_json)
            rows.append(row(f"surface panel: draw a new surface (4 figures + tables), {label}", render_s,
                            baseline="the result's figure frames alone (smile_frame + curve_frame)",
                            baseline_s=frames_s,
                            note=f"responses: render {(figures_json + tables_json) / 1024:.0f} KiB, smiles "
                                 f"{smiles_json / 1024:.0f} KiB (limit {MAX_RESPONSE_BYTES / 2**20:.0f} MB: "
                                 f"{'ok' if largest < MAX_RESPONSE_BYTES else 'OVER'})"))


def run(quick: bool = False) -> list[dict]:
    rows: list[dict] = []
    tmp = Path(tempfile.mkdtemp(prefix="execal-bench-surface-"))
    try:
        st, rs = _stores(tmp)
        session = store_mod.new_session_id()
        source = sp.sample_value(sp.SAMPLE_CHAIN)
        sample = st.get_dataset(sp.resolve_source(st, SAMPLE_DIR, source))
        _bench_chain(rows, "sample chain (572 rows, 8 expiries)", st, rs, session, source, sample, quick)
        frame = _big_chain_frame()
        big = Dataset(kind="options", frame=frame, source="bench_chain.csv", sha256="b" * 64,
                      report=ValidationReport(rows_read=len(frame), rows_kept=len(frame)))
        key = st.put_dataset(session, big)
        _bench_chain(rows, "12 expiries × 100 strikes", st, rs, session, key, big, quick)
        rs.cache.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return rows
