"""User strings reach plotly as text, never as markup (issue 11 item 7).

plotly.js draws legends, titles, annotations, tick labels and hover text through its own HTML-like markup
(<b>, <i>, <br>, <span style=...>, <a href=...>). A venue, symbol, order id or segment from a user's file
is escaped by the figure builders (`figures.user_text`), end to end: a file whose venue is
`<b>x</b><a href="javascript:alert(1)">y</a>` and whose order ids carry markup is loaded, calibrated (pooled
and per venue) and drawn by every impact figure builder and the HTML report; a symbol with markup goes
through the volatility, surface, order-flow and correlation builders. The figure JSON (what Dash sends to
the browser) must hold no raw tag from the data, the escaped text instead, and execal's own markup (the
<br> and <extra> of its hover templates) untouched. tests/browser/test_browser_markup.py checks what the browser draws.
"""
from __future__ import annotations

import dataclasses
import json
import re
from html import escape

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
from ui_fixtures import SAMPLE_FILLS

from execal.components import corr_figures as CF
from execal.components import corr_panel
from execal.components import diagnostics_panel as D
from execal.components import figures
from execal.components import impact_figures as F
from execal.components import orderflow_figures as OF
from execal.components import report
from execal.components import surface_figures as SF
from execal.components import vol_panel as VP
from execal.models.data.io import load
from execal.models.impact.fit import Calibrator
from execal.models.orderflow.analysis import analyse
from execal.models.orderflow.simulate import simulate_market
from execal.models.surface.options import prepare_chain
from execal.models.surface.svi import SurfaceCalibrator

MARKUP = '<b>x</b><a href="javascript:alert(1)">y</a>'
ESCAPED = '&lt;b&gt;x&lt;/b&gt;&lt;a href="javascript:alert(1)"&gt;y&lt;/a&gt;'
# the tags the data carries: none of them may reach a figure raw (execal itself writes only <br>, <extra>)
DATA_TAGS = ("<b>", "</b>", "<a ", "</a>", "<i>", "</i>", "<span", "</span>")


def order_id(n: str) -> str:
    return f'<i>{n}</i><span style="color:red">!</span>'


def raw_tags(fig) -> list[str]:
    """The data's tags found raw in the strings of a figure's JSON, as plotly.js receives them (plotly's
    encoder writes '<' as \\u003c: the JSON is decoded before looking)."""
    text = (fig if isinstance(fig, go.Figure) else go.Figure(fig)).to_json()
    strings = json.dumps(json.loads(text), ensure_ascii=False)
    return [t for t in DATA_TAGS if t in strings]


def figures_in(outputs) -> dict:
    return {k: v for k, v in outputs.items() if isinstance(v, go.Figure)}


def load_text(text: str, name: str):
    return load(text.encode(), name=name)


# --- the helper ---------------------------------------------------------------------------------------


def test_user_text_escapes_markup_and_nothing_else():
    assert figures.user_text(MARKUP) == ESCAPED
    assert figures.user_text("BTC-USD & co") == "BTC-USD &amp; co"        # & first: no double meaning
    assert figures.user_text('say "hi"') == 'say "hi"'    # plotly decodes no &quot;: quotes stay as they are
    assert figures.user_text(12.5) == "12.5"
    assert list(figures.user_texts(np.array([MARKUP, "O1", None], dtype=object))) == [ESCAPED, "O1", "None"]
    assert list(figures.user_texts(["<i>"])) == ["&lt;i&gt;"]
    # an empty state quoting a user's file
    fig = figures.empty_figure(f"no rows in {MARKUP}.csv")
    assert figures.empty_message(fig) == f"no rows in {ESCAPED}.csv" and raw_tags(fig) == []


def test_the_detector_sees_raw_markup():
    """The check below can fail: an unescaped name is found in the JSON."""
    assert raw_tags(go.Figure(go.Scatter(x=[1], y=[1], name=MARKUP))) == ["<b>", "</b>", "<a ", "</a>"]


# --- impact: a fills file with markup in the venue and the order ids -----------------------------------


@pytest.fixture(scope="module")
def markup_fills(tmp_path_factory):
    frame = pd.read_csv(SAMPLE_FILLS, nrows=5000)
    frame.loc[frame["venue"] == "okx", "venue"] = MARKUP
    frame["order_id"] = frame["order_id"].map(order_id)
    path = tmp_path_factory.mktemp("markup") / "markup_fills.csv"
    frame.to_csv(path, index=False)
    dataset = load(str(path))
    assert MARKUP in set(dataset.frame["venue"]) and dataset.frame["order_id"].iloc[0] == order_id("O0000001")
    return dataset


