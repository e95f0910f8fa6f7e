"""What escaping user text for plotly costs (issue 11 item 7): the Diagnostics panel's first render of a
calibration on 1,000,000 fills (every figure and table, JSON-encoded as Dash sends it; ≤ 20,000 orders drawn,
each with its order id in the hover, venues in the legend), against the same render with the escaping
switched off (`figures.user_text` / `user_texts` made plain `str`), on the same fitted result in the same run.
A per-venue fit adds the segment names (categories, legends). The note gives the escaping's share.
"""
from __future__ import annotations

import contextlib
import warnings

import numpy as np
from plotly.io.json import to_json_plotly

from bench.common import best_of, row
from execal.components import diagnostics_panel as D
from execal.components import impact_figures as F
from execal.models.impact.fit import Calibrator
from execal.models.impact.simulate import simulate_fills


@contextlib.contextmanager
def _no_escaping():
    """The builders with the escaping replaced by plain text (the baseline: what the render cost before)."""
    saved = F.user_text, F.user_texts
    F.user_text, F.user_texts = str, (lambda values: np.asarray(values, dtype=object).astype(str))
    try:
        yield
    finally:
        F.user_text, F.user_texts = saved


def _render(result) -> str:
    out = D.build_diagnostics(result)
    return to_json_plotly([out[k] for k in D.OUTPUT_PROPS])


def run(quick: bool = False) -> list[dict]:
    n = 100_000 if quick else 1_000_000
    fills, _ = simulate_fills(n, params={"Y": 0.7, "delta": 0.5}, seed=7, outlier_share=0.01)
    # ids and venues as users write them, some with markup (the escaping has work to do)
    fills["order_id"] = np.where(np.arange(n) % 10 == 0, "<i>" + fills["order_id"] + "</i>", fills["order_id"])
    fills["venue"] = fills["venue"].astype(str).replace({fills["venue"].iloc[0]: "<b>desk</b> & co"})
    cal = Calibrator(test_fraction=0.2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = {"pooled fit": cal.fit(fills), "per-venue fit": cal.fit_segments(fills, by=("venue",))}
    rows = []
    for what, result in results.items():
        _render(result)                                    # warm: the view and its caches
        escaped_s, body = best_of(lambda: _render(result), repeat=3)
        with _no_escaping():
            plain_s, plain = best_of(lambda: _render(result), repeat=3)
        assert "&lt;b&gt;desk" in body and "&lt;b&gt;" not in plain      # the escaping did (not) run
        share = (escaped_s - plain_s) / escaped_s
        rows.append(row(f"diagnostics first render with user text escaped, {what}, {n:,} fills", escaped_s,
                        baseline="same render, escaping off", baseline_s=plain_s,
                        note=f"escaping {100 * share:+.1f} % of the render; response {len(body) / 2**20:.2f} MB"))
    return rows


if __name__ == "__main__":
    for r in run():
        print(r)
