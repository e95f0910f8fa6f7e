"""Drift and market alarms, one observation at a time, each with a documented false-alarm rate.

Every detector has `update(...) -> dict | None`: None, or an alarm {detector, statistic,
threshold, direction, ...} (the monitor stamps it with time, venue and symbol). After an alarm the
statistic restarts, so one change gives one alarm.

Residual detectors read standardised residuals z_t = (realised − predicted) / predicted sd, which
are N(0, 1) while the model is right. Cost data have heavy tails (one fill can sit 20 sd out), so
z is clipped at ±`clip` (default 4) first: one outlier moves the statistic by at most clip − k,
and the in-control law barely changes (P(|z| > 4) = 6e-5).

* CUSUM (Page 1954), two-sided: S⁺ = max(0, S⁺ + z − k), S⁻ = max(0, S⁻ − z − k), alarm when
  either exceeds h. k = half the shift (in sd) it is tuned to detect fastest. The in-control
  average run length (fills between false alarms, ARL₀) of one side is Siegmund's approximation
  ARL = (exp(−2Δb) + 2Δb − 1) / (2Δ²), Δ = −k, b = h + 1.166, and the two sides together have
  1/ARL₀ = 2/ARL: `cusum_arl0(k, h)`; `cusum_threshold(k, arl0)` solves it for h. The default,
  k = 0.5 and ARL₀ = 1000 fills (a false alarm per 1,000 fills, h = 5.75), detects a one-sd
  shift in ~12 fills (Siegmund's delay, `cusum_delay`). bench/bench_live_detectors.py measures both on simulated streams.
* Page–Hinkley (Hinkley 1971), two-sided: m_t = Σ (z_i − z̄_i − δ) against its running minimum
  (and the mirror for decreases), alarm when m_t − min m > λ. It centres on the running mean z̄
  instead of 0, so a model biased from the start does not alarm forever, at the price of adapting
  to a slow drift. With δ = k its statistic is close to CUSUM's; λ = h gives close to CUSUM's
  ARL₀, measured by the bench (the running mean makes it slightly more conservative).
* Kalman innovation test: the filter's standardised one-step innovations e_t = v_t/√(s²·S_t) are
  iid N(0, 1) when the state-space model holds. Per block of `window` fills (non-overlapping),
  Σe² ~ χ²(window) and Σe/√window ~ N(0, 1); alarm when either p-value is below alpha/2
  (Bonferroni): false-alarm probability alpha per block, alpha/window per fill.
* Liquidity evaporation: depth within N bps of the mid (both sides) below `ratio` × its trailing
  median over `window_s` seconds for `min_s` consecutive seconds; it re-arms once depth is back
  above `recover` × the median. No distributional false-alarm rate (depth is not iid); the
  median needs `min_history_s` seconds before the alarm can fire.
* Regime switch: the most probable regime of the Hamilton filter changes and the new one's
  filtered probability exceeds `p_min` (the hysteresis: a 50/50 flicker is not a switch).
"""
from __future__ import annotations

import math
from bisect import bisect_left, insort
from collections import deque

import numpy as np
from scipy import optimize, stats

SIEGMUND_SHIFT = 1.166


def cusum_arl0(k: float, h: float) -> float:
    """In-control average run length of the two-sided CUSUM on N(0, 1) data (Siegmund)."""
    b = h + SIEGMUND_SHIFT
    d = -k
    one_side = (math.exp(-2 * d * b) + 2 * d * b - 1) / (2 * d * d) if d != 0 else b * b
    return one_side / 2.0


def cusum_threshold(k: float, arl0: float) -> float:
    """The h that gives the two-sided CUSUM an in-control ARL of `arl0` observations."""
    if not arl0 > 1:
        raise ValueError("arl0 must be > 1")
    return float(optimize.brentq(lambda h: cusum_arl0(k, h) - arl0, 1e-6, 100.0))


def cusum_delay(k: float, h: float, shift: float) -> float:
    """Siegmund's expected detection delay of a one-sided CUSUM after a mean shift of `shift` sd."""
    d = shift - k
    b = h + SIEGMUND_SHIFT
    if abs(d) < 1e-12:
        return b * b
    return (math.exp(-2 * d * b) + 2 * d * b - 1) / (2 * d * d)