@pytest.fixture(scope="module")
def markup_results(markup_fills):
    pooled = Calibrator(test_fraction=0.2).fit(markup_fills)
    segmented = Calibrator(test_fraction=0.2).fit_segments(markup_fills, by=("venue",))
    return {"pooled": pooled, "segmented": segmented}


@pytest.mark.parametrize("which", ["pooled", "segmented"])
def test_every_impact_figure_escapes_venues_order_ids_and_segments(markup_results, which):
    result = markup_results[which]
    figs = figures_in(D.build_diagnostics(result))
    view = F.view_of(result)
    index = F.scatter_index(view)
    figs["tweak curve"] = F.cost_vs_participation_figure(
        F.participation_series(view, F.log_bins(view.participation),
                               {"fitted": view.predicted_bps, "tweaked": 1.1 * view.predicted_bps}),
        curve_styles={"tweaked": {"dash": "solid"}})
    figs["titled"] = F.predicted_vs_actual_figure(view, index, title=f"tweak of {MARKUP}")
    assert len(figs) >= 9
    for name, fig in figs.items():
        assert raw_tags(fig) == [], name
    pred = figs[D.PRED_ACTUAL]
    names = [t.name for t in pred.data]
    assert ESCAPED in names and MARKUP not in names                       # the legend: the venue as text
    trace = pred.data[names.index(ESCAPED)]
    assert str(trace.customdata[0][0]).startswith("&lt;i&gt;O") and "&lt;span style=" in trace.customdata[0][0]
    # execal's own markup is intact
    assert "<br>" in trace.hovertemplate and "<extra>%{fullData.name}</extra>" in trace.hovertemplate
    assert figs["titled"].layout.title.text == f"tweak of {ESCAPED}"
    if which == "segmented":
        seg = figs[D.SEGMENTS]
        assert any(ESCAPED in str(x) for x in seg.data[0].x)             # categories: the segment names
        curves = figs[D.COST_PARTICIPATION]
        marked = [t for t in curves.data if t.meta and ESCAPED in t.meta]
        assert marked and all(t.hovertemplate.endswith("<extra>%{meta}</extra>") for t in marked)
        assert all(MARKUP not in (t.hovertemplate or "") for t in curves.data)


def test_the_html_report_holds_no_raw_markup_from_the_data(markup_results):
    html = report.build_report(markup_results["segmented"], {"source": f"{MARKUP}.csv"}, plotlyjs="")
    assert MARKUP not in html and 'href="javascript' not in html and "<i>O" not in html
    assert escape(MARKUP) in html                                # the segment table: HTML-escaped text
    # the figures, as the report's scripts hand them to plotly.js
    specs = [json.loads(m) for m in re.findall(r"var f=(.*?);Plotly\.newPlot", html)]
    assert len(specs) == len(report.report_figures(markup_results["segmented"]))
    for spec in specs:
        assert raw_tags(spec) == []
    assert any(ESCAPED in (trace.get("name") or "") for spec in specs for trace in spec["data"])


# --- a symbol with markup through the vol, surface, order-flow and correlation builders ------------------


def test_vol_figures_escape_the_symbol(stores, sample_dir):
    st, rs = stores
    text = (sample_dir / "bars_15m.csv").read_text().replace("BTCUSDT", MARKUP)
    key = st.load_bytes(text.encode(), name="markup_bars.csv")
    settings = VP.build_settings(symbol=MARKUP, bar="data", period="1D", garch="garch", dist="normal", k_regimes=2,
                                 switching_mean=False, merton=False)
    plan = VP.plan_fit(st, rs, sample_dir, session_id=None, source=key, filters={}, settings=settings)
    out = VP.run_fit(st, rs, plan["job"])
    assert out["alert"] == ("", False), out["alert"]
    view = out["view"]
    figs = {**figures_in(VP.main_outputs(rs, view)),
            **figures_in(VP.realized_outputs(rs, view, list(VP.DEFAULT_ESTIMATORS))),
            **figures_in(VP.garch_outputs(rs, view, 24, list(VP.DEFAULT_ESTIMATORS)))}
    assert len(figs) >= 4
    for name, fig in figs.items():
        assert raw_tags(fig) == [], name
    assert figs[VP.PRICE].layout.yaxis2.title.text == f"close ({ESCAPED})"


