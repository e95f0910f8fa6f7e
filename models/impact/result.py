"""Calibration results: immutable, the same type for a fit and for parameters set by hand.

arch's split: `Calibrator.fit()` returns a `CalibrationResult`; `Calibrator.fix(params)` returns
the same type with status "fixed", so the tweak slider and the fitted view share one code path.
A result holds the parameters, the sandwich covariance (valid under a robust loss), the optimizer's
own report (status, message, iterations, active bounds: never swallowed), predictions and residuals
on the rows used, and metrics. Cheap metrics (in-sample, out-of-sample, walk-forward) are computed
when the result is built; the breakdowns by venue / symbol / side / size bucket are computed on
first access (`metrics`) so that building a result for a slider move on a million fills stays fast.

Sign conventions: `residuals_bps` = observed − predicted; `bias_bps` = mean(predicted − observed)
(> 0: the model over-predicts costs); `z` = residual / expected noise (1e4·sigma·√T).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Mapping

import numpy as np
import pandas as pd
from scipy import stats

from execal.models.core.frozen import freeze_arrays, readonly  # noqa: F401  (re-exported)
from execal.models.core.jsonable import clean
from execal.models.core.report import OptimizerReport
from execal.models.core.result import params_table, report_line
from execal.models.data.schema import ValidationReport
from execal.models.impact.config import config_dict, predict_segmented
from execal.models.impact.features import Features, impact_features

GROUP_METRICS = ("venue", "symbol", "side", "size_bucket")


def _num(x) -> float | None:
    """JSON-ready float: NaN/inf become None."""
    if x is None:
        return None
    x = float(x)
    return x if np.isfinite(x) else None


# --- metrics ---------------------------------------------------------------------------------

def error_metrics(observed: np.ndarray, predicted: np.ndarray,
                  expected_noise_bps: np.ndarray | None = None) -> dict:
    """RMSE, MAE, median absolute error, bias, R² (all in bps) and residual z-scores."""
    residual = observed - predicted
    ok = np.isfinite(residual)
    if not ok.all():
        residual, observed = residual[ok], observed[ok]
        if expected_noise_bps is not None:
            expected_noise_bps = expected_noise_bps[ok]
    n = int(residual.shape[0])
    out: dict[str, Any] = {"n": n}
    if n == 0:
        return out | {k: None for k in ("rmse_bps", "mae_bps", "median_abs_error_bps", "bias_bps",
                                         "r2", "z_mean", "z_std", "z_rms")}
    abs_res = np.abs(residual)
    sse = float(np.einsum("i,i->", residual, residual))   # einsum: no BLAS thread wake-ups
    centred = observed - observed.mean()
    sst = float(np.einsum("i,i->", centred, centred))
    out["rmse_bps"] = (sse / n) ** 0.5
    out["mae_bps"] = float(abs_res.mean())
    out["median_abs_error_bps"] = float(np.median(abs_res))
    out["bias_bps"] = -float(residual.mean())
    out["r2"] = 1.0 - sse / sst if sst > 0 else None
    if expected_noise_bps is not None:
        z = residual / expected_noise_bps
        z = z[np.isfinite(z)]
        out["z_mean"] = float(z.mean()) if z.size else None
        out["z_std"] = float(z.std(ddof=1)) if z.size > 1 else None
        out["z_rms"] = float(np.sqrt(np.mean(z * z))) if z.size else None
    else:
        out["z_mean"] = out["z_std"] = out["z_rms"] = None
    return {k: (_num(v) if isinstance(v, float) else v) for k, v in out.items()}


def group_metrics(codes: np.ndarray, labels, observed, predicted, expected_noise_bps=None,
                  *, max_median_groups: int = 200) -> dict[str, dict]:
    """`error_metrics` per group, vectorised with bincount (medians by mask for ≤ 200 groups)."""
    residual = observed - predicted
    ok = np.isfinite(residual) & (codes >= 0)
    codes, residual, observed = codes[ok], residual[ok], observed[ok]
    g = len(labels)
    n = np.bincount(codes, minlength=g).astype(np.float64)
    s_res = np.bincount(codes, residual, minlength=g)
    s_res2 = np.bincount(codes, residual * residual, minlength=g)
    s_abs = np.bincount(codes, np.abs(residual), minlength=g)
    s_obs = np.bincount(codes, observed, minlength=g)
    s_obs2 = np.bincount(codes, observed * observed, minlength=g)
    zs = None
    if expected_noise_bps is not None:
        z = residual / expected_noise_bps[ok]
        zok = np.isfinite(z)
        zc, z = codes[zok], z[zok]
        zs = (np.bincount(zc, minlength=g).astype(np.float64), np.bincount(zc, z, minlength=g),
              np.bincount(zc, z * z, minlength=g))
    out = {}
    for i, label in enumerate(labels):
        ni = n[i]
        if ni == 0:
            continue
        sst = s_obs2[i] - s_obs[i] ** 2 / ni
        m = {"n": int(ni), "rmse_bps": _num((s_res2[i] / ni) ** 0.5), "mae_bps": _num(s_abs[i] / ni),
             "median_abs_error_bps": None, "bias_bps": _num(-s_res[i] / ni),
             "r2": _num(1.0 - s_res2[i] / sst) if sst > 1e-12 * max(s_obs2[i], 1e-300) else None,
             "z_mean": None, "z_std": None, "z_rms": None}
        if zs is not None and zs[0][i] > 0:
            zn, z1, z2 = zs[0][i], zs[1][i], zs[2][i]
            m["z_mean"] = _num(z1 / zn)
            m["z_rms"] = _num((z2 / zn) ** 0.5)
            if zn > 1:
                m["z_std"] = _num((max(z2 - z1 * z1 / zn, 0.0) / (zn - 1)) ** 0.5)
        if g <= max_median_groups:
            m["median_abs_error_bps"] = _num(np.median(np.abs(residual[codes == i])))
        out[str(label)] = m
    return out


# --- reports ---------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class BootstrapResult:
    """Parameters refitted on resamples of whole clusters (days or order ids)."""
    by: str
    n: int
    seed: int
    clusters: int
    names: tuple[str, ...]
    samples: np.ndarray          # (n_ok, k) read-only; failed refits are excluded
    failures: int

    def conf_int(self, alpha: float = 0.05) -> dict[str, tuple[float, float]]:
        """Percentile intervals."""
        if self.samples.shape[0] == 0:
            return {k: (np.nan, np.nan) for k in self.names}
        lo, hi = np.quantile(self.samples, [alpha / 2, 1 - alpha / 2], axis=0)
        return {k: (float(a), float(b)) for k, a, b in zip(self.names, lo, hi)}

    @property
    def std_errors(self) -> dict[str, float]:
        sd = self.samples.std(axis=0, ddof=1) if self.samples.shape[0] > 1 else np.full(len(self.names), np.nan)
        return dict(zip(self.names, map(float, sd)))

    def to_dict(self, alpha: float = 0.05) -> dict:
        return {"by": self.by, "n": self.n, "seed": self.seed, "clusters": self.clusters,
                "failures": self.failures, "alpha": alpha,
                "std_errors": {k: _num(v) for k, v in self.std_errors.items()},
                "conf_int": {k: [_num(a), _num(b)] for k, (a, b) in self.conf_int(alpha).items()}}


# --- the result ------------------------------------------------------------------------------

class ParameterVector:
    """What every impact result derives from its full parameter vector `theta`, the names that were
    estimated (`free`) and their covariance: named params, the fixed ones, standard errors, normal
    intervals and the optimizer's verdict. `CalibrationResult` and the streamed result share it."""

    @property
    def params(self) -> dict[str, float]:
        return self.model.as_dict(self.theta)

    @property
    def fixed(self) -> tuple[str, ...]:
        return tuple(n for n in self.model.param_names if n not in self.free)

    @property
    def std_errors(self) -> dict[str, float]:
        se = np.sqrt(np.clip(np.diag(self.covariance), 0.0, None)) if self.covariance.size else []
        by_name = dict(zip(self.free, map(float, se)))
        return {n: by_name.get(n, np.nan) for n in self.model.param_names}

    def conf_int(self, alpha: float = 0.05) -> dict[str, tuple[float, float]]:
        """Normal-approximation intervals from the sandwich standard errors (NaN for fixed params)."""
        zcrit = float(stats.norm.ppf(1 - alpha / 2))
        se = self.std_errors
        return {n: (v - zcrit * se[n], v + zcrit * se[n]) for n, v in self.params.items()}

    @property
    def converged(self) -> bool:
        return bool(self.report.converged)


