"""Out-of-core impact calibration: the fit of `Calibrator` on a partitioned dataset, from sums.

The numerics never need the rows in memory, only sums over them. The dataset view is split into
scan tasks (execal.models.data.dataset); every *pass* maps one function over the tasks (in this
process or on a Dask cluster, execal.models.data.compute), each task streams its record batches and
returns small sums, and the caller adds them up in task order (so the same tasks give bit-identical
sums wherever they ran). Passes of a fit:

1. prepare: rows read, the rows the model can use (the same checks as `Calibrator._usable`, each
   drop counted under its first reason, with the first global row numbers), per-day counts, span;
2. select (only with `test_fraction`): the timestamps of the one day where the time split falls,
   so that the latest share of rows by (timestamp, row order) is held out exactly as in memory;
3. gather: the evenly spaced start-value subsample `model.start` takes in memory (the same rows);
4. Levenberg–Marquardt (`fit.lm_solve`, the path of the in-memory `lm_normal`): every trial point
   is one pass that returns the loss, Jᵀψ and the Gauss-Newton matrix JᵀWJ together, plus the
   sandwich's bread and meat, the weighted SSR, the in- and out-of-sample metric sums and, when a
   bootstrap is asked for, the per-day gradient and Gauss-Newton sums. The last accepted pass is
   at the solution, so standard errors, metrics and the bootstrap cost no further pass.

So the estimate equals the in-memory fit on the same rows (`open_dataset(...).select(...)
.to_frame()` in dataset order) to rounding (tested to 1e-10 relative); only the order of the
floating-point additions differs.

The bootstrap by day reweights day sums with multinomial counts (Andrews 2002's k-step
bootstrap): one Newton step from the estimate with Σ_d c_d H_d and Σ_d c_d g_d (exact for a model
linear in its free parameters under the linear loss, where it equals the in-memory refit), and
with `steps` > 1 further Gauss-Newton steps, each a pass over the data at every resample's
parameters, converging to the in-memory bootstrap's refits. Segments (venue, symbol: partitions;
side: a row filter) are one streamed fit each, filters pushed down to the partitions.

Not out of core: optimizers other than lm_normal (trf/dogbox/lm keep every residual in memory),
multistart, walk-forward, bootstrap by order id, segments by regime; median absolute errors (a
quantile) are not in the streamed metrics.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa

from execal.models.core.errors import CalibrationError
from execal.models.core.jsonable import clean, num
from execal.models.core.registry import OPTIMIZERS
from execal.models.core.report import OptimizerReport
from execal.models.data.compute import executor as make_executor
from execal.models.data.dataset import (NS_PER_DAY, DatasetView, PartitionedDataset, ScanTask, open_dataset,
                                        read_task_parts)
from execal.models.data.schema import DataError, DropRecord, ValidationReport
from execal.models.impact.config import config_dict
from execal.models.impact.features import (SIZE_BUCKET_EDGES, SIZE_BUCKET_LABELS, Features,
                                           impact_features)
from execal.models.impact.fit import EPS, Calibrator, _Problem, _Solution, lm_solve, segment_test
from execal.models.impact.models import _subsample
from execal.models.impact.result import BootstrapResult, ParameterVector, Segment, SegmentedResult

DEFAULT_BATCH_ROWS = 1_000_000
DEFAULT_TASK_ROWS = 4_000_000
SUBSAMPLE_ROWS = 50_000          # what ImpactModel.start subsamples in memory (models._subsample)
_NUMERIC_INPUTS = ("quantity", "adv", "market_volume", "volatility", "duration_s", "spread_bps",
                   "cost_bps", "participation")


# --- what a pass needs ---------------------------------------------------------------------------

@dataclass(frozen=True)
class _Spec:
    """Everything a task function needs (sent to workers: small and picklable)."""
    calibrator: Calibrator
    columns: tuple[str, ...]         # read from the dataset
    inputs: tuple[str, ...]          # of those, given to impact_features
    extra: tuple[str, ...]           # weight column
    weights: str
    theta: np.ndarray
    free: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    batch_rows: int
    split: tuple[int, int] | None = None     # last training row (timestamp ns, usable position)
    day0: int = 0                    # day number (ns // NS_PER_DAY) of per-day slot 0
    n_days: int = 0                  # per-day sums wanted when > 0
    groups: tuple[str, ...] = ()     # partition keys to break metrics down by (venue, symbol)
    row_groups: bool = False         # metrics by side and size bucket too (row-level)

    @property
    def need_ts(self) -> bool:
        return "timestamp" in self.columns

    def problem(self, features: Features, w) -> _Problem:
        c = self.calibrator
        return _Problem(c.model, features, features.cost_bps, w, self.theta, self.free, self.lo,
                        self.hi, c.loss, c.f_scale)


def _inputs(spec: _Spec, batch: pa.RecordBatch) -> tuple[Features, np.ndarray | None]:
    mapping = {c: batch.column(c).to_numpy(zero_copy_only=False) for c in spec.inputs + spec.extra}
    features = impact_features(mapping, spec.calibrator.participation, extra_columns=spec.extra)
    ts = None
    if spec.need_ts:
        ts = batch.column("timestamp").cast(pa.int64()).to_numpy(zero_copy_only=False)
    return features, ts


def _batches(spec: _Spec, task: ScanTask):
    """The task's rows in batches of at least `batch_rows` (files are concatenated: a file of a
    day's partition is often small, and the numpy work per batch has a fixed cost), with a code per
    row for its (venue, symbol) partition key and the keys by code."""
    pending: list[pa.RecordBatch] = []
    codes: list[np.ndarray] = []
    keys: dict[tuple, int] = {}
    size = 0

    def combine():
        if len(pending) == 1:
            batch = pending[0]
        else:
            batch = pa.Table.from_batches(pending).combine_chunks().to_batches()[0]
        return batch, np.concatenate(codes), [k for k, _ in sorted(keys.items(), key=lambda kv: kv[1])]
    for part, batch in read_task_parts(task, spec.columns, batch_rows=spec.batch_rows):
        key = tuple(part.get(g) for g in spec.groups)
        code = keys.setdefault(key, len(keys))
        pending.append(batch)
        codes.append(np.full(batch.num_rows, code, dtype=np.int32))
        size += batch.num_rows
        if size >= spec.batch_rows:
            yield combine()
            pending, codes, keys, size = [], [], {}, 0
    if pending:
        yield combine()


def _train_mask(spec: _Spec, ts_usable: np.ndarray | None, pos: np.ndarray) -> np.ndarray:
    if spec.split is None:
        return np.ones(pos.shape[0], dtype=bool)
    ts_k, pos_k = spec.split
    return (ts_usable < ts_k) | ((ts_usable == ts_k) & (pos <= pos_k))


# --- additive summaries ----------------------------------------------------------------------------

@dataclass
class _Moments:
    """Count, mean and centred sum of squares, merged exactly (Chan et al.)."""
    n: float = 0.0
    mean: float = 0.0
    m2: float = 0.0

    @classmethod
    def of(cls, x: np.ndarray) -> "_Moments":
        n = x.shape[0]
        if n == 0:
            return cls()
        mean = float(x.mean())
        d = x - mean
        return cls(float(n), mean, float(np.einsum("i,i->", d, d)))

    def __iadd__(self, o: "_Moments") -> "_Moments":
        if o.n == 0:
            return self
        if self.n == 0:
            self.n, self.mean, self.m2 = o.n, o.mean, o.m2
            return self
        n = self.n + o.n
        delta = o.mean - self.mean
        self.mean += delta * o.n / n
        self.m2 += o.m2 + delta * delta * self.n * o.n / n
        self.n = n
        return self


@dataclass
class _Metrics:
    """What `result.error_metrics` computes, as sums (the median is not a sum: left out)."""
    n: int = 0
    s_res: float = 0.0
    s_res2: float = 0.0
    s_abs: float = 0.0
    obs: _Moments = field(default_factory=_Moments)
    z: _Moments = field(default_factory=_Moments)
    s_z2: float = 0.0

    def add_rows(self, observed, predicted, noise, z_rows=None) -> None:
        """Add rows; `z_rows` = residual / noise when the caller has it (up to rounding)."""
        residual = observed - predicted
        s_res2 = float(np.einsum("i,i->", residual, residual))
        if not np.isfinite(s_res2):          # rare: drop what is not finite, as error_metrics does
            ok = np.isfinite(residual)
            residual, observed = residual[ok], observed[ok]
            noise = None if noise is None else noise[ok]
            z_rows = None if z_rows is None else z_rows[ok]
            s_res2 = float(np.einsum("i,i->", residual, residual))
        self.n += int(residual.shape[0])
        self.s_res += float(residual.sum())
        self.s_res2 += s_res2
        self.s_abs += float(np.abs(residual).sum())
        self.obs += _Moments.of(observed)
        if noise is not None:
            z = residual / noise if z_rows is None else z_rows
            s_z2 = float(np.einsum("i,i->", z, z))
            if not np.isfinite(s_z2):
                z = z[np.isfinite(z)]
                s_z2 = float(np.einsum("i,i->", z, z))
            self.z += _Moments.of(z)
            self.s_z2 += s_z2

    def __iadd__(self, o: "_Metrics") -> "_Metrics":
        self.n += o.n
        self.s_res += o.s_res
        self.s_res2 += o.s_res2
        self.s_abs += o.s_abs
        self.obs += o.obs
        self.z += o.z
        self.s_z2 += o.s_z2
        return self

    def finish(self, with_z: bool) -> dict:
        n = self.n
        keys = ("rmse_bps", "mae_bps", "median_abs_error_bps", "bias_bps", "r2", "z_mean", "z_std", "z_rms")
        if n == 0:
            return {"n": 0} | {k: None for k in keys}
        sst = self.obs.m2
        out = {"n": n, "rmse_bps": num((self.s_res2 / n) ** 0.5), "mae_bps": num(self.s_abs / n),
               "median_abs_error_bps": None, "bias_bps": num(-self.s_res / n),
               "r2": num(1.0 - self.s_res2 / sst) if sst > 0 else None,
               "z_mean": None, "z_std": None, "z_rms": None}
        if with_z and self.z.n:
            out["z_mean"] = num(self.z.mean)
            out["z_std"] = num((self.z.m2 / (self.z.n - 1)) ** 0.5) if self.z.n > 1 else None
            out["z_rms"] = num((self.s_z2 / self.z.n) ** 0.5)
        return out


def _add_groups(total: dict, part: dict) -> None:
    for name, labels in part.items():
        dest = total.setdefault(name, {})
        for label, m in labels.items():
            if label in dest:
                dest[label] += m
            else:
                dest[label] = dataclasses.replace(m, obs=dataclasses.replace(m.obs),
                                                  z=dataclasses.replace(m.z))


@dataclass
class _Sums:
    """One pass at P parameter points: everything the fit, its covariance and metrics need."""
    cost: np.ndarray                 # (P,)
    g: np.ndarray                    # (P, k)
    H: np.ndarray                    # (P, k, k) Gauss-Newton, weights clipped at EPS
    n: int = 0                       # training rows
    A: np.ndarray | None = None      # (k, k) Jᵀ diag(rho'+2rho''z) J   (P == 1)
    A_irls: np.ndarray | None = None  # Jᵀ diag(rho') J
    B: np.ndarray | None = None      # Jᵀ diag(psi²) J
    sse_w: float = 0.0               # Σ r², r = weighted residual
    in_sample: _Metrics | None = None
    out_of_sample: _Metrics | None = None
    groups: dict = field(default_factory=dict)
    day_g: np.ndarray | None = None  # (P, D, k)
    day_H: np.ndarray | None = None  # (P, D, k, k)

    def __iadd__(self, o: "_Sums") -> "_Sums":
        self.cost = self.cost + o.cost
        self.g = self.g + o.g
        self.H = self.H + o.H
        self.n += o.n
        for name in ("A", "A_irls", "B", "day_g", "day_H"):
            a, b = getattr(self, name), getattr(o, name)
            if b is not None:
                setattr(self, name, b.copy() if a is None else a + b)
        self.sse_w += o.sse_w
        for name in ("in_sample", "out_of_sample"):
            a, b = getattr(self, name), getattr(o, name)
            if b is not None:
                if a is None:
                    setattr(self, name, _Metrics())
                    a = getattr(self, name)
                a += b
        _add_groups(self.groups, o.groups)
        return self


# --- task functions (run here or on a worker) --------------------------------------------------------

def _prepare_task(task: ScanTask, *, spec: _Spec) -> dict:
    """Rows, usable rows, drops (first local rows), participation range, per-day counts, span."""
    cal = spec.calibrator
    rows, usable, wpos = 0, 0, False
    pmin, pmax = np.inf, -np.inf
    drops: dict[tuple[str, str], list] = {}
    days: dict[int, int] = {}
    ts_min, ts_max = None, None
    keeps = []
    for batch, _, _ in _batches(spec, task):
        features, ts = _inputs(spec, batch)
        keep, dropped = cal._usable_mask(features, spec.weights, need_cost=True)
        keeps.append(keep)
        for reason, column, bad in dropped:
            rec = drops.setdefault((reason, column), [0, []])
            rec[0] += int(bad.sum())
            if len(rec[1]) < 5:
                rec[1] += (np.flatnonzero(bad)[:5] + rows).tolist()
                rec[1] = rec[1][:5]
        rows += batch.num_rows
        nk = int(keep.sum())
        usable += nk
        if nk:
            p = features.participation[keep]
            pmin, pmax = min(pmin, float(p.min())), max(pmax, float(p.max()))
            if spec.weights == "column":     # noise weights of usable rows are positive by the checks
                w = features.extra[cal.weight_column][keep]
                wpos = wpos or bool((w > 0).any())
            else:
                wpos = True
            if ts is not None:
                tk = ts[keep]
                lo, hi = int(tk.min()), int(tk.max())
                ts_min = lo if ts_min is None else min(ts_min, lo)
                ts_max = hi if ts_max is None else max(ts_max, hi)
                d0 = lo // NS_PER_DAY
                c = np.bincount(tk // NS_PER_DAY - d0)
                for i in np.flatnonzero(c).tolist():
                    days[d0 + i] = days.get(d0 + i, 0) + int(c[i])
    keep_all = np.concatenate(keeps) if keeps else np.zeros(0, dtype=bool)
    return {"rows": rows, "usable": usable, "drops": drops, "pmin": pmin, "pmax": pmax, "wpos": wpos,
            "days": days, "ts_min": ts_min, "ts_max": ts_max, "keep": np.packbits(keep_all)}


def _select_task(item: tuple[ScanTask, int], *, spec: _Spec, day: int) -> tuple[np.ndarray, np.ndarray]:
    """(timestamp, usable position) of the usable rows of one day."""
    task, offset = item
    cal = spec.calibrator
    seen = 0
    ts_out, pos_out = [], []
    for batch, _, _ in _batches(spec, task):
        features, ts = _inputs(spec, batch)
        keep, _ = cal._usable_mask(features, spec.weights, need_cost=True)
        tk = ts[keep]
        pos = offset + seen + np.arange(tk.shape[0], dtype=np.int64)
        seen += tk.shape[0]
        on_day = (tk // NS_PER_DAY) == day
        ts_out.append(tk[on_day])
        pos_out.append(pos[on_day])
    if not ts_out:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    return np.concatenate(ts_out), np.concatenate(pos_out)


def _gather_task(item: tuple[ScanTask, int, int], *, spec: _Spec, wanted: np.ndarray,
                 terms: bool = False) -> dict:
    """The input columns of the training rows at global training positions `wanted`; with
    `terms`, the model's closed-form start sums over every training row ("_terms")."""
    task, offset, train_offset, keep_bits = item
    cal = spec.calibrator
    seen, seen_train, row0 = 0, 0, 0
    keep_all = _unpack(keep_bits, task)
    num, den = 0.0, 0.0
    out: dict[str, list] = {c: [] for c in spec.inputs + spec.extra}
    for batch, _, _ in _batches(spec, task):
        # the usable rows are known from the prepare pass: no features unless the start needs sums
        keep = keep_all[row0:row0 + batch.num_rows]
        row0 += batch.num_rows
        idx = np.flatnonzero(keep)
        pos = offset + seen + np.arange(idx.shape[0], dtype=np.int64)
        seen += idx.shape[0]
        if spec.split is not None:
            ts = batch.column("timestamp").cast(pa.int64()).to_numpy(zero_copy_only=False)
            idx = idx[_train_mask(spec, ts[idx], pos)]
        lo = train_offset + seen_train
        seen_train += idx.shape[0]
        if terms and idx.size:
            features, _ = _inputs(spec, batch)
            ft = features.take_rows(idx, labels=False)
            a, b = cal.model.start_terms(ft, ft.cost_bps, cal._residual_weights(ft, spec.weights),
                                         spec.theta)
            num += a
            den += b
        i0, i1 = np.searchsorted(wanted, [lo, lo + idx.shape[0]])
        if i1 > i0:
            rows = idx[wanted[i0:i1] - lo]
            for c in out:
                out[c].append(batch.column(c).to_numpy(zero_copy_only=False)[rows])
    result = {c: (np.concatenate(v) if v else np.empty(0)) for c, v in out.items()}
    result["_terms"] = (num, den)
    return result