def test_surface_figures_hold_no_raw_markup(sample_dir):
    frame = pd.read_csv(sample_dir / "options_chain.csv")
    frame["venue"] = MARKUP
    frame["symbol"] = frame["symbol"].str.replace("BTC-", f"BTC-{MARKUP}-", regex=False)
    dataset = load_text(frame.to_csv(index=False), f"{MARKUP}.csv")
    result = SurfaceCalibrator("svi", "vega", False).fit(prepare_chain(dataset, underlying="BTC"))
    view = SF.surface_view(result)
    figs = {"smiles": SF.smiles_figure(view), "surface": SF.surface_figure(view),
            "term": SF.term_structure_figure(view), "residuals": SF.residuals_figure(view)}
    for name, fig in figs.items():
        assert len(fig.data) > 0, name
        assert raw_tags(fig) == [], name


def test_order_flow_figures_escape_the_venue_and_symbol():
    venue = simulate_market(seconds=900.0, seed=3).data
    venue = dataclasses.replace(venue, venue=MARKUP, symbol="<i>SYM</i>")
    rep = analyse([venue], windows_s=(1.0, 10.0))
    figs = {"ofi": OF.ofi_scatter_figure(rep), "depth": OF.beta_depth_figure(rep),
            "signs": OF.sign_memory_figure(rep), "propagator": OF.propagator_figure(rep),
            "resilience": OF.resilience_figure(rep)}
    legend = f"{ESCAPED} &lt;i&gt;SYM&lt;/i&gt;"
    for name, fig in figs.items():
        assert len(fig.data) > 0 and raw_tags(fig) == [], name
        shown = [t for t in fig.data if t.showlegend is not False]
        assert shown and all(t.name == legend for t in shown), name
        # the venue reaches the hover through %{meta}, never pasted into the template
        assert all(t.meta == legend for t in fig.data if t.hovertemplate), name
        assert all("%{meta}" in t.hovertemplate for t in fig.data if t.hovertemplate and "<extra>" in t.hovertemplate
                   and "<extra></extra>" not in t.hovertemplate), name
    # tables are Dash components (React escapes their text): they keep the name as the user wrote it
    assert OF.comparison_rows(rep)[0]["venue"] == f"{MARKUP} <i>SYM</i>"


def test_correlation_figures_escape_the_series_names(stores, sample_dir):
    st, _ = stores
    bars = (sample_dir / "bars_15m.csv").read_text().replace("ETHUSDT", MARKUP)
    bars_ds = st.get_dataset(st.load_bytes(bars.encode(), name="markup_bars.csv"))
    trades = pd.read_csv(sample_dir / "trades_BTCUSDT.csv.gz")
    trades["symbol"] = MARKUP
    quotes = pd.read_csv(sample_dir / "quotes_BTCUSDT.csv.gz")
    ticks = [load_text(trades.to_csv(index=False), "markup_trades.csv"),
             load_text(quotes.to_csv(index=False), "quotes.csv")]
    dcc = corr_panel.compute([bars_ds], {"method": "dcc", "freq": None, "regimes": True})
    hy = corr_panel.compute(ticks, {"method": "hy", "price": "auto", "max_lag_s": 0.5, "lag_step_s": 0.05})
    assert any(MARKUP in n for n in dcc["result"].names) and any(MARKUP in n for n in hy["result"].names)
    figs = {"dcc heatmap": CF.result_heatmap(dcc["result"]), "dcc path": CF.dcc_path_figure(dcc["result"], 48),
            "regimes": CF.regime_figure(dcc["regimes"]), "hy heatmap": CF.result_heatmap(hy["result"]),
            "epps": CF.epps_figure(hy["result"].epps), "lead-lag": CF.lead_lag_figure(hy["result"].lead_lag)}
    for name, fig in figs.items():
        assert len(fig.data) > 0 and raw_tags(fig) == [], name
    assert any(ESCAPED[:20] in str(x) for x in figs["dcc heatmap"].data[0].x)
    assert any(ESCAPED[:20] in (t.name or "") for t in figs["dcc path"].data)
    assert any(ESCAPED[:10] in a.text for a in figs["lead-lag"].layout.annotations)
    peak = [t for t in figs["lead-lag"].data if t.name == "peak"]
    assert all(t.hovertemplate == "%{meta}<extra></extra>" and MARKUP not in t.meta for t in peak)