@dataclass(frozen=True, eq=False)
class CalibrationResult(ParameterVector):
    """An impact model with parameters, fitted (`status == "fitted"`) or set by hand ("fixed")."""
    model: Any                          # ImpactModel
    theta: np.ndarray                   # full parameter vector (model.params order), read-only
    free: tuple[str, ...]               # names that were estimated
    covariance: np.ndarray              # (k, k) over `free`, sandwich form; NaN when fixed
    report: OptimizerReport
    features: Features                  # the usable rows (train and test)
    is_train: np.ndarray                # bool per usable row
    predicted_bps: np.ndarray
    residuals_bps: np.ndarray           # observed − predicted (NaN without an observed cost)
    status: str                         # "fitted" | "fixed"
    participation: str
    weights: str
    validation: ValidationReport
    settings: Mapping = field(default_factory=dict)     # Calibrator.get_params()
    bounds: Mapping = field(default_factory=dict)       # {name: (lower, upper)} used
    out_of_sample: Mapping | None = None
    walk_forward: Mapping | None = None
    bootstrap: BootstrapResult | None = None
    _cache: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        freeze_arrays(self, ("theta", "covariance", "is_train", "predicted_bps", "residuals_bps"))

    @property
    def correlation(self) -> pd.DataFrame:
        cov = self.covariance
        sd = np.sqrt(np.clip(np.diag(cov), 0.0, None)) if cov.size else np.array([])
        with np.errstate(invalid="ignore", divide="ignore"):
            corr = cov / np.outer(sd, sd) if cov.size else cov
        return pd.DataFrame(corr, index=list(self.free), columns=list(self.free))

    # -- data views ---------------------------------------------------------------------------
    @property
    def n_train(self) -> int:
        return int(self.is_train.sum())

    @property
    def row_index(self) -> np.ndarray:
        """0-based position in the input of each row of `predicted_bps` / `residuals_bps`."""
        return self.features.row_index

    @property
    def observed_bps(self) -> np.ndarray | None:
        return self.features.cost_bps

    @property
    def in_sample(self) -> dict:
        if "in_sample" not in self._cache:
            self._cache["in_sample"] = self._metrics_on(self.is_train)
        return self._cache["in_sample"]

    def _metrics_on(self, mask) -> dict:
        f = self.features
        if f.cost_bps is None:
            return {"n": 0}
        if mask.all():
            noise = f.expected_noise_bps
            return error_metrics(f.cost_bps, self.predicted_bps, noise)
        noise = f.expected_noise_bps
        return error_metrics(f.cost_bps[mask], self.predicted_bps[mask],
                             None if noise is None else noise[mask])

    @property
    def metrics(self) -> dict:
        """{in_sample, out_of_sample, walk_forward, by_venue, by_symbol, by_side, by_size_bucket};
        breakdowns are over the in-sample rows and computed on first access."""
        if "metrics" not in self._cache:
            out = {"in_sample": self.in_sample, "out_of_sample": self.out_of_sample,
                   "walk_forward": self.walk_forward}
            f = self.features
            train = f if self.is_train.all() else f.take_rows(self.is_train)
            pred = self.predicted_bps if self.is_train.all() else self.predicted_bps[self.is_train]
            for name in GROUP_METRICS:
                grouping = train.group(name) if train.cost_bps is not None else None
                out[f"by_{name}"] = None if grouping is None else group_metrics(
                    grouping[0], grouping[1], train.cost_bps, pred, train.expected_noise_bps)
            self._cache["metrics"] = out
        return self._cache["metrics"]

    # -- use ----------------------------------------------------------------------------------
    def predict(self, fills) -> np.ndarray:
        """Expected cost (bps) of every row of `fills` (frame, mapping or `Features`); NaN where
        an input is missing."""
        features = fills if isinstance(fills, Features) else impact_features(
            getattr(fills, "frame", fills), self.participation)
        if features.participation_kind != self.participation:
            raise ValueError(f"these features use participation '{features.participation_kind}', "
                             f"the model was calibrated with '{self.participation}'")
        self.model.check(features)
        return self.model.predict(self.theta, features)

    def with_bootstrap(self, bootstrap: BootstrapResult) -> "CalibrationResult":
        return replace(self, bootstrap=bootstrap, _cache={})

    # -- the estimator contract ---------------------------------------------------------------
    @property
    def warnings(self) -> tuple[str, ...]:
        """Everything that needs care: the optimizer's warnings (not converged, at a bound, a
        non-positive-definite Hessian, few observations) and the data's (e.g. no timestamps)."""
        return tuple(dict.fromkeys([*self.report.warnings, *self.validation.warnings]))

    def to_dict(self, alpha: float = 0.05) -> dict:
        """JSON-ready: parameters with standard errors and intervals, the optimizer's report, the
        warnings, rows and in/out-of-sample metrics (the config adds provenance and breakdowns)."""
        return clean({
            "model": self.model.name, "label": self.model.label, "status": self.status,
            "converged": self.converged, "participation": self.participation, "weights": self.weights,
            "params": self.params, "std_errors": self.std_errors,
            "conf_int": {k: list(v) for k, v in self.conf_int(alpha).items()}, "alpha": alpha,
            "free": list(self.free), "fixed": list(self.fixed),
            "bounds": {k: list(v) for k, v in self.bounds.items()},
            "rows": {"in_sample": self.n_train, "out_of_sample": int(self.is_train.shape[0]) - self.n_train},
            "report": self.report.to_dict(), "warnings": list(self.warnings),
            "metrics": {"in_sample": self.in_sample, "out_of_sample": self.out_of_sample},
            "bootstrap": None if self.bootstrap is None else self.bootstrap.to_dict(alpha)})

    def to_config(self, provenance: Mapping | None = None) -> dict:
        return config_dict(self, provenance)

    def summary(self) -> str:
        """A plain-text table (what the CLI prints)."""
        rep = self.report
        lines = [f"{self.model.label} ({self.model.name}): {self.model.formula}",
                 f"status: {self.status}; optimizer {rep.method}, loss {rep.loss}, f_scale {rep.f_scale:g}, "
                 f"weights {rep.weights}; {rep.message}",
                 f"rows: {self.n_train} in-sample, {len(self.is_train) - self.n_train} out-of-sample"]
        lines += params_table(self.params, self.std_errors, self.conf_int(), fixed=self.fixed)
        if self.bootstrap is not None:
            lines.extend(bootstrap_lines(self.bootstrap))
        m = self.in_sample
        if m.get("n"):
            lines.append(f"in-sample: RMSE {m['rmse_bps']:.3f} bps, MAE {m['mae_bps']:.3f}, "
                         f"bias {m['bias_bps']:.3f}, R² {m['r2'] if m['r2'] is None else round(m['r2'], 4)}")
        oos = self.out_of_sample
        if oos and oos.get("n"):
            lines.append(f"out-of-sample ({oos['n']} rows): RMSE {oos['rmse_bps']:.3f} bps, "
                         f"bias {oos['bias_bps']:.3f}")
        for w in self.warnings:
            lines.append(f"warning: {w}")
        return "\n".join(lines)