def _unpack(keep_bits: np.ndarray, task: ScanTask) -> np.ndarray:
    return np.unpackbits(keep_bits).astype(bool)


def _evaluate_task(item: tuple, *, spec: _Spec, X: np.ndarray) -> _Sums:
    """Sums at each parameter point X[p] over the task's training rows (metrics at P == 1)."""
    task, offset, _, keep_bits = item
    keep_all = _unpack(keep_bits, task)
    row0 = 0
    cal = spec.calibrator
    model = cal.model
    P, k = X.shape
    full = P == 1
    sums = _Sums(np.zeros(P), np.zeros((P, k)), np.zeros((P, k, k)))
    if full:
        sums.A, sums.A_irls, sums.B = np.zeros((k, k)), np.zeros((k, k)), np.zeros((k, k))
        sums.in_sample, sums.out_of_sample = _Metrics(), _Metrics()
    if spec.n_days:
        sums.day_g, sums.day_H = np.zeros((P, spec.n_days, k)), np.zeros((P, spec.n_days, k, k))
    seen = 0
    thetas = []
    for p in range(P):
        t = spec.theta.copy()
        t[spec.free] = X[p]
        thetas.append(t)
    for batch, codes, keys in _batches(spec, task):
        features, ts = _inputs(spec, batch)
        keep = keep_all[row0:row0 + batch.num_rows]      # from the prepare pass
        row0 += batch.num_rows
        idx = np.flatnonzero(keep)
        if idx.size == 0:
            continue
        pos = offset + seen + np.arange(idx.shape[0], dtype=np.int64)
        seen += idx.shape[0]
        train = _train_mask(spec, None if ts is None else ts[idx], pos)
        train_idx = idx if train.all() else idx[train]
        if train_idx.size == features.n:
            ft = features
        else:
            ft = features.take_rows(train_idx, labels=False)
        sums.n += ft.n
        w = cal._residual_weights(ft, spec.weights)
        prob = spec.problem(ft, w)
        day = None
        if spec.n_days and ft.n:
            day = ts[train_idx] // NS_PER_DAY - spec.day0
        for p in range(P):
            if ft.n == 0:
                break
            x = X[p]
            if full:
                # the residuals as _Problem.residuals makes them, keeping the prediction for metrics
                pred = model.predict(thetas[p], ft)
                r = pred - prob.y
                if w is not None:
                    r *= w
            else:
                r = prob.residuals(x)
            cost, rho1, rho2, z = prob.rho(r)
            J = prob.jac(x)
            psi = rho1 * r
            a_w = rho2 * z
            a_w *= 2.0
            a_w += rho1          # rho' + 2 rho'' z: the sandwich's bread weights, bit for bit
            gn = np.maximum(a_w, EPS)
            JT = J.T
            sums.cost[p] += cost
            sums.g[p] += np.einsum("kn,n->k", JT, psi)
            sums.H[p] += np.einsum("kn,jn->kj", JT * gn, JT)
            if day is not None:
                for i in range(k):
                    sums.day_g[p, :, i] += np.bincount(day, JT[i] * psi, minlength=spec.n_days)
                    for j in range(i, k):
                        col = np.bincount(day, JT[i] * gn * JT[j], minlength=spec.n_days)
                        sums.day_H[p, :, i, j] += col
                        if j != i:
                            sums.day_H[p, :, j, i] += col
            if full:
                sums.A += np.einsum("kn,jn->kj", JT * a_w, JT)
                sums.A_irls += np.einsum("kn,jn->kj", JT * rho1, JT)
                sums.B += np.einsum("kn,jn->kj", JT * (psi * psi), JT)
                sums.sse_w += float(np.einsum("i,i->", r, r))
                noise = ft.expected_noise_bps
                m = _Metrics()
                # with noise weights the weighted residual is -z already: no second division
                m.add_rows(prob.y, pred, noise, z_rows=None if spec.weights != "noise" else -r)
                sums.in_sample += m
                if spec.groups:
                    _partition_group_metrics(sums.groups, spec.groups, codes[train_idx], keys,
                                             prob.y, pred, noise, m)
                if spec.row_groups:
                    _row_group_metrics(sums.groups, batch, train_idx, ft, pred, noise)
        if full and train_idx.size < idx.size:
            test = features.take_rows(idx[~train], labels=False)
            pred_test = model.predict(thetas[0], test)
            sums.out_of_sample.add_rows(test.cost_bps, pred_test, test.expected_noise_bps)
    return sums


