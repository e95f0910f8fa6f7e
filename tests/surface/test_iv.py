"""Implied volatility (models/iv.py): agreement with Jäckel's reference implementation, round
trips, put/call symmetry, and a flag (never an exception) for every kind of bad quote."""
import warnings

import numpy as np
import pytest
from py_lets_be_rational import black as lbr_black
from py_lets_be_rational import implied_volatility_from_a_transformed_rational_guess as lbr_iv
from py_lets_be_rational.exceptions import AboveMaximumException, BelowIntrinsicException

from execal.models.surface import iv
from execal.models.surface.iv import (ABOVE_MAX, BAD_INPUT, BELOW_INTRINSIC, OK, ZERO_VEGA, black76, black76_vega,
                       implied_vol, normalised_black)


def _random_quotes(n, seed, z_max=6.0):
    rng = np.random.default_rng(seed)
    F = rng.uniform(50, 150, n)
    T = np.exp(rng.uniform(np.log(1 / 365 / 24), np.log(5), n))     # one hour to five years
    vol = np.exp(rng.uniform(np.log(0.02), np.log(4.0), n))
    z = rng.uniform(-z_max, z_max, n)                                   # strikes in ATM sd
    K = F * np.exp(z * vol * np.sqrt(T))
    call = rng.random(n) < 0.5
    return F, K, T, vol, call


def test_agrees_with_lets_be_rational_on_a_random_sample():
    """Independent reference: the vollib port of Jäckel's own code, quote by quote (calls and
    puts, in and out of the money, an hour to five years, 2 % to 400 % vol)."""
    F, K, T, vol, call = _random_quotes(1500, seed=7)
    price = black76(F, K, T, vol, call)
    ours = implied_vol(price, F, K, T, call)
    ref = np.full(F.size, np.nan)
    for i in range(F.size):
        try:
            ref[i] = lbr_iv(price[i], F[i], K[i], T[i], 1.0 if call[i] else -1.0)
        except (BelowIntrinsicException, AboveMaximumException):
            pass
    both = ours.ok & np.isfinite(ref) & (ref > 0)
    assert both.sum() > 1400
    rel = np.abs(ours.vol[both] / ref[both] - 1.0)
    assert rel.max() < 1e-10, rel.max()
    assert np.median(rel) < 1e-14


def test_black76_agrees_with_the_reference_price():
    F, K, T, vol, call = _random_quotes(400, seed=3)
    ours = black76(F, K, T, vol, call)
    ref = np.array([lbr_black(f, k, v, t, 1.0 if c else -1.0) for f, k, v, t, c in zip(F, K, vol, T, call)])
    assert np.max(np.abs(ours / ref - 1.0)) < 1e-12


def test_round_trip_of_out_of_the_money_prices_to_1e_10():
    """OTM prices carry the whole vol (no intrinsic to cancel): the round trip is exact to ~1e-15,
    including deep wings (8 ATM standard deviations) and tiny premiums."""
    F, K, T, vol, _ = _random_quotes(20000, seed=11, z_max=8.0)
    call = K >= F
    price = black76(F, K, T, vol, call)
    res = implied_vol(price, F, K, T, call)
    assert res.ok.all(), res.counts()
    assert np.max(np.abs(res.vol / vol - 1.0)) < 1e-10
    # Let's Be Rational's promise: two Householder(3) steps are enough
    assert np.percentile(res.iterations, 99) <= 2


def test_puts_and_calls_at_one_strike_give_one_vol():
    F, K, T, vol = 100.0, np.array([80.0, 95.0, 100.0, 105.0, 130.0]), 0.5, 0.65
    call = black76(F, K, T, vol, True)
    put = black76(F, K, T, vol, False)
    np.testing.assert_allclose(call - put, F - K, rtol=0, atol=1e-12)   # parity
    v_call = implied_vol(call, F, K, T, True).vol
    v_put = implied_vol(put, F, K, T, False).vol
    np.testing.assert_allclose(v_call, vol, rtol=1e-10)
    np.testing.assert_allclose(v_put, vol, rtol=1e-10)


def test_at_the_money_and_strings_and_shapes():
    price = black76(100.0, 100.0, 0.25, 0.8, "C")
    res = implied_vol(np.full((2, 3), price), 100.0, 100.0, 0.25, np.array([["C", "call", "c"], ["C", "CALL", "C"]]))
    assert res.vol.shape == (2, 3) and res.flag.shape == (2, 3)
    np.testing.assert_allclose(res.vol, 0.8, rtol=1e-13)
    # "P"/"put" strings are puts: the same price as a put is a different vol
    put = implied_vol(black76(100.0, 110.0, 0.25, 0.8, "P"), 100.0, 110.0, 0.25, "put")
    assert abs(float(put.vol) - 0.8) < 1e-12