def bootstrap_lines(boot: BootstrapResult, alpha: float = 0.05) -> list[str]:
    """The bootstrap intervals as summary lines."""
    ci = boot.conf_int(alpha)
    se = boot.std_errors
    head = (f"bootstrap: {boot.n} resamples of whole {boot.by}s ({boot.clusters} {boot.by}s"
            + (f", {boot.failures} refits failed" if boot.failures else "") + f"), percentile {1 - alpha:.0%} intervals:")
    return [head] + [f"  {k:<12}s.e. {se[k]:<10.4g} [{lo:.5g}, {hi:.5g}]" for k, (lo, hi) in ci.items()]


def segment_label(key: Mapping[str, str]) -> str:
    """"venue=okx, symbol=BTCUSDT": how a segment is named in messages, summaries and tables."""
    return ", ".join(f"{k}={v}" for k, v in dict(key).items())


@dataclass(frozen=True, eq=False)
class Segment:
    key: Mapping[str, str]
    result: CalibrationResult


@dataclass(frozen=True, eq=False)
class SegmentedResult:
    """One parameter set per segment plus the pooled fit, and the test of equal coefficients."""
    by: tuple[str, ...]
    pooled: CalibrationResult
    segments: tuple[Segment, ...]
    test: Mapping

    def segment(self, **key) -> CalibrationResult:
        for s in self.segments:
            if dict(s.key) == {k: str(v) for k, v in key.items()}:
                return s.result
        raise KeyError(f"no segment {key}")

    def predict(self, fills) -> np.ndarray:
        """Segment parameters where the row's segment was fitted, pooled parameters elsewhere."""
        return predict_segmented(self.pooled.model, self.pooled.theta,
                                 [(dict(s.key), s.result.theta) for s in self.segments], fills,
                                 self.pooled.participation)

    # -- the estimator contract: the pooled fit's parameters, every segment's status -------------
    @property
    def params(self) -> dict[str, float]:
        """The pooled parameters (each segment's: `segment(...)` or `segments[i].result`)."""
        return self.pooled.params

    @property
    def std_errors(self) -> dict[str, float]:
        return self.pooled.std_errors

    def conf_int(self, alpha: float = 0.05) -> dict[str, tuple[float, float]]:
        return self.pooled.conf_int(alpha)

    @property
    def report(self) -> OptimizerReport:
        """The pooled fit's report (each segment's is in its result)."""
        return self.pooled.report

    @property
    def status(self) -> str:
        return self.pooled.status

    @property
    def converged(self) -> bool:
        """The pooled fit and every segment's converged."""
        return self.pooled.converged and all(s.result.converged for s in self.segments)

    @property
    def warnings(self) -> tuple[str, ...]:
        """The pooled fit's warnings, then each segment's, prefixed with the segment's name."""
        return self.pooled.warnings + tuple(f"segment {segment_label(s.key)}: {w}"
                                            for s in self.segments for w in s.result.warnings)

    def summary(self) -> str:
        """The pooled fit, every segment (parameters ± s.e., interval, rows, status, its warnings),
        the tests of equal coefficients and the bootstrap intervals (what the CLI prints)."""
        lines = [f"segmented by {', '.join(self.by)}: {len(self.segments)} segments"
                 + ("" if self.converged else " — NOT every fit converged"),
                 "", "pooled fit (every row):", self.pooled.summary()]
        for s in self.segments:
            res = s.result
            lines += ["", f"segment {segment_label(s.key)}: {res.n_train} rows in-sample"
                      + (f", {res.features.n - res.n_train} held out" if res.features.n > res.n_train else ""),
                      report_line(res.report)]
            lines += params_table(res.params, res.std_errors, res.conf_int(), fixed=res.fixed)
            m = res.in_sample
            if m.get("n"):
                lines.append(f"in-sample: RMSE {m['rmse_bps']:.3f} bps, bias {m['bias_bps']:.3f}")
            lines += [f"warning: {w}" for w in res.warnings]
        lines += ["", *segment_test_lines(self.test)]
        return "\n".join(lines)

    def to_dict(self, alpha: float = 0.05) -> dict:
        return clean({"by": list(self.by), "converged": self.converged, "warnings": list(self.warnings),
                      "pooled": self.pooled.to_dict(alpha),
                      "segments": [{"key": dict(s.key), **s.result.to_dict(alpha)} for s in self.segments],
                      "segment_test": dict(self.test)})

    def to_config(self, provenance: Mapping | None = None) -> dict:
        return config_dict(self, provenance)


def segment_test_lines(test: Mapping | None) -> list[str]:
    """The equal-coefficients tests as summary lines."""
    test = dict(test or {})
    lines = [f"H0: {test.get('hypothesis', 'the segments share the parameters')}"]
    wald, chow = test.get("wald"), test.get("chow")
    if wald:
        lines.append(f"Wald test (sandwich covariances): chi2 = {wald['statistic']:.4g}, df {wald['df']}, "
                     f"p = {wald['p_value']:.3g}")
    if chow:
        lines.append(f"Chow F test (weighted residual sums of squares): F = {chow['statistic']:.4g}, "
                     f"df ({chow['df1']}, {chow['df2']}), p = {chow['p_value']:.3g}")
    if not wald and not chow:
        lines.append("no test: " + str(test.get("note", "the covariance is singular")))
    return lines
