"""Issue 10 item 11, the rough edges of a first hour, as the callback bodies and figure builders see them
(tests/browser/test_browser_rough_edges.py looks at the same things in a real browser): empty states that fit
a third of the page, optimizer messages without literal backticks, a smile RMSE that shows the real
number, the 3D surface's z unit inside the card, the bar length "as in the data" of the data on screen,
and the volatility tables given a full row."""
from __future__ import annotations

import types

import pytest

from execal.components import diagnostics_panel as D
from execal.components import figures
from execal.components import impact_figures as F
from execal.components import report
from execal.components import surface_figures as SF
from execal.components import vol_figures as V
from execal.components import vol_panel as P
from execal.models.data.io import load
from execal.models.surface.options import prepare_chain
from execal.models.surface.svi import fit_surface
from ui_fixtures import SAMPLE_DIR, text_of

NO_OUT_OF_SAMPLE = "No out-of-sample rows: set a test fraction or walk-forward folds in Calibrate"


@pytest.fixture(scope="module")
def svi_view():
    chain = prepare_chain(load(str(SAMPLE_DIR / "options_chain.csv")))
    return SF.surface_view(fit_surface(chain, model="svi"))


@pytest.mark.parametrize("message", [D.NO_RESULT, SF.NO_RESULT, NO_OUT_OF_SAMPLE, P.EMPTY_MESSAGE, "short"])
def test_empty_states_fit_a_third_of_the_page(message):
    fig = figures.empty_figure(message)
    lines = fig.layout.annotations[0].text.split("<br>")
    # plotly never wraps an annotation: a line is at most ~44 characters (~330 px at 14 px), what a third
    # of a 1280 px page leaves a chart; the words are all there, in order
    assert all(len(line) <= figures.EMPTY_LINE_CHARS for line in lines)
    assert figures.empty_message(fig) == message and figures.empty_message(fig.to_plotly_json()) == message
    assert len(lines) == 1 if len(message) <= figures.EMPTY_LINE_CHARS else len(lines) >= 2


def test_status_banners_show_the_optimizers_words_without_backticks(fitted):
    assert "`" in fitted.report.message            # scipy: "`ftol` termination condition is satisfied."
    summary = F.status_summary(fitted)
    assert "ftol termination condition is satisfied" in summary["headline"] and "`" not in summary["headline"]
    assert "`" not in report.optimizer_status(fitted)["message"]
    assert "`" not in text_of(D.status_component(fitted))
    from execal.models.core.report import OptimizerReport
    vol = types.SimpleNamespace(status="fitted", converged=True, warnings=["`xtol` reached"],
                                report=OptimizerReport(method="arch", message="`gtol` termination condition"))
    out = V.status_summary("garch", vol)
    assert out["headline"].startswith("Converged — gtol termination condition") and out["details"] == ["xtol reached"]


def test_smile_titles_show_the_real_rmse(svi_view):
    titles = [a.text for a in SF.smiles_figure(svi_view).layout.annotations if "RMSE" in a.text]
    assert len(titles) == len(svi_view.result.fitted_slices) > 0
    rmses = [s.rmse_vol_pts for s in svi_view.result.fitted_slices]
    # the sample chain is generated on the surface it fits: RMSEs are ~1e-5 vol points, never shown as 0.00
    assert all(0 < r < 1e-3 for r in rmses)
    assert not any("0.00 vp" in t for t in titles)
    assert all(f"RMSE {F.format_number(r, 2)} vp" in t for r, t in zip(rmses, titles))


def test_the_surface_z_unit_sits_on_its_ticks(svi_view):
    scene = SF.surface_figure(svi_view).layout.scene
    # a 3D axis title is drawn past the tick labels, where a half-page card cut it off: the unit rides on
    # every tick instead (and the colour bar says "IV %")
    assert not scene.zaxis.title.text and scene.zaxis.ticksuffix == "%"


def test_the_bar_length_says_what_the_data_has():
    bars = load(str(SAMPLE_DIR / "bars_15m.csv"))
    assert P.describe_data(bars, {})["bars"][0] == {"label": "as in the data (15 min)", "value": P.DATA_BARS}
    trades = load(str(SAMPLE_DIR / "trades_BTCUSDT.csv.gz"))
    assert P.describe_data(trades, {})["bars"][0]["label"] == "as in the data (1 min bars of the trades)"
    # before any data is read, the choice promises nothing it cannot know
    assert P.bar_options()[0]["label"] == "as in the data"
    assert [o["value"] for o in P.bar_options()] == list(P.BAR_CHOICES)


def _column_of(component, target: str):
    """The dbc.Col (grid column) holding the component with id `target`."""
    found = []

    def walk(node, col):
        if node is None or isinstance(node, (str, int, float)):
            return
        if isinstance(node, (list, tuple)):
            for child in node:
                walk(child, col)
            return
        col = node if type(node).__name__ == "Col" else col
        if getattr(node, "id", None) == target:
            found.append(col)
        walk(getattr(node, "children", None), col)

    walk(component, None)
    return found[0]


@pytest.mark.parametrize("table", [P.FITS_TABLE, P.PARAMS])
def test_the_wide_volatility_tables_have_a_full_row(table):
    # the model comparison and parameter tables were cut at the right edge of a half-row card
    assert _column_of(P.layout(None), table).lg == 12
