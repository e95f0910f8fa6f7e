"""The calibrator: fit an impact model to fills with a registered optimizer, loss and weighting.

scikit-learn's contract: settings in `Calibrator(...)`, learning in `fit(fills)`, `get_params()`.
arch's split: `fit` and `fix` both return an immutable `CalibrationResult`.

The objective. With r = w·(model(theta) − cost_bps) (w = weights: none, 1/expected noise, or a
user column) and z = (r/f_scale)², the optimizers minimise ½·Σ f_scale²·rho(z): exactly scipy's
`least_squares` objective. Optimizers: scipy `least_squares` (trf, dogbox, lm); `lm_normal`, a
Levenberg–Marquardt on the p×p normal equations with the robust loss as IRLS weights (what the
bootstrap uses, and the fast choice on millions of rows: it reproduces trf's solution to < 1e-6);
differential evolution then a trf polish; multistart.

Standard errors are the sandwich A⁻¹BA⁻¹·n/(n−k) with A = Jᵀ diag(rho' + 2 rho'' z) J (the
Gauss-Newton Hessian of the robust cost) and B = Jᵀ diag((rho'·r)²) J: valid under a robust loss
and heteroskedastic noise (HC1 for plain least squares).
"""
from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
from scipy import optimize, stats

from execal.models.core.errors import CalibrationError, CalibrationWarning
from execal.models.core.registry import LOSSES, OPTIMIZERS, WEIGHTS, get_model
from execal.models.core.report import OptimizerReport
from execal.models.impact.config import load_config
from execal.models.impact.features import Features, impact_features
from execal.models.impact.result import (BootstrapResult, CalibrationResult, Segment, SegmentedResult,
                                        error_metrics)
from execal.models.data.schema import DataError, Dataset, DropRecord, ValidationReport

EPS = np.finfo(float).eps
DEFAULT_TOL = 1e-10
TERMINATION_MESSAGES = {   # scipy.optimize.least_squares' own wording, reused by lm_normal
    -1: "Improper input parameters status returned from `leastsq`",
    0: "The maximum number of function evaluations is exceeded.",
    1: "`gtol` termination condition is satisfied.",
    2: "`ftol` termination condition is satisfied.",
    3: "`xtol` termination condition is satisfied.",
    4: "Both `ftol` and `xtol` termination conditions are satisfied.",
}


# Below this many usable rows per free parameter a fit carries a "few observations" warning: the
# sandwich intervals are too narrow there. Measured by `python -m bench.study_coverage` (2,000
# simulated samples a cell, Student-t(4) noise, the default calibrator; table in docs/notes/NOTES-contract.md):
# nominal 95 % intervals covered 77-92 % at 15-30 rows per parameter (sqrt 30 rows: 0.848; power
# law 30 rows: Y 0.878, delta 0.897), and 89-96 % at 50 (sqrt 0.88-0.90, power law 0.91-0.93,
# Almgren 0.92-0.96); more rows buy little after that (power law at 150 per parameter: 0.93-0.94).
MIN_ROWS_PER_PARAMETER = 50
TIME_VARYING = ("time_varying", "online")     # optimizer strategies that learn a path (timevarying.py)

# settings that define the objective: a bootstrap must refit the same one
_OBJECTIVE_SETTINGS = ("model", "loss", "f_scale", "weights", "weight_column", "fixed", "bounds",
                       "participation", "free", "test_fraction")


# --- the objective ---------------------------------------------------------------------------

@dataclass(eq=False)
class _Problem:
    model: Any
    features: Features
    y: np.ndarray                    # observed cost, bps
    w: np.ndarray | None             # residual weights
    theta: np.ndarray                # full vector; fixed entries are used as is
    free: np.ndarray                 # indices of the free parameters
    lo: np.ndarray
    hi: np.ndarray
    loss: str
    f_scale: float
    m: np.ndarray | None = None      # frequency weights (bootstrap multiplicities)

    @property
    def k(self) -> int:
        return int(self.free.size)

    @property
    def n_eff(self) -> float:
        return float(self.y.shape[0] if self.m is None else self.m.sum())

    def full(self, x) -> np.ndarray:
        t = self.theta.copy()
        t[self.free] = x
        return t

    def residuals(self, x) -> np.ndarray:
        r = self.model.predict(self.full(x), self.features)
        r -= self.y
        if self.w is not None:
            r *= self.w
        return r

    def jac(self, x) -> np.ndarray:
        j = self.model.jacobian(self.full(x), self.features, self.free)
        if self.w is not None:
            j *= self.w[:, None]
        return j

    def rho(self, r):
        """(cost, rho', rho'', z) of residuals r."""
        c2 = self.f_scale ** 2
        z = r * r
        z /= c2
        rho, rho1, rho2 = LOSSES[self.loss].rho(z)
        if self.m is not None:
            cost = 0.5 * c2 * float(np.einsum("i,i->", rho, self.m))   # not BLAS: see _lm_normal
        else:
            cost = 0.5 * c2 * float(rho.sum())
        return cost, rho1, rho2, z

    def cost(self, x) -> float:
        return self.rho(self.residuals(x))[0]

    def take(self, idx, m=None) -> "_Problem":
        return dataclasses.replace(self, features=self.features.take_rows(idx, labels=False), y=self.y[idx],
                                   w=None if self.w is None else self.w[idx], m=m)


@dataclass
class _Solution:
    x: np.ndarray
    status: int
    message: str
    success: bool
    nfev: int
    njev: int | None
    iterations: int | None
    cost: float
    active: np.ndarray               # -1 lower, +1 upper, 0 free (per free parameter)
    starts: tuple = ()
    extra_warnings: tuple = ()
    state: tuple | None = None       # (r, rho', rho'', z) at x, when the solver has them


def few_rows_warning(n_rows: int, k: int) -> str:
    """The warning of a fit on fewer than MIN_ROWS_PER_PARAMETER usable rows per free parameter."""
    return (f"few observations: {n_rows} row(s) for {k} free parameter(s), {n_rows / k:.3g} per parameter "
            f"(fewer than {MIN_ROWS_PER_PARAMETER}): at this size the nominal 95 % intervals are too "
            "narrow (in simulation they covered the truth 77-92 % of the time at 15-30 rows per "
            "parameter); treat the standard errors as optimistic, or bootstrap by day")


