"""Trade-sign memory, price response and the propagator kernel (Bouchaud, Gefen, Potters & Wyart 2004).

In trade time n (one row per taker order; `taker_orders` merges the prints of one order) with
sign ε_n (+1 buy) and log-mid m_n (bps) in force just before order n, the transient impact model
(TIM1) says the mid is the sum of decaying impacts of every past order,

    m_n = Σ_{k≥1} G(k)·ε_{n−k} + noise,   so   r_n = m_{n+1} − m_n = Σ_{k≥0} g(k)·ε_{n−k} + η_n

with g(k) = G(k+1) − G(k), G(0) = 0. Multiplying by ε_{n−ℓ} and averaging gives a Toeplitz system
in the sign correlations: S(ℓ) = Σ_{k<L} g(k)·C(ℓ − k), ℓ = 0..L−1, where S(ℓ) = E[ε_n r_{n+ℓ}]
(the differential response) and C(ℓ) = E[ε_n ε_{n+ℓ}]; `scipy.linalg.solve_toeplitz` (Levinson,
O(L²)) gives g, and G = cumsum g. The response R(ℓ) = E[ε_n (m_{n+ℓ} − m_n)] = Σ_{k<ℓ} S(k).
Like the `priceprop` package (estimate_tim1, whose approach this follows; it no longer imports on
Python 3), C and S are raw moments, the identity the model implies; the sign-memory exponent is
fitted on the mean-centred autocorrelation ρ(ℓ) ∝ ℓ^(−γ) (an order-flow imbalance over the sample
would otherwise add a constant floor). G(ℓ) ∝ ℓ^(−β) is fitted on the log-spaced lags where G > 0;
β = (1 − γ)/2 is the value that keeps prices diffusive (Bouchaud et al. 2004), reported beside it.

Correlations are FFT cross-correlations (O(N log N)); the per-lag loop is the baseline of
bench/bench_orderflow.py. Standard errors: moving-block bootstrap (rows are serially dependent by
construction: long memory is what is measured). The series is cut into blocks of `block` orders
(≫ max_lag), each block's lagged products are summed once (one batched FFT), and a resample is a
weighted sum of block sums (a matrix product), followed by the Toeplitz solve and the fits.
Pairs that straddle a block edge are left out of the resamples (not of the point estimate).
"""
from __future__ import annotations

import math

import numpy as np
from scipy.fft import irfft, next_fast_len, rfft
from scipy.linalg import LinAlgError, solve_toeplitz

from execal.models.core.errors import CalibrationError
from execal.models.core.params import Param
from execal.models.core.report import OptimizerReport
from execal.models.core.result import Estimator
from execal.models.orderflow.data import TradeTape, VenueData, trade_tape
from execal.models.orderflow.result import OrderFlowResult, data_info
from execal.models.orderflow.spec import OrderFlowModel
from execal.models.orderflow.stats import block_bootstrap_weights, fit_power_law

MIN_ORDERS = 500


# --- correlation functions ---------------------------------------------------------------------

def lagged_sums(x: np.ndarray, y: np.ndarray, max_lag: int) -> np.ndarray:
    """s[..., ℓ] = Σ_n x[..., n]·y[..., n+ℓ] for ℓ = 0..max_lag along the last axis (zero-padded
    FFT, no wrap-around); x and y of the same shape, 1-D or batched 2-D."""
    n = x.shape[-1]
    nfft = next_fast_len(n + max_lag + 1, real=True)
    X = rfft(x, nfft, axis=-1)
    Y = rfft(y, nfft, axis=-1)
    return irfft(np.conj(X) * Y, nfft, axis=-1)[..., :max_lag + 1]