def test_bad_quotes_are_flagged_not_raised():
    F, K, T = 100.0, 90.0, 0.5
    intrinsic = F - K
    prices = np.array([intrinsic - 1.0,         # below intrinsic
                       intrinsic,               # no time value
                       F,                       # a call worth the forward: above max
                       F + 5.0,
                       np.nan,                  # missing
                       -1.0,                    # (below intrinsic, too)
                       black76(F, K, T, 0.5, True)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")        # no RuntimeWarning either
        res = implied_vol(prices, F, K, T, True)
    assert res.flag.tolist() == [BELOW_INTRINSIC, BELOW_INTRINSIC, ABOVE_MAX, ABOVE_MAX, BAD_INPUT,
                                 BELOW_INTRINSIC, OK]
    assert np.isnan(res.vol[:6]).all() and abs(res.vol[6] - 0.5) < 1e-12
    assert res.counts() == {"ok": 1, "below_intrinsic": 3, "above_max": 2, "bad_input": 1}
    # a put is bounded by the strike
    assert implied_vol(K, F, K, T, False).flag == ABOVE_MAX
    # non-positive or missing forward, strike or expiry
    bad = implied_vol([1.0, 1.0, 1.0, 1.0], [0.0, 100.0, 100.0, np.inf], [100.0, -5.0, 100.0, 100.0],
                      [1.0, 1.0, 0.0, 1.0], True)
    assert (bad.flag == BAD_INPUT).all() and np.isnan(bad.vol).all()


def test_extreme_wings_get_the_zero_vega_flag():
    """A time value that underflows, or that is lost in the rounding of a deep in-the-money price,
    pins down no vol: flagged, not an exception and not a made-up number."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        two_ulps_above_intrinsic = np.nextafter(np.nextafter(50.0, 99.0), 99.0)
        res = implied_vol([1e-320, two_ulps_above_intrinsic, 1e-300], [100.0, 100.0, 100.0], [200.0, 50.0, 1e5],
                          [1.0, 1.0, 1.0], [True, True, True])
    assert res.flag[0] == ZERO_VEGA and np.isnan(res.vol[0])
    assert res.flag[1] == ZERO_VEGA
    # a tiny but normal premium far out of the money still inverts, and to the right vol
    assert res.flag[2] == OK
    assert abs(black76(100.0, 1e5, 1.0, res.vol[2], True) / 1e-300 - 1) < 1e-10


def test_absurd_moneyness_does_not_break():
    F, T = 1.0, 1.0
    K = np.array([np.exp(-60.0), np.exp(60.0), np.exp(-300.0)])
    vol = np.array([3.0, 3.0, 10.0])
    price = black76(F, K, T, vol, K > F)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = implied_vol(price, F, K, T, K > F)
    finite = res.flag == OK
    assert finite[:2].all()
    np.testing.assert_allclose(res.vol[finite], vol[finite], rtol=1e-8)
    assert set(res.flag.tolist()) <= {OK, ZERO_VEGA}


def test_normalised_black_regions_match_high_precision():
    """b(x, s) in each of Jäckel's four evaluation regions against 40-digit arithmetic."""
    import mpmath  # test extra: an independent 40-digit reference
    mpmath.mp.dps = 40
    cases = [(-25.0, 2.0),      # asymptotic expansion (h < -10)
             (-0.01, 0.05),     # small-t expansion
             (-0.5, 3.0),       # Φ form (b close to b_max)
             (-2.0, 1.0),       # erfcx form
             (0.0, 0.3), (-1e-8, 1e-3)]
    x = np.array([c[0] for c in cases])
    s = np.array([c[1] for c in cases])
    ours = normalised_black(x, s)
    for (xi, si), b in zip(cases, ours):
        X, S = mpmath.mpf(xi), mpmath.mpf(si)
        exact = mpmath.ncdf(X / S + S / 2) * mpmath.exp(X / 2) - mpmath.ncdf(X / S - S / 2) * mpmath.exp(-X / 2)
        assert abs(b / float(exact) - 1) < 1e-13, (xi, si, b, float(exact))


def test_vega_matches_finite_difference():
    F, K, T, vol = 100.0, np.array([70.0, 100.0, 140.0]), 0.3, 0.7
    h = 1e-6
    fd = (black76(F, K, T, vol + h, True) - black76(F, K, T, vol - h, True)) / (2 * h)
    np.testing.assert_allclose(black76_vega(F, K, T, vol), fd, rtol=1e-7)


def test_flags_are_documented():
    assert set(iv.FLAGS) == set(iv.FLAG_DESCRIPTIONS)
    assert len(set(iv.FLAGS.values())) == len(iv.FLAGS)