def _active_mask(x, lo, hi) -> np.ndarray:
    tol = 1e-10 * np.maximum(1.0, np.abs(x))
    out = np.zeros(x.shape, dtype=int)
    out[x <= lo + tol] = -1
    out[x >= hi - tol] = 1
    return out


# --- optimizers ------------------------------------------------------------------------------

def _least_squares(prob: _Problem, x0, method: str, max_nfev, tol) -> _Solution:
    bounds = (prob.lo, prob.hi) if method != "lm" else (-np.inf, np.inf)
    res = optimize.least_squares(prob.residuals, x0, jac=prob.jac, bounds=bounds, method=method,
                                 loss=prob.loss if method != "lm" else "linear",
                                 f_scale=prob.f_scale, x_scale="jac", ftol=tol, xtol=tol, gtol=tol,
                                 max_nfev=max_nfev)
    cost = prob.rho(res.fun)[0]
    active = np.asarray(res.active_mask, dtype=int) if method != "lm" else _active_mask(res.x, prob.lo, prob.hi)
    return _Solution(res.x, int(res.status), str(res.message), bool(res.success), int(res.nfev),
                     None if res.njev is None else int(res.njev),
                     None if res.njev is None else int(res.njev), cost, active)


def _lm_normal(prob: _Problem, x0, max_nfev=None, tol=DEFAULT_TOL) -> _Solution:
    """Levenberg–Marquardt on the k×k normal equations, robust loss as IRLS weights (`lm_solve`
    on rows in memory)."""

    def evaluate(x):
        r = prob.residuals(x)
        cost, rho1, rho2, z = prob.rho(r)
        return cost, (r, rho1, rho2, z)

    def normal(x, state):
        r, rho1, rho2, z = state
        J = prob.jac(x)
        psi = rho1 * r
        gn = rho2 * z
        gn *= 2.0
        gn += rho1
        np.maximum(gn, EPS, out=gn)
        if prob.m is not None:
            psi *= prob.m
            gn *= prob.m
        # einsum rather than BLAS: k is 1-6, and OpenBLAS thread wake-ups cost more than the work
        JT = J.T
        g = np.einsum("kn,n->k", JT, psi)
        H = np.einsum("kn,jn->kj", JT * gn, JT)
        return g, H
    return lm_solve(evaluate, normal, x0, prob.lo, prob.hi, max_nfev, tol)


def lm_solve(evaluate, normal, x0, lo, hi, max_nfev=None, tol=DEFAULT_TOL) -> _Solution:
    """Levenberg–Marquardt on the k×k normal equations, robust loss as IRLS weights.

    Same objective, Gauss-Newton model (scipy's rho' + 2rho''z weights, clipped at EPS) and
    termination tests (ftol on the relative cost decrease with a good model fit, xtol on the step)
    as scipy's trf; bounds by projection with an active set (a parameter at a bound whose gradient
    points outward is held there).

    The data enter only through `evaluate(x) -> (cost, state)` and `normal(x, state) -> (g, H)`
    (gradient Jᵀψ and Gauss-Newton matrix Jᵀ diag(max(rho'+2rho''z, EPS)) J at an x that
    `evaluate` has seen): rows in memory (`_lm_normal`) or sums streamed from a dataset
    (execal.models.impact.outofcore), which then follow the same path.
    """
    k = len(lo)
    max_nfev = max_nfev or 100 * max(k, 1)
    x = np.clip(np.asarray(x0, dtype=np.float64), lo, hi)
    cost, state = evaluate(x)
    nfev, njev, iterations = 1, 0, 0
    lam, nu = 1e-6, 2.0
    status = None
    while status is None:
        g, H = normal(x, state)
        njev += 1
        active = ((x <= lo) & (g > 0)) | ((x >= hi) & (g < 0))
        free = ~active
        scale = np.sqrt(np.maximum(np.diag(H), EPS)) * np.sqrt(max(2.0 * cost, EPS))
        if not free.any() or np.max(np.abs(g[free]) / scale[free]) < tol:
            status = 1
            break
        Hf = H[np.ix_(free, free)]
        dH = np.maximum(np.diag(Hf), EPS)
        while True:
            A = Hf + np.diag(lam * dH)
            try:
                step_f = np.linalg.solve(A, -g[free])
            except np.linalg.LinAlgError:
                step_f = np.linalg.lstsq(A, -g[free], rcond=None)[0]
            step = np.zeros(k)
            step[free] = step_f
            x_new = np.clip(x + step, lo, hi)
            d = x_new - x
            cost_new, state_new = evaluate(x_new)
            nfev += 1
            predicted = -(g @ d + 0.5 * d @ H @ d)
            actual = cost - cost_new
            ratio = actual / predicted if predicted > 0 else (-1.0 if actual <= 0 else 1.0)
            d_norm, x_norm = np.linalg.norm(d), np.linalg.norm(x_new)
            if 0 <= predicted <= tol * cost and abs(actual) <= tol * cost:
                # MINPACK's ftol test: neither the model nor the data promise a relative decrease
                # above ftol; further steps only chase rounding noise. The step is taken whatever
                # the sign of `actual`: at this size the sign is rounding (it differs between two
                # summation orders of the same rows), while the step itself comes from the
                # gradient, which still carries information. So a fit from streamed sums follows
                # the in-memory path to the end (execal.models.impact.outofcore).
                x, cost, state = x_new, cost_new, state_new
                iterations += 1
                status = 2
                break
            if ratio > 1e-4 and np.isfinite(cost_new):
                lam *= max(1.0 / 3.0, 1.0 - (2.0 * ratio - 1.0) ** 3)
                nu = 2.0
                iterations += 1
                ftol_ok = actual < tol * cost and ratio > 0.25
                xtol_ok = d_norm < tol * (tol + x_norm)
                x, cost, state = x_new, cost_new, state_new
                if ftol_ok and xtol_ok:
                    status = 4
                elif ftol_ok:
                    status = 2
                elif xtol_ok:
                    status = 3
                elif nfev >= max_nfev:
                    status = 0
                break
            lam *= nu
            nu *= 2.0
            if d_norm < tol * (tol + np.linalg.norm(x)):
                status = 3
                break
            if nfev >= max_nfev:
                status = 0
                break
    return _Solution(x, status, TERMINATION_MESSAGES[status], status > 0, nfev, njev, iterations,
                     cost, _active_mask(x, lo, hi), state=state)