def sign_correlation(sign, max_lag: int, *, centred: bool = False) -> np.ndarray:
    """C(ℓ), ℓ = 0..max_lag: the mean of ε_n·ε_{n+ℓ} over the N − ℓ pairs (raw), or with
    `centred` the autocorrelation of ε − mean(ε) (ρ(0) = 1)."""
    s = np.asarray(sign, dtype=np.float64)
    if centred:
        s = s - s.mean()
    n = s.size
    c = lagged_sums(s, s, max_lag) / (n - np.arange(max_lag + 1))
    return c / c[0] if centred and c[0] > 0 else c


def differential_response(sign, mid_bps, max_lag: int) -> np.ndarray:
    """S(ℓ) = mean of ε_n·r_{n+ℓ}, r_n = m_{n+1} − m_n, ℓ = 0..max_lag − 1."""
    s = np.asarray(sign, dtype=np.float64)
    r = np.diff(np.asarray(mid_bps, dtype=np.float64))
    s = s[:r.size]
    n = r.size
    return lagged_sums(s, r, max_lag - 1) / (n - np.arange(max_lag))


def response_function(S: np.ndarray) -> np.ndarray:
    """R(ℓ) = Σ_{k<ℓ} S(k), ℓ = 0..len(S) (R(0) = 0)."""
    return np.concatenate([[0.0], np.cumsum(S)])