class Cusum:
    """Two-sided CUSUM on clipped standardised residuals."""
    name = "cusum"

    def __init__(self, k: float = 0.5, h: float | None = None, arl0: float = 1000.0, clip: float = 4.0):
        self.k = float(k)
        self.h = float(h) if h is not None else cusum_threshold(self.k, arl0)
        self.arl0 = cusum_arl0(self.k, self.h)
        self.clip = float(clip)
        self.reset()

    def reset(self) -> None:
        self.up = 0.0
        self.down = 0.0
        self.n = 0
        self.start_up = self.start_down = None     # `t` of the first observation of each run

    def update(self, z: float, t=None) -> dict | None:
        """One standardised residual (and its time `t`, any label: the alarm's change-point
        estimate is the `t` where the alarming side last left zero)."""
        if not math.isfinite(z):
            return None
        c = self.clip
        z = c if z > c else (-c if z < -c else z)
        self.n += 1
        if self.up == 0.0:
            self.start_up = t
        if self.down == 0.0:
            self.start_down = t
        self.up = max(0.0, self.up + z - self.k)
        self.down = max(0.0, self.down - z - self.k)
        stat = max(self.up, self.down)
        if stat > self.h:
            up = self.up >= self.down
            out = {"detector": self.name, "statistic": stat, "threshold": self.h,
                   "direction": "up" if up else "down", "observations": self.n,
                   "changepoint": self.start_up if up else self.start_down,
                   "false_alarm_rate": 1.0 / self.arl0}
            self.reset()
            return out
        return None

    @property
    def statistic(self) -> float:
        return max(self.up, self.down)

    def describe(self) -> dict:
        return {"k": self.k, "h": self.h, "arl0": self.arl0, "clip": self.clip,
                "false_alarm_rate_per_fill": 1.0 / self.arl0}


class PageHinkley:
    """Two-sided Page–Hinkley test on clipped standardised residuals (running-mean centred)."""
    name = "page_hinkley"

    def __init__(self, delta: float = 0.5, lam: float | None = None, arl0: float = 1000.0,
                 clip: float = 4.0):
        self.delta = float(delta)
        self.lam = float(lam) if lam is not None else cusum_threshold(self.delta, arl0)
        self.clip = float(clip)
        self.reset()

    def reset(self) -> None:
        self.n = 0
        self.mean = 0.0
        self.m_up = self.min_up = 0.0
        self.m_down = self.max_down = 0.0
        self.t_min_up = self.t_max_down = None

    def update(self, z: float, t=None) -> dict | None:
        """One standardised residual; the change-point estimate is the `t` after the extremum."""
        if not math.isfinite(z):
            return None
        c = self.clip
        z = c if z > c else (-c if z < -c else z)
        self.n += 1
        if self.n == 1:
            self.t_min_up = self.t_max_down = t
        self.mean += (z - self.mean) / self.n
        dev = z - self.mean
        if self.m_up <= self.min_up:
            self.min_up, self.t_min_up = self.m_up, t
        if self.m_down >= self.max_down:
            self.max_down, self.t_max_down = self.m_down, t
        self.m_up += dev - self.delta
        self.m_down += dev + self.delta
        up, down = self.m_up - self.min_up, self.max_down - self.m_down
        stat = max(up, down)
        if stat > self.lam:
            is_up = up >= down
            out = {"detector": self.name, "statistic": stat, "threshold": self.lam,
                   "direction": "up" if is_up else "down", "observations": self.n,
                   "changepoint": self.t_min_up if is_up else self.t_max_down}
            self.reset()
            return out
        return None

    @property
    def statistic(self) -> float:
        return max(self.m_up - self.min_up, self.max_down - self.m_down)

    def describe(self) -> dict:
        return {"delta": self.delta, "lambda": self.lam, "clip": self.clip}