def _local(prob, x0, method, max_nfev, tol) -> _Solution:
    if method == "lm_normal":
        return _lm_normal(prob, x0, max_nfev, tol)
    return _least_squares(prob, x0, method, max_nfev, tol)


def _require_finite_bounds(prob: _Problem, what: str) -> None:
    if not (np.isfinite(prob.lo).all() and np.isfinite(prob.hi).all()):
        names = [prob.model.params[i].name for i in prob.free]
        raise CalibrationError(f"{what} needs finite bounds for every free parameter ({', '.join(names)})")


def _differential_evolution(prob, x0, options, seed, max_nfev, tol) -> _Solution:
    _require_finite_bounds(prob, "differential_evolution")
    n = prob.y.shape[0]
    sub_size = int(options.get("subsample", 50_000))
    sub = prob if n <= sub_size else prob.take(np.linspace(0, n - 1, sub_size).astype(np.int64))

    def objective(x):
        c = sub.cost(x)
        return c if np.isfinite(c) else 1e300
    de = optimize.differential_evolution(
        objective, bounds=list(zip(prob.lo, prob.hi)), seed=seed, polish=False,
        maxiter=int(options.get("maxiter", 100)), popsize=int(options.get("popsize", 15)),
        init="latinhypercube", x0=np.clip(x0, prob.lo, prob.hi), tol=1e-8)
    polish = _least_squares(prob, np.clip(de.x, prob.lo, prob.hi), "trf", max_nfev, tol)
    stage = {"stage": "global", "method": "differential_evolution", "rows": int(sub.y.shape[0]),
             "nit": int(de.nit), "nfev": int(de.nfev), "message": str(de.message),
             "x": [float(v) for v in de.x], "cost_on_rows": float(de.fun)}
    return dataclasses.replace(polish, nfev=polish.nfev + int(de.nfev), starts=(stage,))


def _multistart(prob, x0, local, starts, seed, max_nfev, tol) -> _Solution:
    _require_finite_bounds(prob, "multistart")
    sampler = stats.qmc.LatinHypercube(d=prob.k, seed=seed)
    points = stats.qmc.scale(sampler.random(starts), prob.lo, prob.hi) if prob.k else np.empty((0, 0))
    candidates = [np.clip(x0, prob.lo, prob.hi)] + [p for p in points]
    best, log, nfev = None, [], 0
    for i, start in enumerate(candidates):
        sol = _local(prob, start, local, max_nfev, tol)
        nfev += sol.nfev
        log.append({"start": i, "x0": [float(v) for v in start], "x": [float(v) for v in sol.x],
                    "cost": float(sol.cost), "status": sol.status})
        if np.isfinite(sol.cost) and (best is None or sol.cost < best.cost):
            best = sol
    if best is None:
        best = sol
    return dataclasses.replace(best, nfev=nfev, starts=tuple(log))


# --- covariance ------------------------------------------------------------------------------

def sandwich_covariance(prob: _Problem, x, state=None) -> tuple[np.ndarray, list[str]]:
    """A⁻¹BA⁻¹·n/(n−k) of the robust M-estimator at x (see module docstring); `state` =
    (r, rho', rho'', z) at x when the solver already has them."""
    notes = []
    k = prob.k
    if k == 0:
        return np.empty((0, 0)), notes
    if state is None:
        r = prob.residuals(x)
        _, rho1, rho2, z = prob.rho(r)
    else:
        r, rho1, rho2, z = state
    J = prob.jac(x)
    m = np.ones_like(r) if prob.m is None else prob.m
    psi = rho1 * r
    a_w = (rho1 + 2.0 * rho2 * z) * m
    JT = J.T
    A = np.einsum("kn,jn->kj", JT * a_w, JT)
    eig = np.linalg.eigvalsh(A) if np.isfinite(A).all() else np.array([-1.0])
    if eig.min() <= 1e-12 * max(eig.max(), EPS):
        # cauchy/arctan can make the exact Hessian indefinite: use the IRLS (rho') form instead
        A = np.einsum("kn,jn->kj", JT * (rho1 * m), JT)
        notes.append("robust-loss Hessian not positive definite: standard errors use the IRLS form")
    B = np.einsum("kn,jn->kj", JT * (psi * psi * m), JT)
    n = prob.n_eff
    try:
        Ainv = np.linalg.inv(A)
    except np.linalg.LinAlgError:
        notes.append("singular Jacobian: parameters are not identified, standard errors are NaN")
        return np.full((k, k), np.nan), notes
    cov = Ainv @ B @ Ainv * (n / max(n - k, 1.0))
    if not np.isfinite(cov).all() or (np.diag(cov) < 0).any():
        notes.append("covariance is not finite: parameters are poorly identified")
    return 0.5 * (cov + cov.T), notes


# --- the calibrator --------------------------------------------------------------------------