def solve_kernel(C: np.ndarray, S: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(g, G): g solves Σ_k g(k)·C(|ℓ−k|) = S(ℓ), ℓ < L = len(S) (Toeplitz, Levinson);
    G(ℓ) = Σ_{k<ℓ} g(k) for ℓ = 0..L (G(0) = 0)."""
    L = len(S)
    g = solve_toeplitz(np.asarray(C[:L], dtype=np.float64), np.asarray(S, dtype=np.float64))
    return g, np.concatenate([[0.0], np.cumsum(g)])


def volume_weights(qty, exponent: float) -> np.ndarray:
    """w = (v / median v)^ψ scaled to mean 1 (ones for ψ = 0): how much an order of size v
    counts in the kernel, relative to an average one."""
    qty = np.asarray(qty, dtype=np.float64)
    if exponent == 0:
        return np.ones_like(qty)
    w = (qty / np.median(qty)) ** exponent
    return w / w.mean()


def propagate(sign, G) -> np.ndarray:
    """m_n = Σ_{k≥1} G(k)·ε_{n−k} (G[0] is ignored: an order does not move the mid it meets)."""
    s = np.asarray(sign, dtype=np.float64)
    G = np.asarray(G, dtype=np.float64).copy()
    G[0] = 0.0
    n = s.size
    nfft = next_fast_len(n + G.size, real=True)
    return irfft(rfft(s, nfft) * rfft(G, nfft), nfft)[:n]


# --- the estimator ---------------------------------------------------------------------------------


class Propagator(Estimator):
    """Sign memory, response and propagator kernel of one venue's order flow.

    max_lag: kernel length L (capped at N/10 with a warning); fit_lags: (first, last) lag of the
    power-law fits (None: 1..L); aggregate: merge the prints of one taker order; volume_exponent
    ψ: the kernel acts on x_n = ε_n·w_n, w = (v/median v)^ψ scaled to mean 1 (0: the classic
    sign-only TIM1; the sign-memory exponent always uses the signs); n_boot / block / seed: the
    moving-block bootstrap (block None: max(1.5·L, N/40) orders)."""

    name = "propagator"
    label = "Propagator (transient impact)"

    def __init__(self, max_lag: int = 100, fit_lags: tuple[int, int] | None = None,
                 aggregate: bool = True, volume_exponent: float = 0.0, n_boot: int = 200,
                 block: int | None = None, seed: int = 0):
        self.max_lag = int(max_lag)
        self.fit_lags = fit_lags
        self.aggregate = bool(aggregate)
        self.volume_exponent = float(volume_exponent)
        self.n_boot = int(n_boot)
        self.block = block
        self.seed = int(seed)

    def tape(self, data) -> TradeTape:
        if isinstance(data, TradeTape):
            tape = data
        elif isinstance(data, VenueData):
            tape = trade_tape(data, aggregate=self.aggregate)
        else:
            raise TypeError(f"Propagator.fit takes VenueData or TradeTape, not {type(data).__name__}")
        ok = np.isfinite(tape.mid_bps) & np.isfinite(tape.sign)
        if not ok.all():
            tape = TradeTape(tape.t_ns[ok], tape.sign[ok], tape.qty[ok], tape.mid_bps[ok])
        return tape

    def _lags(self, n: int, warnings: list) -> tuple[int, int, int]:
        L = self.max_lag
        if L < 2:
            raise CalibrationError("max_lag must be >= 2")
        if n < MIN_ORDERS:
            raise CalibrationError(f"{n} orders: the propagator needs at least {MIN_ORDERS}")
        if L > n // 10:
            warnings.append(f"max_lag {L} cut to {n // 10} (a tenth of the {n} orders)")
            L = n // 10
        lo, hi = self.fit_lags or (1, L)
        lo, hi = max(int(lo), 1), min(int(hi), L)
        if hi - lo < 2:
            raise CalibrationError(f"fit lags {lo}..{hi}: need at least three lags")
        return L, lo, hi

    @staticmethod
    def _fits(rho, G, lo, hi):
        lags = np.arange(rho.size, dtype=np.float64)
        sel = slice(lo, hi + 1)
        return fit_power_law(lags[sel], rho[sel]), fit_power_law(lags[sel], G[sel])

    def fit(self, data) -> OrderFlowResult:
        warnings = list(getattr(data, "warnings", ()))
        tape = self.tape(data)
        n = len(tape)
        L, lo, hi = self._lags(n, warnings)
        eps, mid = tape.sign, tape.mid_bps
        x = eps * volume_weights(tape.qty, self.volume_exponent)
        C = sign_correlation(x, L)
        rho = sign_correlation(eps, L, centred=True)
        S = differential_response(x, mid, L)
        R = response_function(S)
        try:
            g, G = solve_kernel(C, S)
        except (LinAlgError, ValueError) as err:
            raise CalibrationError(f"the sign-correlation Toeplitz system is singular ({err})") from None
        sign_fit, kernel_fit = self._fits(rho, G, lo, hi)
        params = {"gamma": sign_fit.exponent, "sign_amp": sign_fit.amplitude,
                  "kernel_beta": kernel_fit.exponent, "kernel_g1_bps": kernel_fit.amplitude,
                  "response_1_bps": R[1], f"response_{L}_bps": R[L]}
        se = {k: math.nan for k in params}
        bands = {}
        boot_msg = "no bootstrap"
        if self.n_boot > 0:
            se, bands, boot_msg, boot_warn = self._bootstrap(eps, x, mid, L, lo, hi, params)
            warnings += boot_warn
        for what, fit in (("sign autocorrelation", sign_fit), ("kernel G", kernel_fit)):
            if not math.isfinite(fit.exponent):
                warnings.append(f"{what}: fewer than 3 positive log-spaced lags in {lo}..{hi}: "
                                "no power-law fit")
        if math.isfinite(kernel_fit.exponent) and kernel_fit.exponent < 0:
            warnings.append(f"kernel G grows with the lag over {lo}..{hi} (β = {kernel_fit.exponent:.3g} < 0): "
                            "the impact of an order is not decaying within these lags")
        if math.isfinite(sign_fit.exponent) and not 0 < sign_fit.exponent < 1:
            warnings.append(f"sign memory exponent γ = {sign_fit.exponent:.3g} is outside (0, 1): "
                            "not long memory in the usual sense")
        ok = math.isfinite(sign_fit.exponent) and math.isfinite(kernel_fit.exponent)
        metrics = {"orders": n, "max_lag": L, "volume_exponent": self.volume_exponent,
                   "fit_lag_min": lo, "fit_lag_max": hi,
                   "mean_sign": float(eps.mean()), "gamma_r2": sign_fit.r2, "kernel_r2": kernel_fit.r2,
                   "beta_diffusive": (1 - sign_fit.exponent) / 2 if ok else math.nan,
                   "prints_per_order": (len(data.trades) / n) if isinstance(data, VenueData) else 1.0}
        span_s = (tape.t_ns[-1] - tape.t_ns[0]) / 1e9 if n > 1 else 0.0
        metrics["orders_per_s"] = n / span_s if span_s > 0 else math.nan
        curves = {"lag": np.arange(L + 1), "C": C, "rho": rho, "S": S, "R": R, "g": g, "G": G,
                  "rho_fit": sign_fit(np.arange(1, L + 1)), "G_fit": kernel_fit(np.arange(1, L + 1)),
                  **bands}
        report = OptimizerReport(
            method="closed_form", loss="none", status=None, success=ok, converged=ok,
            message=("Toeplitz solve (Levinson) of the TIM1 kernel; log–log least-squares power "
                     f"laws; {boot_msg}" if ok else "a power-law fit had too few usable lags"),
            settings={"max_lag": L, "fit_lags": [lo, hi], "n_boot": self.n_boot})
        return OrderFlowResult(name=self.name, label=self.label, venue=getattr(data, "venue", ""),
                               symbol=getattr(data, "symbol", ""), params=params, std_errors=se,
                               report=report, warnings=tuple(warnings), metrics=metrics, curves=curves,
                               settings=self.get_params(), data_info=data_info(data))

    def _bootstrap(self, eps, x, mid, L, lo, hi, point):
        warnings = []
        r = np.diff(mid)
        s = eps[:r.size]
        xs = x[:r.size]
        n = r.size
        block = int(self.block or max(math.ceil(1.5 * L), math.ceil(n / 40)))
        if block <= L:
            raise CalibrationError(f"bootstrap block {block} must be longer than max_lag {L}")
        nb = n // block
        if nb < 10:
            warnings.append(f"block bootstrap: only {nb} blocks of {block} orders: standard "
                            "errors are rough")
        if nb < 2:
            return ({k: math.nan for k in point}, {}, "bootstrap skipped (fewer than 2 blocks)",
                    warnings + ["bootstrap skipped: fewer than two blocks"])
        sb = s[:nb * block].reshape(nb, block)
        xb = xs[:nb * block].reshape(nb, block)
        rb = r[:nb * block].reshape(nb, block)
        pairs = block - np.arange(L + 1, dtype=np.float64)          # pairs per block at lag ℓ
        cx = lagged_sums(xb, xb, L)                                  # (nb, L+1) raw x products
        cs = lagged_sums(xb, rb, L - 1)                              # (nb, L)   x · return
        cc = lagged_sums(sb, sb, L) if self.volume_exponent else cx  # sign products (memory)
        sum_s = sb.sum(axis=1)
        W = block_bootstrap_weights(nb, self.n_boot, self.seed)
        wsum = W.sum(axis=1)[:, None]
        C_b = (W @ cx) / (wsum * pairs)
        S_b = (W @ cs) / (wsum * pairs[:L])
        mean_b = (W @ sum_s)[:, None] / (wsum * block)
        # centred sign autocorrelation per resample: E[ε ε'] − mean², normalised at lag 0
        cov_b = (W @ cc) / (wsum * pairs) - mean_b ** 2
        rho_b = cov_b / cov_b[:, :1]
        draws = {k: [] for k in point}
        G_b = np.full((self.n_boot, L + 1), np.nan)
        R_b = np.concatenate([np.zeros((self.n_boot, 1)), np.cumsum(S_b, axis=1)], axis=1)
        for i in range(self.n_boot):
            try:
                _, G_i = solve_kernel(C_b[i], S_b[i])
            except (LinAlgError, ValueError):
                continue
            G_b[i] = G_i
            sf, kf = self._fits(rho_b[i], G_i, lo, hi)
            for k, v in (("gamma", sf.exponent), ("sign_amp", sf.amplitude), ("kernel_beta", kf.exponent),
                         ("kernel_g1_bps", kf.amplitude), ("response_1_bps", R_b[i, 1]),
                         (f"response_{L}_bps", R_b[i, L])):
                draws[k].append(v)
        se = {}
        for k, v in draws.items():
            v = np.asarray(v, dtype=np.float64)
            v = v[np.isfinite(v)]
            se[k] = float(np.std(v, ddof=1)) if v.size >= 10 else math.nan
        bands = {f"{name}_lo": np.nanpercentile(arr, 2.5, axis=0) for name, arr in
                 (("rho", rho_b), ("R", R_b), ("G", G_b))}
        bands.update({f"{name}_hi": np.nanpercentile(arr, 97.5, axis=0) for name, arr in
                      (("rho", rho_b), ("R", R_b), ("G", G_b))})
        return se, bands, f"moving-block bootstrap ({self.n_boot} resamples of {nb} blocks of {block})", warnings

    def fix(self, params, data) -> OrderFlowResult:
        """The response a hand-set power-law kernel G(ℓ) = kernel_g1_bps·ℓ^(−kernel_beta) implies
        on `data`'s own signs: R_model(ℓ) = Σ_k g(k)·C(ℓ−k) cumulated, beside the measured R."""
        warnings = []
        tape = self.tape(data)
        L, lo, hi = self._lags(len(tape), warnings)
        g1 = float(params["kernel_g1_bps"])
        beta = float(params["kernel_beta"])
        lags = np.arange(L + 1, dtype=np.float64)
        G = np.concatenate([[0.0], g1 * lags[1:] ** (-beta)])
        g = np.diff(G)
        C = sign_correlation(tape.sign, L)
        full = np.concatenate([C[:0:-1], C])                       # C(|j|), j = −L..L
        S_model = np.array([np.dot(g, full[L + ell - np.arange(L)]) for ell in range(L)])
        R_model = response_function(S_model)
        R = response_function(differential_response(tape.sign, tape.mid_bps, L))
        err = R_model - R
        fixed = {"kernel_beta": beta, "kernel_g1_bps": g1}
        return OrderFlowResult(name=self.name, label=self.label, venue=getattr(data, "venue", ""),
                               symbol=getattr(data, "symbol", ""), params=fixed,
                               std_errors={k: math.nan for k in fixed}, report=OptimizerReport.fixed(**fixed),
                               warnings=tuple(warnings),
                               metrics={"response_rmse_bps": float(np.sqrt(np.mean(err[1:] ** 2)))},
                               curves={"lag": np.arange(L + 1), "G": G, "g": g, "C": C, "R": R,
                                       "R_model": R_model},
                               settings=self.get_params(), data_info=data_info(data))


PROPAGATOR_MODEL = OrderFlowModel(
    name="propagator", label="Propagator (transient impact, TIM1)",
    formula="r_n = Σ_k g(k)·ε_{n−k};  S(ℓ) = Σ_k g(k)·C(ℓ−k) (Toeplitz);  G = Σ g ∝ ℓ^−β;  C ∝ ℓ^−γ",
    params=(Param("gamma", 0.5, 0.0, 2.0, "", "sign-memory exponent: ρ(ℓ) ∝ ℓ^−γ"),
            Param("kernel_beta", 0.25, -2.0, 2.0, "", "propagator decay: G(ℓ) ∝ ℓ^−β"),
            Param("kernel_g1_bps", 0.1, 0.0, 1e4, "bps", "amplitude of G at lag 1")),
    reference=("Bouchaud, Gefen, Potters & Wyart 2004; Bouchaud, Farmer & Lillo 2009; "
               "Lillo & Farmer 2004"),
    estimator_path="execal.models.orderflow.propagator:Propagator",
    options={"max_lag": 100, "aggregate": True, "n_boot": 200})