def _partition_group_metrics(groups: dict, names, codes, keys, observed, pred, noise, whole) -> None:
    """Metrics by venue / symbol: the rows' partition keys, one code per key combination."""
    per_key = {}
    if len(keys) == 1:
        per_key[keys[0]] = whole
    else:
        for code, key in enumerate(keys):
            sel = codes == code
            if sel.any():
                m = _Metrics()
                m.add_rows(observed[sel], pred[sel], None if noise is None else noise[sel])
                per_key[key] = m
    for i, name in enumerate(names):
        part: dict = {}
        for key, m in per_key.items():
            if key[i] is not None:
                if key[i] in part:
                    part[key[i]] += m
                else:
                    part[key[i]] = dataclasses.replace(m, obs=dataclasses.replace(m.obs),
                                                       z=dataclasses.replace(m.z))
        _add_groups(groups, {name: part})


def _row_group_metrics(groups: dict, batch, rows, ft: Features, pred, noise) -> None:
    codes = np.searchsorted(SIZE_BUCKET_EDGES, ft.participation, side="right")
    part = {"size_bucket": {}}
    for i, label in enumerate(SIZE_BUCKET_LABELS):
        sel = codes == i
        if sel.any():
            m = _Metrics()
            m.add_rows(ft.cost_bps[sel], pred[sel], None if noise is None else noise[sel])
            part["size_bucket"][label] = m
    if "side" in batch.schema.names:
        side = batch.column("side").to_numpy(zero_copy_only=False)[rows].astype(np.float64)
        part["side"] = {}
        for value, label in ((-1.0, "sell"), (1.0, "buy")):
            sel = side == value
            if sel.any():
                m = _Metrics()
                m.add_rows(ft.cost_bps[sel], pred[sel], None if noise is None else noise[sel])
                part["side"][label] = m
    _add_groups(groups, part)