class InnovationTest:
    """Block test of the Kalman filter's standardised innovations (χ² on Σe², normal on Σe)."""
    name = "kalman_innovation"

    def __init__(self, window: int = 25, alpha: float = 1e-3, clip: float = 8.0):
        if window < 2:
            raise ValueError("window must be >= 2")
        self.window = int(window)
        self.alpha = float(alpha)
        self.clip = float(clip)
        self.chi2_crit = float(stats.chi2.isf(self.alpha / 2, self.window))
        self.mean_crit = float(stats.norm.isf(self.alpha / 4))     # two-sided at alpha/2
        self.reset()

    def reset(self) -> None:
        self.count = 0
        self.s1 = 0.0
        self.s2 = 0.0
        self.t_first = None

    def update(self, e: float, t=None) -> dict | None:
        if not math.isfinite(e):
            return None
        c = self.clip
        e = c if e > c else (-c if e < -c else e)
        if self.count == 0:
            self.t_first = t
        self.count += 1
        self.s1 += e
        self.s2 += e * e
        if self.count < self.window:
            return None
        chi2, mean_z = self.s2, self.s1 / math.sqrt(self.window)
        t_first = self.t_first
        self.reset()
        if chi2 > self.chi2_crit or abs(mean_z) > self.mean_crit:
            return {"detector": self.name, "statistic": chi2, "threshold": self.chi2_crit,
                    "mean_z": mean_z, "mean_threshold": self.mean_crit,
                    "direction": "up" if mean_z > 0 else "down",
                    "p_value": float(min(stats.chi2.sf(chi2, self.window),
                                         2 * stats.norm.sf(abs(mean_z)))),
                    "window": self.window, "changepoint": t_first}
        return None

    def describe(self) -> dict:
        return {"window": self.window, "alpha_per_block": self.alpha,
                "false_alarm_rate_per_fill": self.alpha / self.window,
                "chi2_critical": self.chi2_crit, "mean_critical": self.mean_crit}


class RollingMedian:
    """Median of the last `size` values: a deque for order, a sorted list for rank (O(log n)
    search, O(n) list shift; n is a few hundred seconds)."""

    def __init__(self, size: int):
        self.size = int(size)
        self.order: deque = deque()
        self.sorted: list[float] = []

    def push(self, x: float) -> None:
        self.order.append(x)
        insort(self.sorted, x)
        if len(self.order) > self.size:
            old = self.order.popleft()
            del self.sorted[bisect_left(self.sorted, old)]

    def __len__(self) -> int:
        return len(self.order)

    @property
    def median(self) -> float:
        s = self.sorted
        n = len(s)
        if not n:
            return math.nan
        return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])


class LiquidityAlarm:
    """Depth near the mid far below its trailing median, for a few seconds in a row."""
    name = "liquidity"

    def __init__(self, ratio: float = 0.3, recover: float = 0.6, window_s: int = 300, min_s: int = 3,
                 min_history_s: int = 60):
        if not 0 < ratio < recover:
            raise ValueError("need 0 < ratio < recover")
        self.ratio, self.recover = float(ratio), float(recover)
        self.median = RollingMedian(window_s)
        self.min_s, self.min_history = int(min_s), int(min_history_s)
        self.low_run = 0
        self.alarmed = False

    def update(self, depth: float) -> dict | None:
        if not math.isfinite(depth):
            return None
        med = self.median.median
        enough = len(self.median) >= self.min_history
        self.median.push(depth)
        if not enough or not med > 0:
            return None
        rel = depth / med
        if self.alarmed:
            if rel > self.recover:
                self.alarmed = False
                self.low_run = 0
                return {"detector": self.name, "statistic": rel, "threshold": self.recover,
                        "direction": "recovered", "depth": depth, "median": med}
            return None
        self.low_run = self.low_run + 1 if rel < self.ratio else 0
        if self.low_run >= self.min_s:
            self.alarmed = True
            return {"detector": self.name, "statistic": rel, "threshold": self.ratio,
                    "direction": "down", "depth": depth, "median": med, "seconds": self.low_run}
        return None

    def describe(self) -> dict:
        return {"ratio": self.ratio, "recover": self.recover, "window_s": self.median.size,
                "min_s": self.min_s, "min_history_s": self.min_history}


class RegimeAlarm:
    """The most probable volatility regime changed (with probability above `p_min`)."""
    name = "regime"

    def __init__(self, p_min: float = 0.8):
        self.p_min = float(p_min)
        self.current: int | None = None

    def update(self, probabilities) -> dict | None:
        p = np.asarray(probabilities, dtype=np.float64)
        j = int(np.argmax(p))
        if self.current is None:
            if p[j] >= self.p_min:
                self.current = j
            return None
        if j != self.current and p[j] >= self.p_min:
            out = {"detector": self.name, "statistic": float(p[j]), "threshold": self.p_min,
                   "direction": "up" if j > self.current else "down", "from_regime": self.current,
                   "to_regime": j, "probabilities": p.tolist()}
            self.current = j
            return out
        return None

    def describe(self) -> dict:
        return {"p_min": self.p_min}