class Calibrator:
    """Settings of one calibration (validated here, so a bad choice fails before any data is read).

    `test_fraction` holds out the latest share of the rows (by timestamp, else row order) for
    out-of-sample metrics; `walk_forward=k` splits all usable rows into k+1 time blocks and fits on
    blocks [0, i) to predict block i (expanding window). `free` names default-fixed parameters to
    estimate (e.g. ("h",) to fit the spread coefficient); `max_nfev` caps function evaluations;
    `tol` is ftol = xtol = gtol (1e-10: tight enough that every solver lands on the same optimum
    to 1e-6); `options` holds optimizer-specific settings from the registry (e.g. {"starts": 16},
    {"maxiter": 200, "subsample": 20000}).

    The default optimizer is 'lm_normal': it reaches scipy 'trf''s optimum (to 1e-6, tested for
    every loss) 3-5× faster on a million fills, and is what `bootstrap` uses for its refits;
    scipy's 'trf', 'dogbox' and 'lm' stay selectable as the reference.
    """

    def __init__(self, model: str = "power_law", optimizer: str = "lm_normal", loss: str = "soft_l1",
                 f_scale: float = 1.0, weights: str = "auto", weight_column: str | None = None,
                 fixed: Mapping[str, float] | None = None,
                 bounds: Mapping[str, Sequence[float]] | None = None,
                 participation: str = "adv", test_fraction: float = 0.0, walk_forward: int = 0,
                 multistart: int = 0, seed: int = 0, *, free: Sequence[str] = (),
                 max_nfev: int | None = None, tol: float = DEFAULT_TOL,
                 options: Mapping[str, Any] | None = None):
        try:
            self.model = get_model(model)
        except ValueError as err:
            raise CalibrationError(str(err)) from None
        self.optimizer = optimizer
        self.loss = loss
        self.f_scale = float(f_scale)
        self.weights = weights
        self.weight_column = weight_column
        self.fixed = dict(fixed or {})
        self.bounds = {k: tuple(v) for k, v in (bounds or {}).items()}
        self.participation = participation
        self.test_fraction = float(test_fraction)
        self.walk_forward = int(walk_forward)
        self.multistart = int(multistart)
        self.seed = int(seed)
        self.free = tuple(free)
        self.max_nfev = None if not max_nfev else int(max_nfev)
        self.tol = float(tol)
        self.options = dict(options or {})
        # max_nfev is listed among every optimizer's options in the registry (so the UI and CLI
        # offer it); it has one home here.
        nfev_option = self.options.pop("max_nfev", None)
        if nfev_option and not self.max_nfev:
            self.max_nfev = int(nfev_option)
        self._validate()

    # -- settings -----------------------------------------------------------------------------
    def _validate(self) -> None:
        def choice(value, allowed, what):
            if value not in allowed:
                raise CalibrationError(f"unknown {what} {value!r} (available: {', '.join(allowed)})")
        choice(self.optimizer, OPTIMIZERS, "optimizer")
        choice(self.loss, LOSSES, "loss")
        choice(self.weights, WEIGHTS, "weights")
        choice(self.participation, ("adv", "horizon"), "participation")
        spec = OPTIMIZERS[self.optimizer]
        if self.loss not in spec.losses:
            raise CalibrationError(f"optimizer '{self.optimizer}' supports only loss "
                                   f"{', '.join(map(repr, spec.losses))}, not '{self.loss}'")
        if not (self.f_scale > 0 and np.isfinite(self.f_scale)):
            raise CalibrationError(f"f_scale must be a positive number, got {self.f_scale}")
        if self.weights == "column" and not self.weight_column:
            raise CalibrationError("weights='column' needs weight_column (the column name)")
        if not 0.0 <= self.test_fraction < 1.0:
            raise CalibrationError(f"test_fraction must be in [0, 1), got {self.test_fraction}")
        if self.walk_forward < 0 or self.multistart < 0:
            raise CalibrationError("walk_forward and multistart must be ≥ 0")
        names = self.model.param_names
        for what, keys in (("fixed", self.fixed), ("bounds", self.bounds), ("free", self.free)):
            unknown = [k for k in keys if k not in names]
            if unknown:
                raise CalibrationError(f"{what}: model '{self.model.name}' has no parameter(s) "
                                       f"{', '.join(map(repr, unknown))} (parameters: {', '.join(names)})")
        for name, value in self.fixed.items():
            if not np.isfinite(float(value)):
                raise CalibrationError(f"fixed value of '{name}' must be a finite number, got {value!r}")
        for name, b in self.bounds.items():
            try:
                lo, hi = (-np.inf if b[0] is None else float(b[0])), (np.inf if b[1] is None else float(b[1]))
                ok = len(b) == 2 and lo < hi
            except (TypeError, ValueError, IndexError):
                ok = False
            if not ok:
                raise CalibrationError(f"bounds of '{name}' must be (lower, upper) with lower < upper "
                                       f"(None for no bound), got {b!r}")
        allowed_opts = {p.name for p in spec.params}
        unknown = [k for k in self.options if k not in allowed_opts]
        if unknown:
            raise CalibrationError(f"optimizer '{self.optimizer}' has no option(s) {', '.join(unknown)} "
                                   f"(options: {', '.join(sorted(allowed_opts)) or 'none'})")

    def get_params(self) -> dict:
        """The settings, JSON-ready (scikit-learn's contract; also stored in every result)."""
        return {"model": self.model.name, "optimizer": self.optimizer, "loss": self.loss,
                "f_scale": self.f_scale, "weights": self.weights, "weight_column": self.weight_column,
                "fixed": dict(self.fixed), "bounds": {k: list(v) for k, v in self.bounds.items()},
                "participation": self.participation, "test_fraction": self.test_fraction,
                "walk_forward": self.walk_forward, "multistart": self.multistart, "seed": self.seed,
                "free": list(self.free), "max_nfev": self.max_nfev, "tol": self.tol,
                "options": dict(self.options)}

    def set_params(self, **changes) -> "Calibrator":
        """A new Calibrator with some settings changed (this one is left as it is)."""
        params = self.get_params() | changes
        return Calibrator(**params)

    def _free_and_theta(self, features: Features) -> tuple[np.ndarray, np.ndarray]:
        theta = self.model.defaults
        free = []
        for i, p in enumerate(self.model.params):
            if p.name in self.fixed:
                theta[i] = float(self.fixed[p.name])
            elif not p.fixed or p.name in self.free:
                free.append(i)
        if 0 in free and features.spread_bps is None:
            raise CalibrationError("the spread coefficient 'h' cannot be fitted: the data has no "
                                   "'spread_bps' column")
        return np.array(free, dtype=np.int64), theta

    def _bounds(self, free) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = [], []
        for i in free:
            p = self.model.params[i]
            b = self.bounds.get(p.name, (p.lower, p.upper))
            lo.append(-np.inf if b[0] is None else float(b[0]))
            hi.append(np.inf if b[1] is None else float(b[1]))
        return np.array(lo), np.array(hi)

    # -- data ---------------------------------------------------------------------------------
    def features(self, fills, cost_bps=None) -> Features:
        """`Features` of `fills` (a frame, a `Dataset`, a {name: array} mapping or `Features`)
        for this calibrator's model: prepare once, then fit/fix many times (the tweak slider)."""
        extra = (self.weight_column,) if self.weights == "column" else ()
        if isinstance(fills, Features):
            features = fills
            if features.participation_kind != self.participation:
                raise CalibrationError(f"features were built with participation "
                                       f"'{features.participation_kind}', the calibrator uses "
                                       f"'{self.participation}'")
            if extra and extra[0] not in features.extra:
                raise DataError(f"no column '{extra[0]}' for weights='column'", column=extra[0])
        elif isinstance(fills, Dataset):
            features = impact_features(fills.frame, self.participation, source=fills.source,
                                       extra_columns=extra)
        else:
            features = impact_features(fills, self.participation, extra_columns=extra)
        if cost_bps is not None:
            cost = np.ascontiguousarray(cost_bps, dtype=np.float64).reshape(-1)
            if cost.shape[0] != features.n:
                raise DataError(f"cost_bps has {cost.shape[0]} values for {features.n} rows")
            features = dataclasses.replace(features, cost_bps=cost)
        self.model.check(features)
        return features

    def _weights_name(self, features: Features) -> str:
        if self.weights == "auto":
            return "noise" if features.sigma is not None and features.T_days is not None else "none"
        if self.weights == "noise" and (features.sigma is None or features.T_days is None):
            missing = [c for c, a in (("volatility", features.sigma), ("duration_s", features.T_days))
                       if a is None]
            raise DataError(f"weights='noise' (1/(sigma·√T)) needs column(s) {', '.join(missing)}",
                            file=features.source, column=missing[0])
        return self.weights

    def _usable(self, features: Features, *, need_cost: bool) -> tuple[Features, ValidationReport, str]:
        """Drop rows the model cannot use, counting each row once under its first reason."""
        n = features.n
        weights = self._weights_name(features)
        keep, drops = self._usable_mask(features, weights, need_cost=need_cost)
        report = ValidationReport(rows_read=n)
        for reason, column, bad in drops:
            rows = (features.row_index[np.flatnonzero(bad)[:5]] + 1).tolist()
            report.dropped.append(DropRecord(reason, column, int(bad.sum()), rows))
        report.rows_kept = int(keep.sum())
        if report.rows_kept == 0:
            why = "; ".join(f"{d.count} {d.reason} (column '{d.column}', rows "
                            f"{', '.join(map(str, d.first_rows))})" for d in report.dropped)
            raise CalibrationError(f"no usable rows out of {n}: {why or 'the data is empty'}")
        if report.rows_kept < n:
            features = features.take_rows(keep)
        return features, report, weights

    def _usable_mask(self, features: Features, weights: str, *,
                     need_cost: bool) -> tuple[np.ndarray, list[tuple[str, str, np.ndarray]]]:
        """(rows the model can use, [(reason, column, rows dropped for it)]): each row is dropped
        under the first check it fails, in a fixed order of checks."""
        n = features.n
        checks = []
        checks.append(("participation must be a positive number", "quantity/adv" if
                       features.participation_kind == "adv" else "quantity/market_volume",
                       features.participation, "positive"))
        needs = set(self.model.needs) | ({"sigma", "T_days"} if weights == "noise" else set())
        if "sigma" in needs:
            checks.append(("volatility missing or not positive", "volatility", features.sigma, "positive"))
        if "T_days" in needs:
            checks.append(("duration missing or not positive", "duration_s", features.T_days, "positive"))
        if "pov" in needs:
            checks.append(("POV missing or outside (0, 1]", "market_volume", features.pov, "pov"))
        if features.spread_bps is not None:
            checks.append(("spread missing or negative", "spread_bps", features.spread_bps, "nonneg"))
        if need_cost:
            if features.cost_bps is None:
                raise DataError("fitting needs the observed cost: a 'cost_bps' column, or 'side', "
                                "'arrival_price' and 'exec_price'", file=features.source)
            checks.append(("cost missing", "cost_bps", features.cost_bps, "finite"))
        if weights == "column":
            checks.append(("weight missing or negative", self.weight_column,
                           features.extra[self.weight_column], "nonneg"))
        keep = np.ones(n, dtype=bool)
        drops = []
        for reason, column, values, rule in checks:
            with np.errstate(invalid="ignore"):
                if rule == "positive":
                    good = values > 0
                elif rule == "nonneg":
                    good = values >= 0
                elif rule == "pov":
                    good = (values > 0) & (values <= 1)
                else:
                    good = np.isfinite(values)
                good &= np.isfinite(values)
            bad = keep & ~good
            if bad.any():
                drops.append((reason, column, bad))
                keep &= good
        return keep, drops

    def _residual_weights(self, features: Features, weights: str) -> np.ndarray | None:
        if weights == "noise":
            return 1.0 / features.expected_noise_bps
        if weights == "column":
            return features.extra[self.weight_column]
        return None

    @staticmethod
    def _time_order(features: Features) -> np.ndarray:
        if features.timestamp_ns is None:
            return np.arange(features.n)
        return np.argsort(features.timestamp_ns, kind="stable")

    # -- core ---------------------------------------------------------------------------------
    def _problem(self, features: Features, weights: str) -> _Problem:
        free, theta = self._free_and_theta(features)
        lo, hi = self._bounds(free)
        return _Problem(self.model, features, features.cost_bps,
                        self._residual_weights(features, weights), theta, free, lo, hi,
                        self.loss, self.f_scale)

    def _check_identifiable(self, prob: _Problem) -> None:
        n, k = prob.y.shape[0], prob.k
        names = [self.model.params[i].name for i in prob.free]
        if n <= k:
            raise CalibrationError(f"{n} usable row(s) for {k} free parameter(s) ({', '.join(names)}) "
                                   f"of model '{self.model.name}': need more rows than parameters")
        p = prob.features.participation
        if k and float(p.max() - p.min()) <= 1e-12 * float(abs(p).max()):
            raise CalibrationError(f"no variation in order size: all {n} orders have participation "
                                   f"Q/V = {p[0]:.6g}; impact cannot be calibrated against size")
        if prob.w is not None and not (prob.w > 0).any():
            raise CalibrationError("every weight is zero")

    def _solve(self, prob: _Problem, seed: int) -> _Solution:
        x0 = self.model.start(prob.features, prob.y, prob.w, prob.theta, prob.free)[prob.free]
        x0 = np.clip(x0, prob.lo, prob.hi)
        if prob.k == 0:
            cost = prob.cost(x0)
            return _Solution(x0, 1, "no free parameters: nothing to optimise", True, 1, 0, 0, cost,
                             np.zeros(0, dtype=int))
        method = self.optimizer
        if method == "differential_evolution":
            return _differential_evolution(prob, x0, self.options, seed, self.max_nfev, self.tol)
        if method == "multistart" or self.multistart:
            local = "trf" if method == "multistart" else method
            starts = int(self.options.get("starts", self.multistart or 8))
            return _multistart(prob, x0, local, starts, seed, self.max_nfev, self.tol)
        return _local(prob, x0, method, self.max_nfev, self.tol)

    def _report(self, prob: _Problem, sol: _Solution, weights: str, notes: list[str], n_rows: int | None = None) -> OptimizerReport:
        names = [self.model.params[i].name for i in prob.free]
        active = []
        for name, a, lo, hi in zip(names, sol.active, prob.lo, prob.hi):
            if a == -1:
                active.append(f"{name} at lower bound {lo:g}")
            elif a == 1:
                active.append(f"{name} at upper bound {hi:g}")
        warn = list(sol.extra_warnings) + notes
        if not sol.success:
            warn.insert(0, f"the optimizer did not converge (status {sol.status}: {sol.message}); "
                           f"the parameters are where it stopped, not an optimum")
        if active:
            warn.append("parameter(s) at a bound: " + "; ".join(active)
                        + " (standard errors there are not reliable)")
        n_rows, k = (int(prob.y.shape[0]) if n_rows is None else int(n_rows)), prob.k
        if k and n_rows < MIN_ROWS_PER_PARAMETER * k:
            warn.append(few_rows_warning(n_rows, k))
        if self.optimizer == "lm":
            outside = [f"{n} = {v:.6g} outside [{lo:g}, {hi:g}]" for n, v, lo, hi
                       in zip(names, sol.x, prob.lo, prob.hi) if not lo <= v <= hi]
            if outside:
                warn.append("method 'lm' ignores bounds: " + "; ".join(outside))
        return OptimizerReport(
            method=self.optimizer, loss=self.loss, f_scale=self.f_scale, weights=weights,
            status=sol.status, message=sol.message, success=sol.success, converged=sol.success,
            nfev=sol.nfev, njev=sol.njev, iterations=sol.iterations, cost=sol.cost,
            active_bounds=tuple(active), warnings=tuple(warn), starts=sol.starts,
            settings={"tol": self.tol, "max_nfev": self.max_nfev, "x_scale": "jac",
                      "multistart": self.multistart, "seed": self.seed, **self.options})

    # -- public -------------------------------------------------------------------------------
    def _refuse_time_varying(self, what: str) -> None:
        if OPTIMIZERS[self.optimizer].strategy in TIME_VARYING:
            raise CalibrationError(
                f"optimizer '{self.optimizer}' learns a path of parameters over time, not one set: "
                f"{what} it with TimeVaryingCalibrator(method='{self.optimizer}', ...) "
                "(execal.TimeVaryingCalibrator, or TimeVaryingCalibrator.from_calibrator(calibrator)), "
                "whose result keeps the path; its .result is the final state as a CalibrationResult")

    def fit(self, fills, cost_bps=None) -> CalibrationResult:
        """Calibrate on `fills`; a non-converged fit is returned with its status and a warning."""
        self._refuse_time_varying("fit")
        features, validation, weights = self._usable(self.features(fills, cost_bps), need_cost=True)
        order = self._time_order(features) if (self.test_fraction > 0 or self.walk_forward) else None
        is_train = np.ones(features.n, dtype=bool)
        if self.test_fraction > 0:
            n_test = int(round(self.test_fraction * features.n))
            if n_test < 1:
                raise CalibrationError(f"test_fraction {self.test_fraction} of {features.n} rows leaves no test rows")
            is_train[order[features.n - n_test:]] = False
        if features.timestamp_ns is None and (self.test_fraction > 0 or self.walk_forward):
            validation.warnings.append("no 'timestamp' column: train/test splits follow row order")
        train = features if is_train.all() else features.take_rows(is_train)
        prob = self._problem(train, weights)
        self._check_identifiable(prob)
        sol = self._solve(prob, self.seed)
        cov, notes = sandwich_covariance(prob, sol.x, sol.state)
        report = self._report(prob, sol, weights, notes)
        for w in report.warnings[:1] if not sol.success else []:
            warnings.warn(w, CalibrationWarning, stacklevel=2)
        theta = prob.full(sol.x)
        predicted = self.model.predict(theta, features)
        out_of_sample = None
        if not is_train.all():
            test = ~is_train
            noise = features.expected_noise_bps
            out_of_sample = error_metrics(features.cost_bps[test], predicted[test],
                                          None if noise is None else noise[test])
        walk = self._walk_forward(features, order, weights) if self.walk_forward else None
        return CalibrationResult(
            model=self.model, theta=theta, free=tuple(self.model.params[i].name for i in prob.free),
            covariance=cov, report=report, features=features, is_train=is_train,
            predicted_bps=predicted, residuals_bps=features.cost_bps - predicted, status="fitted",
            participation=self.participation, weights=weights, validation=validation,
            settings=self.get_params(),
            bounds={self.model.params[i].name: (float(a), float(b))
                    for i, a, b in zip(prob.free, prob.lo, prob.hi)},
            out_of_sample=out_of_sample, walk_forward=walk)

    def _walk_forward(self, features: Features, order: np.ndarray, weights: str) -> dict:
        blocks = np.array_split(order, self.walk_forward + 1)
        folds, res_obs, res_pred, res_noise = [], [], [], []
        noise = features.expected_noise_bps
        for i in range(1, len(blocks)):
            train_idx, test_idx = np.concatenate(blocks[:i]), blocks[i]
            prob = self._problem(features.take_rows(np.sort(train_idx)), weights)
            try:
                self._check_identifiable(prob)
            except CalibrationError as err:
                folds.append({"fold": i, "train_rows": int(train_idx.size), "error": str(err)})
                continue
            sol = self._solve(prob, self.seed)
            test = features.take_rows(test_idx)
            pred = self.model.predict(prob.full(sol.x), test)
            fold_noise = None if noise is None else noise[test_idx]
            ts = features.timestamp_ns
            folds.append({"fold": i, "train_rows": int(train_idx.size), "test_rows": int(test_idx.size),
                          "test_start": None if ts is None else str(np.datetime64(int(ts[test_idx].min()), "ns")),
                          "test_end": None if ts is None else str(np.datetime64(int(ts[test_idx].max()), "ns")),
                          "params": self.model.as_dict(prob.full(sol.x)), "status": sol.status,
                          "converged": sol.success,
                          "metrics": error_metrics(test.cost_bps, pred, fold_noise)})
            res_obs.append(test.cost_bps)
            res_pred.append(pred)
            if fold_noise is not None:
                res_noise.append(fold_noise)
        pooled = (error_metrics(np.concatenate(res_obs), np.concatenate(res_pred),
                                np.concatenate(res_noise) if res_noise else None)
                  if res_obs else None)
        return {"folds": folds, "out_of_sample": pooled, "scheme": "expanding window, "
                f"{self.walk_forward} folds over {self.walk_forward + 1} time blocks"}

    def fix(self, params: Mapping[str, float], fills, cost_bps=None) -> CalibrationResult:
        """A result for hand-set parameters (missing ones take the calibrator's fixed values or
        the model defaults): same type as `fit`, status "fixed", no standard errors."""
        features = self.features(fills, cost_bps)
        need_cost = features.cost_bps is not None
        features, validation, weights = self._usable(features, need_cost=need_cost)
        try:
            theta = self.model.theta({**self.fixed, **dict(params)}, fill_defaults=True)
        except ValueError as err:
            raise CalibrationError(str(err)) from None
        if not np.isfinite(theta).all():
            raise CalibrationError("hand-set parameters must be finite numbers")
        predicted = self.model.predict(theta, features)
        residuals = (features.cost_bps - predicted) if need_cost else np.full(features.n, np.nan)
        cost = None
        if need_cost:
            r = predicted - features.cost_bps
            w = self._residual_weights(features, weights)
            if w is not None:
                r = r * w
            z = (r / self.f_scale) ** 2
            cost = 0.5 * self.f_scale ** 2 * float(LOSSES[self.loss].rho(z)[0].sum())
        report = OptimizerReport(method="fixed", loss=self.loss, f_scale=self.f_scale,
                                 weights=weights, status=None,
                                 message="parameters set by hand; no optimisation was run",
                                 success=True, converged=True, nfev=0, cost=cost)
        return CalibrationResult(
            model=self.model, theta=theta, free=(), covariance=np.empty((0, 0)), report=report,
            features=features, is_train=np.ones(features.n, dtype=bool), predicted_bps=predicted,
            residuals_bps=residuals, status="fixed", participation=self.participation,
            weights=weights, validation=validation, settings=self.get_params())

    def bootstrap(self, fills=None, *, n: int = 200, by: str = "day", seed: int | None = None,
                  result: CalibrationResult | None = None, block_s: float = 30.0) -> CalibrationResult:
        """Refit on `n` resamples of whole days (or order ids, or `block_s`-second time blocks:
        by="block", for rows that are serially dependent within seconds, like consecutive book
        snapshots) of the training rows; returns `result` (fitted here if not given) with
        `.bootstrap` attached.

        Each resample draws clusters with replacement and becomes frequency weights on the rows
        (no copy of the data); refits use `lm_normal` warm-started at the full-sample estimate.
        """
        if by not in ("day", "order_id", "block"):
            raise CalibrationError(f"bootstrap by must be 'day', 'order_id' or 'block', got {by!r}")
        if by == "block" and not block_s > 0:
            raise CalibrationError(f"block_s must be positive, got {block_s}")
        if OPTIMIZERS[self.optimizer].strategy in TIME_VARYING:
            raise CalibrationError(f"optimizer '{self.optimizer}' estimates a path: bootstrap a batch fit")
        if n < 2:
            raise CalibrationError("bootstrap needs n ≥ 2 resamples")
        if result is None:
            if fills is None:
                raise CalibrationError("bootstrap needs fills or a result")
            result = self.fit(fills)
        if result.status != "fitted":
            raise CalibrationError("bootstrap needs a fitted result, not hand-set parameters")
        mine = self.get_params()
        differ = [k for k in _OBJECTIVE_SETTINGS if result.settings.get(k) != mine[k]]
        if differ:
            raise CalibrationError("the result was fitted with other settings ("
                                   + ", ".join(f"{k}: {result.settings.get(k)!r} vs {mine[k]!r}" for k in differ)
                                   + "); bootstrap it with the calibrator that fitted it")
        features = result.features if result.is_train.all() else result.features.take_rows(result.is_train)
        if by == "block":
            grouping = None if features.timestamp_ns is None else (
                np.unique(features.timestamp_ns // int(round(block_s * 1e9)), return_inverse=True)[1].astype(np.int64), ())
        else:
            grouping = features.group(by)
        if grouping is None:
            need = "order_id" if by == "order_id" else "timestamp"
            raise DataError(f"bootstrap by {by} needs a '{need}' column", column=need)
        codes = grouping[0].copy()
        missing = codes < 0
        if missing.any():   # rows without an order id are their own cluster
            codes[missing] = codes.max() + 1 + np.arange(int(missing.sum()))
        codes = np.unique(codes, return_inverse=True)[1]
        clusters = int(codes.max()) + 1
        if clusters < 2:
            raise CalibrationError(f"bootstrap by {by} needs at least 2 {by}s, the data has {clusters}")
        prob = self._problem(features, result.weights)
        x_hat = result.theta[prob.free]
        rng = np.random.default_rng(self.seed if seed is None else seed)
        samples, failures = [], 0
        for _ in range(n):
            counts = np.bincount(rng.integers(0, clusters, clusters), minlength=clusters)
            m = counts[codes].astype(np.float64)
            rows = np.flatnonzero(m)
            sub = prob.take(rows, m[rows])
            try:
                sol = _lm_normal(sub, x_hat, self.max_nfev, self.tol)
            except (np.linalg.LinAlgError, FloatingPointError):
                failures += 1
                continue
            if not sol.success or not np.isfinite(sol.x).all():
                failures += 1
                continue
            samples.append(sol.x)
        boot = BootstrapResult(by=by, n=n, seed=self.seed if seed is None else int(seed),
                               clusters=clusters, names=result.free,
                               samples=np.array(samples).reshape(len(samples), prob.k),
                               failures=failures)
        boot.samples.flags.writeable = False
        return result.with_bootstrap(boot)

    def fit_segments(self, fills, by: Sequence[str] = ("venue",)) -> SegmentedResult:
        """One fit per segment (e.g. venue, symbol or both) plus the pooled fit, and a test of
        whether the segment coefficients differ (Wald on the sandwich covariances; Chow F on the
        weighted residual sums of squares)."""
        self._refuse_time_varying("segment")
        by = (by,) if isinstance(by, str) else tuple(by)
        for b in by:
            if b not in ("venue", "symbol", "side", "regime"):
                raise CalibrationError(f"segments by {b!r}: choose from venue, symbol, side, regime "
                                       "(a 'regime' column: see execal.models.impact.timevarying.with_regimes)")
        all_features = self.features(fills)
        groupings = []
        for b in by:
            g = all_features.group(b)
            if g is None:
                raise DataError(f"segments by {b} need a '{b}' column", column=b)
            groupings.append(g)
        pooled = self.fit(all_features)
        combined = np.zeros(all_features.n, dtype=np.int64)
        for codes, labels in groupings:
            combined = combined * (len(labels) + 1) + (codes + 1)
        keys, inverse = np.unique(combined, return_inverse=True)
        segments = []
        for j, key in enumerate(keys):
            rows = np.flatnonzero(inverse == j)
            first = rows[0]
            label = {b: (g[1][g[0][first]] if g[0][first] >= 0 else "(missing)")
                     for b, g in zip(by, groupings)}
            name = ", ".join(f"{k}={v}" for k, v in label.items())
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", CalibrationWarning)
                    res = self.fit(all_features.take_rows(rows))
            except (CalibrationError, DataError) as err:
                raise CalibrationError(f"segment {name} ({rows.size} rows): {err}") from None
            if not res.report.success:
                warnings.warn(f"segment {name}: {res.report.warnings[0]}", CalibrationWarning, stacklevel=2)
            # every other warning of the segment travels in its result (SegmentedResult.warnings)
            segments.append(Segment(key=label, result=res))
        test = segment_test(pooled, [s.result for s in segments])
        return SegmentedResult(by=by, pooled=pooled, segments=tuple(segments), test=test)


def segment_test(pooled: CalibrationResult, results: list[CalibrationResult], *,
                 chow_sums: tuple[float, float, int] | None = None) -> dict:
    """Do the segments share coefficients? Wald χ² on the free parameters using each segment's
    sandwich covariance (robust-loss valid), and the Chow F on weighted residual sums of squares
    evaluated on the segments' in-sample rows (exact for least squares, indicative otherwise).
    `chow_sums` = (unrestricted SS, restricted SS, rows) when the caller has them (out of core)."""
    free = pooled.free
    K, k = len(results), len(free)
    out: dict[str, Any] = {"segments": K, "parameters": list(free), "hypothesis":
                           "all segments share the parameters " + ", ".join(free)}
    if K < 2 or k == 0:
        return out | {"wald": None, "chow": None, "note": "needs at least 2 segments and 1 free parameter"}
    thetas = np.array([[r.params[n] for n in free] for r in results])
    covs = [r.covariance for r in results]
    # differences to the first segment: R θ with block-diagonal covariance
    diffs = (thetas[1:] - thetas[0]).reshape(-1)
    V = np.zeros(((K - 1) * k, (K - 1) * k))
    for i in range(1, K):
        s = slice((i - 1) * k, i * k)
        V[s, s] += covs[i]
        for j in range(1, K):
            V[s, slice((j - 1) * k, j * k)] += covs[0]
    try:
        stat = float(diffs @ np.linalg.solve(V, diffs))
        df = (K - 1) * k
        wald = {"statistic": stat, "df": df, "p_value": float(stats.chi2.sf(stat, df))}
    except np.linalg.LinAlgError:
        wald = None
    # Chow: restricted (pooled params) vs unrestricted (segment params), same rows and weights
    ss_u, ss_r, n = chow_sums if chow_sums is not None else _chow_sums(pooled, results)
    df1, df2 = (K - 1) * k, n - K * k
    chow = None
    if df2 > 0 and ss_u > 0:
        F = ((ss_r - ss_u) / df1) / (ss_u / df2)
        chow = {"statistic": F, "df1": df1, "df2": df2, "p_value": float(stats.f.sf(F, df1, df2))}
    return out | {"wald": wald, "chow": chow}


def _chow_sums(pooled: CalibrationResult, results: list[CalibrationResult]) -> tuple[float, float, int]:
    ss_u, ss_r, n = 0.0, 0.0, 0
    for r in results:
        f = r.features.take_rows(r.is_train) if not r.is_train.all() else r.features
        w = {"noise": lambda: 1.0 / f.expected_noise_bps, "none": lambda: None,
             "column": lambda: f.extra[r.settings["weight_column"]]}[r.weights]()
        res_u = f.cost_bps - r.model.predict(r.theta, f)
        res_r = f.cost_bps - pooled.model.predict(pooled.theta, f)
        if w is not None:
            res_u, res_r = res_u * w, res_r * w
        ss_u += float(np.einsum("i,i->", res_u, res_u))
        ss_r += float(np.einsum("i,i->", res_r, res_r))
        n += f.n
    return ss_u, ss_r, n


def result_from_config(config, fills, cost_bps=None):
    """A "fixed" `CalibrationResult` on `fills` with the config's pooled parameters and settings."""
    cfg = load_config(config)
    settings = (cfg.get("optimizer") or {}).get("settings") or {}
    calibrator = Calibrator(model=cfg["model"]["name"], participation=cfg["model"]["participation"],
                            loss=settings.get("loss", "soft_l1"), f_scale=settings.get("f_scale", 1.0),
                            weights=settings.get("weights", "auto"),
                            weight_column=settings.get("weight_column"))
    return calibrator.fix(cfg["model"]["params"], fills, cost_bps)