# --- the result -------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class StreamedResult(ParameterVector):
    """A fit on a dataset too big for memory: what a `CalibrationResult` says, from sums (no
    per-row predictions or residuals; `predict` works on any frame)."""
    model: Any
    theta: np.ndarray
    free: tuple[str, ...]
    covariance: np.ndarray
    report: OptimizerReport
    participation: str
    weights: str
    validation: ValidationReport
    settings: Mapping
    bounds: Mapping
    in_sample: Mapping
    out_of_sample: Mapping | None
    groups: Mapping
    n_train: int
    n_test: int
    span: tuple[str | None, str | None]
    source: Mapping                      # dataset, filters, sha256, executor, passes, seconds
    status: str = "fitted"
    bootstrap: BootstrapResult | None = None
    walk_forward: None = None

    def __post_init__(self):
        for name in ("theta", "covariance"):
            getattr(self, name).flags.writeable = False

    @property
    def warnings(self) -> tuple[str, ...]:
        return tuple(self.report.warnings) + tuple(self.validation.warnings)

    @property
    def rows_used(self) -> int:
        return self.n_train + self.n_test

    @property
    def metrics(self) -> dict:
        out = {"in_sample": dict(self.in_sample), "out_of_sample": self.out_of_sample,
               "walk_forward": None}
        for name in ("venue", "symbol", "side", "size_bucket"):
            out[f"by_{name}"] = dict(self.groups[name]) if name in self.groups else None
        return out

    def predict(self, fills) -> np.ndarray:
        features = fills if isinstance(fills, Features) else impact_features(
            getattr(fills, "frame", fills), self.participation)
        self.model.check(features)
        return self.model.predict(self.theta, features)

    def with_bootstrap(self, bootstrap: BootstrapResult) -> "StreamedResult":
        return dataclasses.replace(self, bootstrap=bootstrap)

    def to_config(self, provenance: Mapping | None = None) -> dict:
        return config_dict(self, provenance)

    def to_dict(self) -> dict:
        return clean({"model": self.model.name, "converged": self.converged, "params": self.params,
                      "std_errors": self.std_errors,
                      "conf_int": {k: list(v) for k, v in self.conf_int().items()},
                      "report": self.report.to_dict(), "warnings": list(self.warnings),
                      "metrics": self.metrics, "rows": {"train": self.n_train, "test": self.n_test},
                      "source": dict(self.source),
                      "bootstrap": None if self.bootstrap is None else self.bootstrap.to_dict()})

    def summary(self) -> str:
        rep = self.report
        src = self.source
        lines = [f"{self.model.label} ({self.model.name}): {self.model.formula}",
                 f"status: {self.status}; optimizer {rep.method} (out of core, {src.get('executor')}), "
                 f"loss {rep.loss}, f_scale {rep.f_scale:g}, weights {rep.weights}; {rep.message}",
                 f"rows: {self.n_train:,} in-sample, {self.n_test:,} out-of-sample "
                 f"({src.get('passes')} passes over {src.get('dataset')}, {src.get('seconds', 0):.1f} s)",
                 f"{'param':<8}{'value':>14}{'std err':>12}{'95% CI':>28}"]
        ci, se = self.conf_int(), self.std_errors
        for name, value in self.params.items():
            lo, hi = ci[name]
            tag = "" if name in self.free else "  (fixed)"
            lines.append(f"{name:<8}{value:>14.6g}{se[name]:>12.4g}   [{lo:>11.5g}, {hi:>11.5g}]{tag}")
        m = self.in_sample
        if m.get("n"):
            lines.append(f"in-sample: RMSE {m['rmse_bps']:.3f} bps, MAE {m['mae_bps']:.3f}, "
                         f"bias {m['bias_bps']:.3f}, R² {m['r2'] if m['r2'] is None else round(m['r2'], 4)}")
        for w in self.warnings:
            lines.append(f"warning: {w}")
        return "\n".join(lines)


# --- the fit ---------------------------------------------------------------------------------------

def as_view(data) -> DatasetView:
    """A `DatasetView` from a view, a `PartitionedDataset` or a dataset directory path."""
    if isinstance(data, DatasetView):
        return data
    if isinstance(data, PartitionedDataset):
        return data.all()
    return open_dataset(data).all()


def _schema_features(cal: Calibrator, schema: Mapping[str, str]) -> Features:
    """Zero-row features with the dataset's columns: what the model and weights can use."""
    cols = {c: np.empty(0) for c in schema if c in _NUMERIC_INPUTS or c in ("side", "arrival_price",
                                                                            "exec_price")}
    extra = (cal.weight_column,) if cal.weights == "column" else ()
    for c in extra:
        if c not in schema:
            raise DataError(f"no column '{c}' in the dataset for weights='column'", column=c)
        cols[c] = np.empty(0)
    return impact_features(cols, cal.participation, extra_columns=extra)


def _columns(cal: Calibrator, schema: Mapping[str, str], need_ts: bool, row_groups: bool) -> tuple:
    have = set(schema)
    inputs = ["quantity", "volatility", "duration_s", "spread_bps"]
    inputs.append("adv" if cal.participation == "adv" else "market_volume")
    if "pov" in cal.model.needs:
        inputs += ["market_volume", "adv"]
    if "cost_bps" in have:
        inputs.append("cost_bps")
    else:
        inputs += ["side", "arrival_price", "exec_price"]
    if not {"quantity", "adv" if cal.participation == "adv" else "market_volume"} <= have:
        inputs.append("participation")
    inputs = tuple(dict.fromkeys(c for c in inputs if c in have))
    extra = (cal.weight_column,) if cal.weights == "column" else ()
    columns = list(inputs + extra)
    if need_ts and "timestamp" in have:
        columns.append("timestamp")
    if row_groups and "side" in have and "side" not in columns:
        columns.append("side")
    return tuple(columns), inputs, extra


