"""Heston / Bates benchmarks: pricing a chain from the characteristic function, and calibrating to it.

Rows (each against QuantLib 1.44 on the same options in the same run):
- Heston prices of 1,200 options (12 expiries from 1 day to 2 years × 100 strikes over ±3.5 ATM
  standard deviations), floor 5 ms, against QuantLib's AnalyticHestonEngine (its default 144-point
  Gauss–Laguerre) pricing the same options one VanillaOption at a time; the note gives the largest
  price difference (forward 100) and the quadrature nodes per expiry.
- the same with the price gradient in the 5 parameters (what one Levenberg–Marquardt iteration
  needs), against QuantLib pricing the chain 6 times (a forward-difference Jacobian, as its LM does).
- Bates prices of the same 1,200 options against QuantLib's BatesEngine.
- Heston calibration to that chain (mid IVs from Heston plus 0.3 vol points of noise, price target,
  vega weights), floor 1 s, from the same start as QuantLib's calibrator (ql.HestonModel +
  HestonModelHelper (PriceError, weights (omega/F)²) + LevenbergMarquardt): one LM run each; the note
  gives both objectives (execal's measure of each solution) and the evaluation counts.
- Heston calibration with the default settings (data-driven start + 4 Sobol starts, the best 2
  polished by LM), floor 1 s, against the same QuantLib run.
"""
from __future__ import annotations

import numpy as np

from bench.common import best_of, row
from execal.models.surface import fourier
from execal.models.surface.heston import StochasticVolCalibrator, model_chain

TRUTH = dict(v0=0.36, kappa=2.0, theta=0.4, sigma=1.5, rho=-0.3)
JUMPS = {"lambda": 1.5, "nu": -0.08, "delta": 0.25}
START = dict(v0=0.25, kappa=1.0, theta=0.3, sigma=1.0, rho=-0.5)
DAYS = np.array([1, 2, 4, 7, 14, 30, 60, 91, 182, 365, 547, 730])
F = 100.0


def _grid(n_k: int):
    T = DAYS / 365.0
    ks = [np.linspace(-3.5, 3.5, n_k) * np.sqrt(TRUTH["theta"] * t) for t in T]
    K = F * np.exp(np.concatenate(ks))
    TT = np.repeat(T, n_k)
    return T, ks, K, TT


class _QL:
    def __init__(self, p: dict):
        import QuantLib as ql
        self.ql = ql
        self.today = ql.Date(1, 1, 2024)
        ql.Settings.instance().evaluationDate = self.today
        dc = ql.Actual365Fixed()
        self.r = ql.YieldTermStructureHandle(ql.FlatForward(self.today, 0.0, dc))
        self.q = ql.YieldTermStructureHandle(ql.FlatForward(self.today, 0.0, dc))
        s0 = ql.QuoteHandle(ql.SimpleQuote(F))
        if "lambda" in p:
            self.model = ql.BatesModel(ql.BatesProcess(self.r, self.q, s0, p["v0"], p["kappa"], p["theta"], p["sigma"],
                                                       p["rho"], p["lambda"], p["nu"], p["delta"]))
            self.engine = ql.BatesEngine(self.model)
        else:
            self.model = ql.HestonModel(ql.HestonProcess(self.r, self.q, s0, p["v0"], p["kappa"], p["theta"],
                                                         p["sigma"], p["rho"]))
            self.engine = ql.AnalyticHestonEngine(self.model)

    def options(self, K, days):
        ql = self.ql
        out = []
        for k, d in zip(K, days):
            opt = ql.VanillaOption(ql.PlainVanillaPayoff(ql.Option.Call if k >= F else ql.Option.Put, float(k)),
                                   ql.EuropeanExercise(self.today + int(d)))
            opt.setPricingEngine(self.engine)
            out.append(opt)
        return out

    @staticmethod
    def price_all(options) -> np.ndarray:
        for o in options:
            o.recalculate()
        return np.array([o.NPV() for o in options])


