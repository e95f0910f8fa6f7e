"""power_law fitted to walk-the-book costs: first real-data ground truth for execution cost.

The Binance captures give three venues for BTC (USD-M perp, spot, COIN-M perp) over the same
six minutes; each book is walked for 40 sizes (0.01 .. 50 BTC) at each 1 s snapshot and fitted.
"""
import numpy as np
import pandas as pd
import pytest

from execal.models.data.binance import read_capture
from execal.models.data.book import market_impact_curve
from execal.models.impact.book import fit_book_power_law

SIZES_BTC = np.geomspace(0.01, 50, 40)
FILES = {"binance-usdm": "usdm_btcusdt_20240808.gz", "binance-spot": "spot_btcusdt_20240808.gz",
         "binance-coinm": "cm_btcusd_perp_20240808.gz"}


def test_fit_recovers_a_known_power_law_curve():
    rng = np.random.default_rng(3)
    size = np.tile(SIZES_BTC, 200)
    half_spread = np.full(size.size, 0.8)
    cost = half_spread + 0.3 * size ** 0.7 + rng.standard_t(4, size.size) * 0.05
    curve = pd.DataFrame({"size": size, "cost_bps": cost, "half_spread_bps": half_spread,
                          "venue": "x", "symbol": "BTC"})
    r = fit_book_power_law(curve)
    assert r.report.success
    for name, truth in (("Y", 0.3), ("delta", 0.7)):
        est, se = r.params[name], r.std_errors[name]
        # within 4 standard errors (a 95 % interval misses 1 time in 20 by design) and 2 %
        assert abs(est - truth) < 4 * se and abs(est / truth - 1) < 0.02, (name, est, se)


@pytest.fixture(scope="module")
def venue_fits(shared_data):
    fits = {}
    for venue, name in FILES.items():
        cap = read_capture(shared_data / "binance-raw" / name, levels=1000)
        curve = market_impact_curve(cap.book, SIZES_BTC)
        fits[venue] = (curve, fit_book_power_law(curve))
    return fits


def test_power_law_fits_each_venue_book(venue_fits):
    for venue, (curve, r) in venue_fits.items():
        assert r.report.success, (venue, r.report.message)
        assert curve.attrs["depth_exhausted"] == 0            # 1000 levels cover 50 BTC
        assert 0.5 < r.params["delta"] < 1.2, (venue, r.params)
        assert 0.01 < r.params["Y"] < 1.0, (venue, r.params)   # bps over half spread for 1 BTC
        # the fit explains the curve: median absolute error well under a basis point
        resid = np.abs(r.residuals_bps)
        assert np.median(resid) < 0.3, (venue, np.median(resid))


def test_venue_comparison_usdm_deepest(venue_fits):
    """Same minutes, same coin: the USD-M perp book is the deepest, COIN-M the thinnest
    (cost over half spread of 1 BTC: about 0.08, 0.13 and 0.24 bps)."""
    y = {v: r.params["Y"] for v, (_, r) in venue_fits.items()}
    se = {v: r.std_errors["Y"] for v, (_, r) in venue_fits.items()}
    # differences at 3 standard errors of the difference (block-bootstrap errors: honest for
    # serially dependent snapshots, so wider than the sandwich ones)
    for a, b in (("binance-usdm", "binance-spot"), ("binance-spot", "binance-coinm")):
        assert y[b] - y[a] > 3 * np.hypot(se[a], se[b]), (a, b, y, se)


def test_block_bootstrap_errors_exceed_the_independent_ones(venue_fits):
    """~24,000 rows from consecutive 1 s snapshots are not independent: the block bootstrap's
    errors are several times the sandwich's, and the report says which one the result carries."""
    for venue, (curve, r) in venue_fits.items():
        settings = r.report.settings
        assert "block bootstrap" in settings["std_errors"], venue
        sandwich = settings["sandwich_std_errors"]
        for name in ("Y", "delta"):
            assert r.std_errors[name] > 1.5 * sandwich[name], (venue, name, r.std_errors[name], sandwich[name])
        assert r.bootstrap is not None and r.bootstrap.by == "block" and r.bootstrap.clusters >= 10


def test_without_timestamps_the_fit_warns_that_errors_assume_independence():
    rng = np.random.default_rng(5)
    size = np.tile(SIZES_BTC, 50)
    curve = pd.DataFrame({"size": size, "cost_bps": 0.8 + 0.3 * size ** 0.7 + rng.normal(0, 0.05, size.size),
                          "half_spread_bps": 0.8})
    r = fit_book_power_law(curve)
    assert any("serially dependent" in w for w in r.report.warnings)