class _Runner:
    """Runs passes on an executor, counting them and reporting progress."""

    def __init__(self, executor, progress):
        self.executor = executor
        self.progress = progress
        self.passes = 0

    def map(self, fn, items, stage: str, **kwargs):
        self.passes += 1
        n = self.passes

        def tick(done, total):
            if self.progress:
                self.progress({"stage": stage, "pass": n, "tasks_done": done, "tasks": total})
        return self.executor.map(fn, items, progress=tick, **kwargs)


def _check(cal: Calibrator) -> None:
    if OPTIMIZERS[cal.optimizer].strategy in ("time_varying", "online"):
        raise CalibrationError(f"optimizer '{cal.optimizer}' learns a path in memory; out of core "
                               "only the batch fit (lm_normal) runs")
    if cal.optimizer != "lm_normal":
        raise CalibrationError(f"out of core the optimizer is 'lm_normal' (normal equations from "
                               f"streamed sums); '{cal.optimizer}' needs every residual in memory")
    if cal.multistart or cal.walk_forward:
        raise CalibrationError("multistart and walk_forward are not available out of core")


@dataclass
class _Prepared:
    spec: _Spec
    items: list                      # (task, usable offset, train offset)
    validation: ValidationReport
    n_usable: int
    n_train: int
    train_days: np.ndarray           # day numbers with training rows (sorted)
    span: tuple
    weights: str


def _prepare(cal: Calibrator, view: DatasetView, runner: _Runner, *, need_days: bool,
             batch_rows: int, task_rows: int, row_groups: bool) -> _Prepared:
    schema = view.dataset.manifest["schema"]
    if view.kind != "fills":
        raise DataError(f"the dataset holds {view.kind}, not fills", file=view.source)
    features0 = _schema_features(cal, schema)
    cal.model.check(features0)
    weights = cal._weights_name(features0)
    free, theta = cal._free_and_theta(features0)
    lo, hi = cal._bounds(free)
    # the prepare pass reads timestamps (span, days); later passes only for a split or day sums
    columns, inputs, extra = _columns(cal, schema, True, row_groups)
    pass_columns = _columns(cal, schema, cal.test_fraction > 0 or need_days, row_groups)[0]
    groups = tuple(k for k in ("venue", "symbol") if row_groups and k in view.dataset.manifest["partitioning"])
    spec = _Spec(cal, columns, inputs, extra, weights, theta, free, lo, hi, batch_rows,
                 groups=groups, row_groups=row_groups)
    tasks = view.tasks(task_rows)
    if not tasks:
        raise CalibrationError(f"no rows: the filters {view.filters.to_dict()} select no partition "
                               f"of {view.source}")
    prepared = runner.map(_prepare_task, tasks, "prepare", spec=spec)
    rows = np.array([p["rows"] for p in prepared], dtype=np.int64)
    usable = np.array([p["usable"] for p in prepared], dtype=np.int64)
    row_off = np.concatenate([[0], np.cumsum(rows)[:-1]])
    use_off = np.concatenate([[0], np.cumsum(usable)[:-1]])
    n_rows, n_usable = int(rows.sum()), int(usable.sum())
    validation = ValidationReport(rows_read=n_rows, rows_kept=n_usable)
    order: list[tuple[str, str]] = []
    merged: dict = {}
    for off, p in zip(row_off, prepared):
        for key, (count, first) in p["drops"].items():
            if key not in merged:
                order.append(key)
                merged[key] = [0, []]
            merged[key][0] += count
            merged[key][1] = (merged[key][1] + [int(off) + r + 1 for r in first])[:5]
    # the in-memory report lists reasons in the order of its checks: keep that order
    check_order = {k: i for i, k in enumerate(_check_order(cal, features0, weights))}
    for key in sorted(order, key=lambda k: check_order.get(k, 99)):
        validation.dropped.append(DropRecord(key[0], key[1], merged[key][0], merged[key][1]))
    if n_usable == 0:
        why = "; ".join(f"{d.count} {d.reason} (column '{d.column}', rows "
                        f"{', '.join(map(str, d.first_rows))})" for d in validation.dropped)
        raise CalibrationError(f"no usable rows out of {n_rows}: {why or 'the data is empty'}")
    ts_min = min((p["ts_min"] for p in prepared if p["ts_min"] is not None), default=None)
    ts_max = max((p["ts_max"] for p in prepared if p["ts_max"] is not None), default=None)
    span = (None if ts_min is None else pd.Timestamp(ts_min, tz="UTC").isoformat(),
            None if ts_max is None else pd.Timestamp(ts_max, tz="UTC").isoformat())
    day_counts: dict[int, int] = {}
    for p in prepared:
        for d, c in p["days"].items():
            day_counts[d] = day_counts.get(d, 0) + c
    train_counts = usable.copy()
    split = None
    train_day_counts = dict(day_counts)
    if cal.test_fraction > 0:
        if "timestamp" not in schema:
            raise CalibrationError("test_fraction needs a 'timestamp' column")
        n_test = int(round(cal.test_fraction * n_usable))
        if n_test < 1:
            raise CalibrationError(f"test_fraction {cal.test_fraction} of {n_usable} rows leaves no test rows")
        n_train = n_usable - n_test
        days_sorted = sorted(day_counts)
        cum = np.cumsum([day_counts[d] for d in days_sorted])
        i = int(np.searchsorted(cum, n_train))          # first day whose cumulative count >= n_train
        cut_day = days_sorted[i]
        k_in_day = n_train - (int(cum[i - 1]) if i else 0)
        on_day = [j for j, p in enumerate(prepared) if cut_day in p["days"]]
        picked = runner.map(_select_task, [(tasks[j], int(use_off[j])) for j in on_day], "select",
                            spec=spec, day=cut_day)
        ts_all = np.concatenate([t for t, _ in picked])
        pos_all = np.concatenate([q for _, q in picked])
        o = np.lexsort((pos_all, ts_all))
        last = o[k_in_day - 1]
        split = (int(ts_all[last]), int(pos_all[last]))
        for j, p in enumerate(prepared):
            before = sum(c for d, c in p["days"].items() if d < cut_day)
            train_counts[j] = before
        for j, (t, q) in zip(on_day, picked):
            train_counts[j] += int(((t < split[0]) | ((t == split[0]) & (q <= split[1]))).sum())
        train_day_counts = {d: c for d, c in day_counts.items() if d < cut_day}
        train_day_counts[cut_day] = k_in_day
    n_train = int(train_counts.sum())
    train_off = np.concatenate([[0], np.cumsum(train_counts)[:-1]])
    train_days = np.array(sorted(d for d, c in train_day_counts.items() if c > 0), dtype=np.int64)
    spec = dataclasses.replace(spec, split=split, columns=pass_columns)
    k = int(free.size)
    names = [cal.model.params[i].name for i in free]
    if n_train <= k:
        raise CalibrationError(f"{n_train} usable row(s) for {k} free parameter(s) ({', '.join(names)}) "
                               f"of model '{cal.model.name}': need more rows than parameters")
    pmin = min(p["pmin"] for p in prepared)
    pmax = max(p["pmax"] for p in prepared)
    if k and pmax - pmin <= 1e-12 * max(abs(pmin), abs(pmax)):
        raise CalibrationError(f"no variation in order size: all {n_usable} orders have participation "
                               f"Q/V = {pmin:.6g}; impact cannot be calibrated against size")
    if not any(p["wpos"] for p in prepared):
        raise CalibrationError("every weight is zero")
    items = [(t, int(u), int(tr), p["keep"]) for t, u, tr, p in zip(tasks, use_off, train_off, prepared)]
    return _Prepared(spec, items, validation, n_usable, n_train, train_days, span, weights)