def _pricing_rows(n_k: int, repeat: int) -> list[dict]:
    rows = []
    T, _, K, TT = _grid(n_k)
    days = np.rint(TT * 365).astype(int)
    n = K.size
    for model, p in (("heston", TRUTH), ("bates", {**TRUTH, **JUMPS})):
        vec = fourier.param_vector(p, model)
        fourier.otm_prices(vec, F, K, TT, model=model)                                # warm-up
        secs, res = best_of(lambda: fourier.otm_prices(vec, F, K, TT, model=model), repeat=repeat)
        q = _QL(p)
        opts = q.options(K, days)
        base_s, ref = best_of(lambda: q.price_all(opts), repeat=max(1, repeat // 4))
        diff = np.max(np.abs(F * res.otm - ref))
        label = "Heston" if model == "heston" else "Bates"
        engine = "AnalyticHestonEngine" if model == "heston" else "BatesEngine"
        rows.append(row(f"{label} prices, {n:,} options ({DAYS.size} expiries 1 d–2 y × {n_k} strikes)", secs,
                        floor_s=0.005 if model == "heston" else None,
                        baseline=f"QuantLib {engine} (144-point Gauss–Laguerre), one option at a time",
                        baseline_s=base_s,
                        note=f"max |execal − QuantLib| {diff:.1e} (forward {F:g}); nodes per expiry "
                             f"{int(res.plan.nodes.min())}–{int(res.plan.nodes.max())}"))
        if model == "heston":
            secs_g, _ = best_of(lambda: fourier.otm_prices(vec, F, K, TT, model=model, grad=True), repeat=repeat)
            rows.append(row(f"Heston prices + gradient (5 parameters), {n:,} options", secs_g,
                            baseline="QuantLib AnalyticHestonEngine × 6 (price + forward-difference Jacobian)",
                            baseline_s=6 * base_s, note="the Jacobian is analytic (same nodes)"))
    return rows


def _ql_calibrate(prob, start: dict):
    """QuantLib's calibrator on the problem's quotes with execal's weights; returns (params, nfev)."""
    q = _QL(start)
    ql = q.ql
    pts = prob.points
    days = np.rint(pts["T_years"].to_numpy() * 365).astype(int)
    helpers = []
    for d, K, v in zip(days, pts["strike"], pts["iv_mid"]):
        h = ql.HestonModelHelper(ql.Period(int(d), ql.Days), ql.NullCalendar(), F, float(K),
                                 ql.QuoteHandle(ql.SimpleQuote(float(v))), q.r, q.q,
                                 ql.BlackCalibrationHelper.PriceError)
        h.setPricingEngine(q.engine)
        helpers.append(h)
    w = [float(x) for x in (prob.omega / F) ** 2]
    q.model.calibrate(helpers, ql.LevenbergMarquardt(), ql.EndCriteria(1000, 100, 1e-8, 1e-8, 1e-8),
                      ql.NoConstraint(), w)
    theta, kappa, sigma, rho, v0 = q.model.params()
    return dict(v0=v0, kappa=kappa, theta=theta, sigma=sigma, rho=rho), q.model.functionEvaluation()


def _calibration_rows(n_k: int, repeat: int) -> list[dict]:
    T, ks, _, _ = _grid(n_k)
    chain = model_chain(TRUTH, T, ks, noise_vol_pts=0.3, seed=1, forward=F)
    single = StochasticVolCalibrator("heston", "price", "vega", start=START, starts=0, polish=1)
    prob = single.problem(chain)

    def cost(p: dict) -> float:
        r = prob.evaluate(fourier.param_vector(p))["r"]
        return 0.5 * float(r @ r)
    single.fit(chain)                                                                  # warm-up
    secs, res = best_of(lambda: single.fit(chain), repeat=repeat)
    base_s, (ql_p, ql_nfev) = best_of(lambda: _ql_calibrate(prob, START), repeat=1)
    ql_cost = cost(ql_p)
    n = len(chain.points)
    rows = [row(f"Heston calibration, {n:,} options, one LM run from a fixed start", secs, floor_s=1.0,
                baseline="QuantLib HestonModel.calibrate (LevenbergMarquardt, same start and weights)",
                baseline_s=base_s,
                note=f"objective execal {res.cost:.8g} vs QuantLib's solution {ql_cost:.8g} "
                     f"(ratio {res.cost / ql_cost:.10f}); evaluations execal {res.report.nfev} + "
                     f"{res.report.njev} Jacobians, QuantLib {ql_nfev}; converged {res.converged}")]
    default = StochasticVolCalibrator("heston", "price", "vega")
    secs_d, res_d = best_of(lambda: default.fit(chain), repeat=max(1, repeat // 2))
    rows.append(row(f"Heston calibration, {n:,} options, default multistart (5 scored starts, 2 LM runs)", secs_d,
                    floor_s=1.0, baseline="QuantLib HestonModel.calibrate (one start)", baseline_s=base_s,
                    note=f"objective {res_d.cost:.8g}; parameters "
                         + ", ".join(f"{k} {v:.4f}" for k, v in res_d.params.items())
                         + " (truth " + ", ".join(f"{v:g}" for v in TRUTH.values()) + ")"))
    return rows


def run(quick: bool = False) -> list[dict]:
    n_k = 20 if quick else 100
    repeat = 3 if quick else 10
    return _pricing_rows(n_k, repeat) + _calibration_rows(n_k, 1 if quick else 3)


if __name__ == "__main__":
    for r in run(quick=True):
        print(r)