def _check_order(cal: Calibrator, features0: Features, weights: str) -> list[tuple[str, str]]:
    """(reason, column) of `Calibrator._usable_mask`'s checks in its order (from zero rows with
    every check failing is impossible, so list them by name)."""
    part_col = "quantity/adv" if cal.participation == "adv" else "quantity/market_volume"
    out = [("participation must be a positive number", part_col),
           ("volatility missing or not positive", "volatility"),
           ("duration missing or not positive", "duration_s"),
           ("POV missing or outside (0, 1]", "market_volume"),
           ("spread missing or negative", "spread_bps"),
           ("cost missing", "cost_bps")]
    if weights == "column":
        out.append(("weight missing or negative", cal.weight_column))
    return out


def _start(cal: Calibrator, prep: _Prepared, runner: _Runner) -> np.ndarray:
    """model.start on the same evenly spaced training rows the in-memory fit uses."""
    spec = prep.spec
    if hasattr(cal.model, "start_terms"):
        # a closed-form start over every row (sqrt, linear): its two sums, not a subsample
        parts = runner.map(_gather_task, prep.items, "start values", spec=spec,
                           wanted=np.empty(0, np.int64), terms=True)
        num = sum(p["_terms"][0] for p in parts)
        den = sum(p["_terms"][1] for p in parts)
        x0 = cal.model.start_from_terms(num, den, spec.theta, spec.free)[spec.free]
        return np.clip(x0, spec.lo, spec.hi)
    sub = _subsample(prep.n_train, SUBSAMPLE_ROWS)
    wanted = np.arange(prep.n_train, dtype=np.int64) if isinstance(sub, slice) else sub
    parts = runner.map(_gather_task, prep.items, "start values", spec=spec, wanted=wanted)
    mapping = {c: np.concatenate([p[c] for p in parts]) for c in spec.inputs + spec.extra}
    feats = impact_features(mapping, cal.participation, extra_columns=spec.extra)
    w = cal._residual_weights(feats, prep.weights)
    x0 = cal.model.start(feats, feats.cost_bps, w, spec.theta, spec.free)[spec.free]
    return np.clip(x0, spec.lo, spec.hi)


def _covariance(sums: _Sums, n: float, k: int) -> tuple[np.ndarray, list[str]]:
    """`fit.sandwich_covariance` from the sums at the solution."""
    notes: list[str] = []
    if k == 0:
        return np.empty((0, 0)), notes
    A = sums.A
    eig = np.linalg.eigvalsh(A) if np.isfinite(A).all() else np.array([-1.0])
    if eig.min() <= 1e-12 * max(eig.max(), EPS):
        A = sums.A_irls
        notes.append("robust-loss Hessian not positive definite: standard errors use the IRLS form")
    try:
        Ainv = np.linalg.inv(A)
    except np.linalg.LinAlgError:
        notes.append("singular Jacobian: parameters are not identified, standard errors are NaN")
        return np.full((k, k), np.nan), notes
    cov = Ainv @ sums.B @ Ainv * (n / max(n - k, 1.0))
    if not np.isfinite(cov).all() or (np.diag(cov) < 0).any():
        notes.append("covariance is not finite: parameters are poorly identified")
    return 0.5 * (cov + cov.T), notes


def fit_dataset(calibrator: Calibrator, data, *, scheduler: str | None = None, executor=None,
                threads: int = 1, bootstrap: int = 0, bootstrap_steps: int = 1,
                bootstrap_seed: int | None = None, group_metrics: bool = False,
                progress: Callable[[dict], None] | None = None, batch_rows: int = DEFAULT_BATCH_ROWS,
                task_rows: int = DEFAULT_TASK_ROWS) -> StreamedResult:
    """Calibrate on a dataset (directory, `PartitionedDataset` or filtered `DatasetView`) without
    reading it into memory. `scheduler` = a Dask scheduler address (or EXECAL_DASK_SCHEDULER);
    none: this process (`threads` threads). `bootstrap` = resamples of whole days (see the module
    docstring; `bootstrap_steps` Gauss-Newton steps each). `group_metrics` adds metrics by side
    and size bucket (by venue and symbol come free with partitions). `progress(dict)` hears of
    every task done."""
    _check(calibrator)
    if bootstrap and bootstrap < 2:
        raise CalibrationError("bootstrap needs n ≥ 2 resamples")
    view = as_view(data)
    t0 = time.perf_counter()
    ex = executor or make_executor(scheduler, threads=threads)
    runner = _Runner(ex, progress)
    prep = _prepare(calibrator, view, runner, need_days=bool(bootstrap), batch_rows=batch_rows,
                    task_rows=task_rows, row_groups=group_metrics)
    spec = prep.spec
    if bootstrap:
        if prep.train_days.size < 2:
            raise CalibrationError(f"bootstrap by day needs at least 2 days, the data has {prep.train_days.size}")
        day0 = int(prep.train_days[0])
        spec = dataclasses.replace(spec, day0=day0, n_days=int(prep.train_days[-1]) - day0 + 1)
    k = int(spec.free.size)
    x0 = _start(calibrator, prep, runner) if k else np.empty(0)
    evaluations: list[_Sums] = []

    def evaluate(x):
        parts = runner.map(_evaluate_task, prep.items, "fit", spec=spec, X=np.asarray(x)[None, :])
        total = parts[0]
        for p in parts[1:]:
            total += p
        evaluations.append(total)
        return float(total.cost[0]), total

    def normal(x, state):
        return state.g[0], state.H[0]
    if k:
        sol = lm_solve(evaluate, normal, x0, spec.lo, spec.hi, calibrator.max_nfev, calibrator.tol)
    else:
        cost, state = evaluate(x0)
        sol = _Solution(x0, 1, "no free parameters: nothing to optimise", True, 1, 0, 0, cost,
                        np.zeros(0, dtype=int), state=state)
    final: _Sums = sol.state
    cov, notes = _covariance(final, float(prep.n_train), k)
    prob = _Problem(calibrator.model, None, None, None, spec.theta, spec.free, spec.lo, spec.hi,
                    calibrator.loss, calibrator.f_scale)
    report = calibrator._report(prob, sol, prep.weights, notes, n_rows=prep.n_train)
    theta = spec.theta.copy()
    theta[spec.free] = sol.x
    n_test = prep.n_usable - prep.n_train
    seconds = time.perf_counter() - t0
    groups = {name: {label: m.finish(m.z.n > 0) for label, m in sorted(labels.items())}
              for name, labels in final.groups.items()}
    noise_ok = final.in_sample.z.n > 0
    result = StreamedResult(
        model=calibrator.model, theta=theta, free=tuple(calibrator.model.params[i].name for i in spec.free),
        covariance=cov, report=report, participation=calibrator.participation, weights=prep.weights,
        validation=prep.validation, settings=calibrator.get_params(),
        bounds={calibrator.model.params[i].name: (float(a), float(b))
                for i, a, b in zip(spec.free, spec.lo, spec.hi)},
        in_sample=final.in_sample.finish(noise_ok), groups=groups,
        out_of_sample=final.out_of_sample.finish(final.out_of_sample.z.n > 0) if n_test else None,
        n_train=prep.n_train, n_test=n_test, span=prep.span,
        source={"dataset": str(view.dataset.root), "sha256": view.dataset.sha256,
                "filters": view.filters.to_dict(), "executor": ex.name, "passes": runner.passes,
                "tasks": len(prep.items), "seconds": seconds, "sse_w": final.sse_w})
    if bootstrap:
        boot = _bootstrap(calibrator, prep, spec, runner, result, final, bootstrap, bootstrap_steps,
                          calibrator.seed if bootstrap_seed is None else int(bootstrap_seed))
        result = result.with_bootstrap(boot)
        result.source["seconds"] = time.perf_counter() - t0
        result.source["passes"] = runner.passes
    return result


def _bootstrap(cal: Calibrator, prep: _Prepared, spec: _Spec, runner: _Runner, result: StreamedResult,
               final: _Sums, n: int, steps: int, seed: int) -> BootstrapResult:
    """Multinomial reweighting of day sums; `steps` Gauss-Newton steps from the estimate."""
    days = prep.train_days - spec.day0                     # slots of the days that have rows
    clusters = int(days.size)
    rng = np.random.default_rng(seed)
    counts = np.array([np.bincount(rng.integers(0, clusters, clusters), minlength=clusters)
                       for _ in range(n)], dtype=np.float64)              # (n, C)
    x_hat = result.theta[spec.free]
    k = x_hat.size
    X = np.repeat(x_hat[None, :], n, axis=0)
    ok = np.ones(n, dtype=bool)
    dg, dH = final.day_g[0][days], final.day_H[0][days]    # (C, k), (C, k, k) at the estimate
    for step in range(max(int(steps), 1)):
        if step:
            parts = runner.map(_evaluate_task, prep.items, f"bootstrap step {step + 1}", spec=spec, X=X)
            total = parts[0]
            for p in parts[1:]:
                total += p
        for b in range(n):
            if not ok[b]:
                continue
            if step:
                g = np.einsum("c,ck->k", counts[b], total.day_g[b][days])
                H = np.einsum("c,ckj->kj", counts[b], total.day_H[b][days])
            else:
                g = np.einsum("c,ck->k", counts[b], dg)
                H = np.einsum("c,ckj->kj", counts[b], dH)
            try:
                x_new = np.clip(X[b] - np.linalg.solve(H, g), spec.lo, spec.hi)
            except np.linalg.LinAlgError:
                ok[b] = False
                continue
            if not np.isfinite(x_new).all():
                ok[b] = False
                continue
            X[b] = x_new
    samples = X[ok]
    boot = BootstrapResult(by="day", n=n, seed=seed, clusters=clusters, names=result.free,
                           samples=samples.reshape(samples.shape[0], k), failures=int((~ok).sum()))
    boot.samples.flags.writeable = False
    return boot


# --- segments ------------------------------------------------------------------------------------

def fit_segments_dataset(calibrator: Calibrator, data, by: Sequence[str] = ("venue",), **options) -> SegmentedResult:
    """One streamed fit per segment (venue and symbol read only their partitions; side is a row
    filter) plus the pooled fit, and the test of equal coefficients (Wald; Chow from weighted SSR
    sums, one more pass per segment at the pooled parameters)."""
    by = (by,) if isinstance(by, str) else tuple(by)
    view = as_view(data)
    for b in by:
        if b not in ("venue", "symbol"):
            raise CalibrationError(f"segments by {b!r} out of core: choose venue or symbol (partition keys)")
        if b not in view.dataset.manifest["partitioning"]:
            raise DataError(f"segments by {b} need a '{b}' column", column=b)
    pooled = fit_dataset(calibrator, view, **options)
    combos = sorted({tuple(p[b] for b in by) for p in view.partitions.values()})
    segments, ss_u, ss_r, n = [], 0.0, 0.0, 0
    runner = _Runner(options.get("executor") or make_executor(options.get("scheduler"),
                                                              threads=options.get("threads", 1)),
                     options.get("progress"))
    for combo in combos:
        key = dict(zip(by, combo))
        name = ", ".join(f"{k}={v}" for k, v in key.items())
        f = view.filters
        sub = dataclasses.replace(
            f, symbols=_narrow(f.symbols, key.get("symbol")), venues=_narrow(f.venues, key.get("venue")))
        seg_view = DatasetView(view.dataset, sub)
        try:
            res = fit_dataset(calibrator, seg_view, **options)
        except (CalibrationError, DataError) as err:
            raise CalibrationError(f"segment {name}: {err}") from None
        segments.append(Segment(key=key, result=res))
        # the pooled parameters on this segment's training rows (its own split), for Chow
        prep = _prepare(calibrator, seg_view, runner, need_days=False,
                        batch_rows=options.get("batch_rows", DEFAULT_BATCH_ROWS),
                        task_rows=options.get("task_rows", DEFAULT_TASK_ROWS), row_groups=False)
        x = pooled.theta[prep.spec.free][None, :]
        parts = runner.map(_evaluate_task, prep.items, "segment test", spec=prep.spec, X=x)
        restricted = sum(p.sse_w for p in parts)
        # the segment's own fit is at its last accepted pass: its SSR is in its in-sample sums
        ss_u += res.source["sse_w"]
        ss_r += restricted
        n += res.n_train
    test = segment_test(pooled, [s.result for s in segments], chow_sums=(ss_u, ss_r, n))
    return SegmentedResult(by=by, pooled=pooled, segments=tuple(segments), test=test)


def _narrow(current: tuple[str, ...] | None, value: str | None):
    if value is None:
        return current
    if current is not None and value not in current:
        return ()
    return (value,)


# --- diagnostics from aggregates ---------------------------------------------------------------------

PARTICIPATION_EDGES = np.logspace(-6, 0, 25)     # 24 log bins of Q/V (plus under / overflow)
QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
_HIST_BINS = 1 << 14
_HIST_RANGE = float(np.arcsinh(1e6))              # residuals up to ±1e6 bps, finer near zero
SAMPLE_PER_STRATUM = 300


def _hist_bin(res: np.ndarray) -> np.ndarray:
    """Bin of each residual on an asinh grid (≈0.2 % relative width away from zero)."""
    u = np.arcsinh(res)
    b = np.floor((u + _HIST_RANGE) * (_HIST_BINS / (2 * _HIST_RANGE))).astype(np.int64)
    return np.clip(b, 0, _HIST_BINS - 1)


def _uniform(pos: np.ndarray, seed: int) -> np.ndarray:
    """A deterministic uniform [0, 1) per global row position (splitmix64): the same rows are
    sampled wherever the task runs."""
    with np.errstate(over="ignore"):
        z = pos.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15) * np.uint64(seed + 1)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def _diag_rows(spec: _Spec, batch, theta):
    """(usable index, features of the usable rows, predicted, residual) of a batch."""
    cal = spec.calibrator
    features, ts = _inputs(spec, batch)
    keep, _ = cal._usable_mask(features, spec.weights, need_cost=True)
    idx = np.flatnonzero(keep)
    f = features if idx.size == features.n else features.take_rows(idx, labels=False)
    pred = cal.model.predict(theta, f)
    return idx, f, pred, f.cost_bps - pred


def _stratum(codes, f: Features) -> np.ndarray:
    size = np.searchsorted(SIZE_BUCKET_EDGES, f.participation, side="right")
    return codes.astype(np.int64) * len(SIZE_BUCKET_LABELS) + size


def _diag_count_task(item, *, spec: _Spec, theta: np.ndarray, key_index: dict) -> dict:
    """Binned sums by participation, the residual histogram, rows per stratum."""
    task = item[0]
    nb = PARTICIPATION_EDGES.size + 1
    out = {"n": np.zeros(nb), "obs": np.zeros(nb), "pred": np.zeros(nb), "res2": np.zeros(nb),
           "hist": np.zeros(_HIST_BINS, dtype=np.int64),
           "strata": np.zeros(len(key_index) * len(SIZE_BUCKET_LABELS), dtype=np.int64)}
    for batch, codes, keys in _batches(spec, task):
        idx, f, pred, res = _diag_rows(spec, batch, theta)
        if idx.size == 0:
            continue
        b = np.searchsorted(PARTICIPATION_EDGES, f.participation, side="right")
        out["n"] += np.bincount(b, minlength=nb)
        out["obs"] += np.bincount(b, f.cost_bps, minlength=nb)
        out["pred"] += np.bincount(b, pred, minlength=nb)
        out["res2"] += np.bincount(b, res * res, minlength=nb)
        out["hist"] += np.bincount(_hist_bin(res), minlength=_HIST_BINS)
        glob = np.array([key_index[k] for k in keys], dtype=np.int64)[codes[idx]]
        out["strata"] += np.bincount(_stratum(glob, f), minlength=out["strata"].size)
    return out


def _diag_pick_task(item, *, spec: _Spec, theta: np.ndarray, key_index: dict, bins: np.ndarray,
                    rates: np.ndarray, seed: int) -> dict:
    """Residuals in the histogram bins that hold the wanted ranks, and the stratified sample."""
    task, offset = item[0], item[1]
    seen = 0
    vals = {int(b): [] for b in bins}
    sample: dict[str, list] = {"participation": [], "observed": [], "predicted": [], "stratum": []}
    for batch, codes, keys in _batches(spec, task):
        idx, f, pred, res = _diag_rows(spec, batch, theta)
        pos = offset + seen + np.arange(idx.size, dtype=np.int64)
        seen += idx.size
        if idx.size == 0:
            continue
        hb = _hist_bin(res)
        for b in vals:
            sel = hb == b
            if sel.any():
                vals[b].append(res[sel])
        glob = np.array([key_index[k] for k in keys], dtype=np.int64)[codes[idx]]
        strata = _stratum(glob, f)
        pick = _uniform(pos, seed) < rates[strata]
        if pick.any():
            sample["participation"].append(f.participation[pick])
            sample["observed"].append(f.cost_bps[pick])
            sample["predicted"].append(pred[pick])
            sample["stratum"].append(strata[pick])
    return {"values": {b: (np.concatenate(v) if v else np.empty(0)) for b, v in vals.items()},
            "sample": {k: (np.concatenate(v) if v else np.empty(0)) for k, v in sample.items()}}


def diagnostics_aggregate(result: StreamedResult, data, *, scheduler: str | None = None, executor=None,
                          threads: int = 1, quantiles: Sequence[float] = QUANTILES,
                          sample_per_stratum: int = SAMPLE_PER_STRATUM, seed: int = 0,
                          progress: Callable[[dict], None] | None = None,
                          batch_rows: int = DEFAULT_BATCH_ROWS, task_rows: int = DEFAULT_TASK_ROWS) -> dict:
    """What the Diagnostics figures need, from every usable row of `data` at `result`'s parameters
    without holding them: exact binned means of observed and predicted cost by participation
    (24 log bins), exact residual quantiles (a histogram pass finds the bins holding each rank,
    a second pass sorts only those; equal to numpy's linear-interpolated quantiles), and a
    stratified sample (venue × size bucket, up to `sample_per_stratum` rows each, chosen by a
    hash of the row position) for scatter points. Three passes (usable rows, counts, picks)."""
    cal = Calibrator(**result.settings)
    view = as_view(data)
    ex = executor or make_executor(scheduler, threads=threads)
    runner = _Runner(ex, progress)
    calibrator = cal.set_params(test_fraction=0.0)
    prep = _prepare(calibrator, view, runner, need_days=False, batch_rows=batch_rows,
                    task_rows=task_rows, row_groups=False)
    spec = dataclasses.replace(prep.spec, groups=tuple(
        g for g in ("venue",) if g in view.dataset.manifest["partitioning"]))
    keys = sorted({tuple(p.get(g) for g in spec.groups) for p in view.partitions.values()})
    key_index = {k: i for i, k in enumerate(keys)}
    theta = np.asarray(result.theta, dtype=np.float64)
    counts = runner.map(_diag_count_task, prep.items, "diagnostics: counts", spec=spec, theta=theta,
                        key_index=key_index)
    total = {k: sum(c[k] for c in counts) for k in counts[0]}
    n = int(total["hist"].sum())
    cum = np.cumsum(total["hist"])
    ranks = []
    for q in quantiles:
        h = (n - 1) * float(q)
        lo = int(np.floor(h))
        ranks.append((q, lo, min(lo + 1, n - 1), h - lo))
    need = sorted({int(np.searchsorted(cum, r, side="right")) for _, a, b, _ in ranks for r in (a, b)})
    rates = np.minimum(1.0, sample_per_stratum / np.maximum(total["strata"], 1)).astype(np.float64)
    picks = runner.map(_diag_pick_task, prep.items, "diagnostics: quantiles and sample", spec=spec,
                       theta=theta, key_index=key_index, bins=np.array(need, dtype=np.int64), rates=rates,
                       seed=seed)
    values = {b: np.sort(np.concatenate([p["values"][b] for p in picks])) for b in need}

    def at(rank):
        b = int(np.searchsorted(cum, rank, side="right"))
        start = int(cum[b - 1]) if b else 0
        return float(values[b][rank - start])
    qs = {str(q): at(a) + frac * (at(b) - at(a)) if b != a else at(a) for q, a, b, frac in ranks}
    sample = {k: np.concatenate([p["sample"][k] for p in picks]) for k in picks[0]["sample"]}
    nb = PARTICIPATION_EDGES.size + 1
    edges = np.concatenate([[0.0], PARTICIPATION_EDGES, [np.inf]])
    with np.errstate(invalid="ignore", divide="ignore"):
        bins = [{"lower": float(edges[i]), "upper": float(edges[i + 1]), "n": int(total["n"][i]),
                 "observed_mean_bps": float(total["obs"][i] / total["n"][i]),
                 "predicted_mean_bps": float(total["pred"][i] / total["n"][i]),
                 "rmse_bps": float(np.sqrt(total["res2"][i] / total["n"][i]))}
                for i in range(nb) if total["n"][i] > 0]
    stratum_labels = [f"{'/'.join(str(v) for v in k) or 'all'} {s}" for k in keys for s in SIZE_BUCKET_LABELS]
    return {"rows": n, "bins": bins, "quantiles": {"residual_bps": qs},
            "sample": {"rows": int(sample["observed"].size), "per_stratum": int(sample_per_stratum),
                       "strata": {stratum_labels[i]: int(c) for i, c in enumerate(total["strata"]) if c},
                       "participation": sample["participation"], "observed_bps": sample["observed"],
                       "predicted_bps": sample["predicted"],
                       "stratum": [stratum_labels[int(s)] for s in sample["stratum"]]},
            "passes": runner.passes,
            "note": (f"binned means and quantiles are exact over all {n:,} usable rows; points are a "
                     f"stratified sample ({'venue × ' if spec.groups else ''}size bucket, up to "
                     f"{sample_per_stratum} rows each)")}
