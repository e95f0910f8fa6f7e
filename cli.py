"""execal's command line: the same core as the app, JSON out, for nightly headless runs.

    execal inspect PATH [--kind K] [--map a=b,...]     summary of a data file or dataset directory (JSON)
    execal ingest SOURCE... --out DIR                  CSV / Parquet / captures -> partitioned dataset
    execal serve [--host H] [--port P] [--workers N]   the dashboard (gunicorn; --dev for Dash's server)
    execal models                                      models, parameters, optimizers, losses (JSON)
    execal calibrate PATH --model M [...] --out cfg    fit an execution-cost model, write the config
    execal predict --config cfg PATH [--out preds.csv] expected cost of each fill from a config
    execal vol PATH --model M [...] --out vol.json     realised / GARCH / Markov regimes / Merton
    execal surface PATH --model {svi,ssvi} --out s.json option volatility surface + arbitrage report

Wherever a command takes a file it also takes a dataset directory (made by `execal ingest`):
`calibrate` then streams it (out of core, optionally on a Dask cluster: --scheduler ADDR or
EXECAL_DASK_SCHEDULER), `predict` writes predictions batch by batch, the others read it into memory.

Exit codes: 0 ok, 2 bad input or usage (a short message on stderr, never a traceback),
3 the fit did not converge (the config is still written, with the optimizer's status), 1 unexpected.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

log = logging.getLogger("execal")


class UsageError(Exception):
    """A problem the user can fix from the command line; printed without a traceback."""


def _json_out(obj, out: str | None = None) -> None:
    text = json.dumps(obj, indent=2, default=str, allow_nan=False)
    if out:
        Path(out).write_text(text + "\n")
    else:
        sys.stdout.write(text + "\n")


# a dataset directory read into memory by a command that does not stream (vol, surface, inspect
# --rows) stops at this many rows: filter it, or use a command that streams
IN_MEMORY_ROWS = 20_000_000


def _load(path: str, kind: str | None, mapping: str | None):
    from execal.models.data.dataset import is_dataset, open_dataset
    from execal.models.data.io import load, parse_mapping

    if not Path(path).exists():
        raise UsageError(f"{path}: no such file")
    if is_dataset(path):
        ds = open_dataset(path)
        if kind is not None and kind != ds.kind:
            raise UsageError(f"{path}: the dataset holds {ds.kind}, not {kind}")
        if mapping:
            raise UsageError(f"{path}: a dataset has canonical columns already; --map applies to files")
        return ds.all().to_dataset(max_rows=IN_MEMORY_ROWS)
    return load(path, kind=kind, mapping=parse_mapping(mapping) if mapping else None)


def _is_dataset(path: str) -> bool:
    from execal.models.data.dataset import is_dataset

    return is_dataset(path)


# --- commands ---------------------------------------------------------------------------------

def cmd_inspect(args) -> int:
    if _is_dataset(args.path):
        from execal.models.data.dataset import open_dataset

        dataset = open_dataset(args.path)
        summary = dataset.summary()          # from the manifest: no row is read
        if args.report:
            summary["reports"] = [{"file": s["file"], **(s.get("report") or {})}
                                  for s in dataset.manifest["sources"]]
        _json_out(summary)
        return 0
    ds = _load(args.path, args.kind, args.map)
    summary = ds.summary()
    summary.pop("report", None) if not args.report else None
    _json_out(summary)
    return 0


def cmd_serve(args) -> int:
    if args.dev:
        from execal import app

        app.main(host=args.host, port=args.port, debug=False)
        return 0
    cmd = [sys.executable, "-m", "gunicorn", "-w", str(args.workers), "--threads", "4",
           "-b", f"{args.host}:{args.port}", "--timeout", "600", "--no-control-socket",
           # execal's own package directory as the working directory: gunicorn puts its working
           # directory first on sys.path, and a user's own app.py / models/ must never shadow ours
           "--chdir", str(Path(__file__).resolve().parent), "execal.app:server"]
    env = dict(os.environ)
    print(f"execal: serving on http://{args.host}:{args.port} ({args.workers} workers)", file=sys.stderr)
    os.execvpe(cmd[0], cmd, env)
    return 0  # pragma: no cover


def _pairs(text: str | None, what: str) -> dict[str, str]:
    """"a=1,b=2" -> {"a": "1", "b": "2"}."""
    out: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        name, sep, value = part.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise UsageError(f"{what}: expected name=value, got {part!r}")
        out[name.strip()] = value.strip()
    return out


def _number(text: str, what: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise UsageError(f"{what}: {text!r} is not a number") from None


def _filter(ds, args):
    """Apply --symbol/--venue/--start/--end; returns (frame, filters as recorded in provenance)."""
    import pandas as pd

    frame, filters = ds.frame, {}
    for col in ("symbol", "venue"):
        wanted = getattr(args, col)
        if wanted:
            if col not in frame.columns:
                raise UsageError(f"--{col}: {ds.source} has no '{col}' column")
            frame = frame[frame[col].isin(wanted)]
            filters[col] = list(wanted)
    for name, op in (("start", "ge"), ("end", "lt")):
        value = getattr(args, name)
        if value:
            try:
                ts = pd.Timestamp(value)
            except ValueError:
                raise UsageError(f"--{name}: {value!r} is not a date/time") from None
            ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
            frame = frame[getattr(frame["timestamp"], op)(ts)]
            filters[name] = ts.isoformat()
    if frame.empty:
        raise UsageError(f"{ds.source}: no rows left after the filters {filters}")
    return frame.reset_index(drop=True), filters


def cmd_ingest(args) -> int:
    from execal.models.data.dataset import fmt_bytes, ingest, open_dataset
    from execal.models.data.io import parse_mapping

    for src in args.sources:
        if not Path(src).is_file():
            raise UsageError(f"{src}: no such file")
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise UsageError(f"--out {args.out}: is a file, not a directory")

    def show(name, rows):
        if not args.quiet:
            print(f"execal: {name}: {rows:,} rows", file=sys.stderr, flush=True)
    report = ingest(args.sources, args.out, kind=args.kind,
                    mapping=parse_mapping(args.map) if args.map else None,
                    chunk_rows=args.chunk_rows, progress=show)
    out = report.to_dict()
    summary = open_dataset(args.out).summary()
    out["dataset"] = {k: summary[k] for k in ("kind", "rows", "start", "end", "symbols", "venues",
                                               "days", "partitions", "files", "bytes")}
    _json_out(out)
    if not args.quiet:
        print(f"execal: {args.out}: {summary['rows']:,} {summary['kind']} rows in "
              f"{summary['partitions']:,} partitions ({fmt_bytes(summary['bytes'])})", file=sys.stderr)
    return 0


def _view(path: str, args):
    """The dataset directory `path` with --symbol/--venue/--start/--end/--min-quantity/
    --max-quantity as a filtered view (pushed down to the partitions and pyarrow)."""
    from execal.models.data.dataset import open_dataset

    ds = open_dataset(path)
    if ds.kind != "fills":
        raise UsageError(f"{path}: the dataset holds {ds.kind}, not fills")
    if getattr(args, "map", None):
        raise UsageError(f"{path}: a dataset has canonical columns already; --map applies to files")
    view = ds.select(start=args.start, end=args.end, symbols=args.symbol, venues=args.venue,
                     min_quantity=getattr(args, "min_quantity", None),
                     max_quantity=getattr(args, "max_quantity", None))
    if not view.partitions:
        raise UsageError(f"{path}: no rows left after the filters {view.filters.to_dict()}")
    return view


def cmd_models(args) -> int:
    from execal.models.core.registry import describe

    _json_out(describe())
    return 0


def cmd_calibrate(args) -> int:
    import warnings

    from execal.models.impact.config import dump_config, make_provenance
    from execal.models.impact.fit import Calibrator, CalibrationWarning

    from execal.models.core.registry import OPTIMIZERS
    from execal.models.impact import timevarying as tv
    from execal.models.vol.realized import volatility_from_bars
    from execal.models.vol.regimes import with_regimes

    if _is_dataset(args.path):
        return _calibrate_dataset(args)
    if args.min_quantity is not None or args.max_quantity is not None:
        raise UsageError("--min-quantity / --max-quantity filter a dataset directory (execal ingest)")
    ds = _load(args.path, "fills", args.map)
    frame, filters = _filter(ds, args)
    provenance = make_provenance(ds, filters=filters, frame=frame)
    by = tuple(filter(None, (args.by or "").split(",")))
    time_varying = OPTIMIZERS[args.optimizer].strategy in tv.TIME_VARYING_STRATEGIES
    if time_varying and by:
        raise UsageError(f"--optimizer {args.optimizer} learns one path over time: it does not take --by")
    if ("regime" in by or args.volatility_from) and not args.bars:
        raise UsageError("--by regime and --volatility-from need --bars PATH (bars of the fills' symbols)")
    bars = _load(args.bars, "bars", None) if args.bars else None
    regimes = None
    if args.volatility_from:
        frame, provenance["volatility"] = volatility_from_bars(frame, bars, args.volatility_from,
                                                                  args.volatility_window)
    if "regime" in by:
        frame, regimes = with_regimes(frame, bars, k_regimes=args.regimes)
        for w in regimes["warnings"] + [f"dropped {d['count']} fills: {d['reason']}" for d in regimes["dropped"]]:
            print(f"execal: warning: {w}", file=sys.stderr)
    calibrator = _calibrator(args)
    path = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", CalibrationWarning)
        if time_varying:
            path = tv.calibrate_time_varying(calibrator, frame)
            result = pooled = path.result
        elif by:
            result = calibrator.fit_segments(frame, by=by)
            pooled = result.pooled
        else:
            result = pooled = calibrator.fit(frame)
        if args.bootstrap:
            boot = calibrator.bootstrap(frame, n=args.bootstrap, by=args.bootstrap_by, result=pooled)
            if args.by:
                result = type(result)(by=result.by, pooled=boot, segments=result.segments, test=result.test)
            else:
                result = boot
    for w in caught:
        print(f"execal: warning: {w.message}", file=sys.stderr)
    config = (path or result).to_config(provenance)
    if regimes:
        config["regimes"] = regimes
    text = dump_config(config, None, args.out or "json")
    if not args.out:
        sys.stdout.write(text)
    if not args.quiet:
        print(path.summary() if path else pooled.summary(), file=sys.stderr)
        if regimes:
            print(tv.regime_summary_text(result), file=sys.stderr)
    converged = pooled.report.success and all(s.result.report.success for s in getattr(result, "segments", ()))
    return 0 if converged else 3


def _calibrator(args):
    from execal.models.impact.fit import Calibrator

    fixed = {k: _number(v, "--fix") for k, v in _pairs(args.fix, "--fix").items()}
    bounds = {}
    for name, rng in _pairs(args.bound, "--bound").items():
        lo, sep, hi = rng.partition(":")
        if not sep:
            raise UsageError(f"--bound: expected name=lower:upper, got {name}={rng}")
        bounds[name] = (None if lo in ("", "-inf") else _number(lo, "--bound"),
                        None if hi in ("", "inf") else _number(hi, "--bound"))
    options = {k: _number(v, "--option") for k, v in _pairs(args.option, "--option").items()}
    options = {k: int(v) if float(v).is_integer() else v for k, v in options.items()}
    return Calibrator(model=args.model, optimizer=args.optimizer, loss=args.loss,
                      f_scale=args.f_scale, weights=args.weights, weight_column=args.weight_column,
                      fixed=fixed, bounds=bounds, participation=args.participation,
                      test_fraction=args.test_fraction, walk_forward=args.walk_forward,
                      multistart=args.multistart, seed=args.seed,
                      free=tuple(filter(None, (args.free or "").split(","))), options=options)


def _calibrate_dataset(args) -> int:
    """calibrate on a dataset directory: streamed, in-process or on a Dask cluster."""
    import warnings

    from execal.models.impact.config import dump_config
    from execal.models.impact.fit import CalibrationWarning
    from execal.models.impact.outofcore import fit_dataset, fit_segments_dataset

    if args.bars or args.volatility_from:
        raise UsageError("--bars / --volatility-from / --by regime need the fills in memory; "
                         "not available on a dataset directory")
    if args.bootstrap and args.bootstrap_by != "day":
        raise UsageError("on a dataset directory the bootstrap resamples days (--bootstrap-by day)")
    view = _view(args.path, args)
    by = tuple(filter(None, (args.by or "").split(",")))
    calibrator = _calibrator(args)
    last = [0.0]

    def progress(info):
        import time

        now = time.monotonic()
        if not args.quiet and (now - last[0] > 5 or info["tasks_done"] == info["tasks"]) and now - last[0] > 1:
            last[0] = now
            print(f"execal: pass {info['pass']} ({info['stage']}): {info['tasks_done']}/{info['tasks']} tasks",
                  file=sys.stderr, flush=True)
    options = dict(scheduler=args.scheduler, threads=args.threads, progress=progress,
                   bootstrap=args.bootstrap, bootstrap_steps=args.bootstrap_steps,
                   group_metrics=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", CalibrationWarning)
        if by:
            result = fit_segments_dataset(calibrator, view, by=by, **options)
            pooled = result.pooled
        else:
            result = pooled = fit_dataset(calibrator, view, **options)
    for w in caught:
        print(f"execal: warning: {w.message}", file=sys.stderr)
    provenance = {"file": view.source, "dataset": str(view.dataset.root), "sha256": view.dataset.sha256,
                  "rows": pooled.validation.rows_read, "start": pooled.span[0], "end": pooled.span[1],
                  "filters": view.filters.to_dict(), "out_of_core": {k: pooled.source[k] for k in
                                                                     ("executor", "passes", "tasks", "seconds")}}
    text = dump_config(result.to_config(provenance), None, args.out or "json")
    if not args.out:
        sys.stdout.write(text)
    if not args.quiet:
        print(pooled.summary(), file=sys.stderr)
    converged = pooled.report.success and all(s.result.report.success for s in getattr(result, "segments", ()))
    return 0 if converged else 3


def _predict_dataset(args, config) -> int:
    """predict on a dataset directory: batch by batch, so memory holds one batch."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    from execal.models.data.dataset import read_task
    from execal.models.impact.config import predict_from_config

    view = _view(args.path, args)
    columns = view.dataset.summary()["columns"]
    out = open(args.out, "wb") if args.out else sys.stdout.buffer
    writer = None
    try:
        for task in view.tasks():
            for batch in read_task(task, columns):
                frame = batch.to_pandas()
                frame["timestamp"] = frame["timestamp"].astype("datetime64[ns, UTC]")
                frame["predicted_cost_bps"] = predict_from_config(config, frame)
                if "cost_bps" in frame.columns:
                    frame["residual_bps"] = frame["cost_bps"] - frame["predicted_cost_bps"]
                table = pa.Table.from_pandas(frame, preserve_index=False)
                if writer is None:
                    writer = pacsv.CSVWriter(out, table.schema)
                writer.write_table(table)
    finally:
        if writer is not None:
            writer.close()
        if args.out:
            out.close()
    return 0


def cmd_predict(args) -> int:
    from execal.models.impact.config import load_config, predict_from_config

    config = load_config(args.config)
    if _is_dataset(args.path):
        return _predict_dataset(args, config)
    if args.symbol or args.venue or args.start or args.end:
        raise UsageError("--symbol/--venue/--start/--end of predict filter a dataset directory; "
                         "a file is predicted whole")
    ds = _load(args.path, "fills", args.map)
    frame = ds.frame.copy()
    frame["predicted_cost_bps"] = predict_from_config(config, frame)
    if "cost_bps" in frame.columns:
        frame["residual_bps"] = frame["cost_bps"] - frame["predicted_cost_bps"]
    frame["timestamp"] = frame["timestamp"].map(lambda t: t.isoformat())
    if args.out:
        frame.to_csv(args.out, index=False)
    else:
        frame.to_csv(sys.stdout, index=False)
    return 0


def cmd_vol(args) -> int:
    """Fit a volatility model to bars or trades; JSON with parameters, standard errors,
    log-likelihood and convergence (exit 3 when the fit did not converge; the JSON is still written)."""
    from execal.models.core.registry import get_model

    model = get_model(args.model, kind="volatility")
    ds = _load(args.path, args.kind, args.map)
    options = {"symbol": args.symbol, "bar": args.bar, "gaps": args.gaps}
    if args.model == "realized":
        options.update(estimator=args.estimator, freq=args.freq or "1D", window=args.window)
    else:
        options["freq"] = args.freq
    if args.model in ("garch", "gjr", "egarch"):
        options["dist"] = args.dist
    if args.model == "markov":
        options.update(k_regimes=args.regimes, switching_mean=args.switching_mean)
    result = model.fit(ds, **options)
    out = result.to_dict()
    if args.model in ("garch", "gjr", "egarch"):
        fc = result.forecast(args.horizon)
        out["forecast"] = [{"h": int(h), "timestamp": t.isoformat(), "sigma_daily": float(s),
                            "sigma_annualized": float(a)}
                           for h, t, s, a in zip(fc["h"], fc["timestamp"], fc["sigma_daily"],
                                                 fc["sigma_annualized"])]
    if args.model == "markov":
        out["regimes"] = out["summary"]["regimes"]
    _json_out(out, args.out)
    for w in result.warnings:
        print(f"execal: warning: {w}", file=sys.stderr)
    if not args.quiet:
        se = result.std_errors
        lines = [f"{args.model}: {result.message} (converged: {result.converged}, "
                 f"loglik {out['loglikelihood']})"]
        lines += [f"  {k:<16}{v:>14.6g}  ± {se.get(k, float('nan')):.3g}" for k, v in result.params.items()]
        for r in out.get("regimes", []):
            lines.append(f"  regime {r['regime']}: sigma_daily {r['sigma_daily']:.4g}, expected duration "
                         f"{r['expected_duration_days']:.3g} days, share of time {r['share_of_time']:.3f}")
        print("\n".join(lines), file=sys.stderr)
    return 0 if result.converged else 3


def cmd_surface(args) -> int:
    """Fit raw SVI per expiry or an SSVI surface to an option chain; JSON with, per expiry, the
    parameters, RMSE in vol points, optimizer report and butterfly violations, plus calendar
    violations (exit 3 when a slice's optimizer did not converge; the JSON is still written)."""
    from execal.models.surface.options import prepare_chain
    from execal.models.surface.svi import SurfaceCalibrator

    ds = _load(args.path, "options", args.map)
    chain = prepare_chain(ds, underlying=args.underlying, as_of=args.as_of, forward=args.forward,
                          iv_source=args.iv_source)
    calibrator = SurfaceCalibrator(args.model, args.weights, args.no_arbitrage, method=args.method)
    result = calibrator.fit(chain)
    out = result.to_dict()
    out["config"] = result.to_config()
    _json_out(out, args.out)
    for w in result.warnings + tuple(chain.report.warnings):
        print(f"execal: warning: {w}", file=sys.stderr)
    if not args.quiet:
        print(result.summary(), file=sys.stderr)
    converged = all(s.optimizer is None or s.optimizer.success for s in result.slices)
    return 0 if converged else 3


# --- parser -----------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    from execal.models.data.schema import KINDS

    ap = argparse.ArgumentParser(prog="execal", description="Execution-cost and volatility model calibration.")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("inspect", help="summarise and validate a data file (JSON to stdout)")
    p.add_argument("path")
    p.add_argument("--kind", choices=KINDS + ("ticker",), help="dataset kind (detected when omitted)")
    p.add_argument("--map", help="column mapping their_name=canonical_name,...")
    p.add_argument("--report", action="store_true", help="include the full validation report")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("ingest", help="turn CSV / Parquet / captures into a partitioned Parquet dataset "
                                      "(by day, symbol, venue) with a manifest; appends, skips files "
                                      "already ingested")
    p.add_argument("sources", nargs="+", metavar="SOURCE", help="data files (CSV, CSV.gz, Parquet, "
                   "Binance capture, Tardis CSV)")
    p.add_argument("--out", required=True, metavar="DIR", help="dataset directory (created or appended to)")
    p.add_argument("--kind", choices=KINDS + ("ticker",), help="dataset kind (detected when omitted)")
    p.add_argument("--map", help="column mapping their_name=canonical_name,...")
    p.add_argument("--chunk-rows", type=int, default=1_000_000,
                   help="rows validated at a time (memory is bounded by this; default 1,000,000)")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.set_defaults(func=cmd_ingest)

    from execal.models.core.registry import LOSSES, OPTIMIZERS, PARTICIPATION, WEIGHTS, models_of_kind

    p = sub.add_parser("models", help="list models, parameters, optimizers, losses and weights (JSON)")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("calibrate", help="fit an execution-cost model to fills and write its config")
    p.add_argument("path", help="fills file (CSV, CSV.gz or Parquet) or dataset directory (streamed)")
    p.add_argument("--model", required=True, choices=list(models_of_kind("impact")))
    p.add_argument("--optimizer", default="lm_normal", choices=list(OPTIMIZERS))
    p.add_argument("--loss", default="soft_l1", choices=list(LOSSES))
    p.add_argument("--f-scale", type=float, default=1.0, help="robust-loss scale (default 1)")
    p.add_argument("--weights", default="auto", choices=list(WEIGHTS))
    p.add_argument("--weight-column", help="the column for --weights column")
    p.add_argument("--participation", default="adv", choices=list(PARTICIPATION),
                   help="Q/adv (default) or Q/market_volume (horizon participation)")
    p.add_argument("--by", help="segment by venue, symbol, side, regime or a comma list (one fit each + "
                                "pooled); regime: volatility regimes of --bars")
    from execal.models.vol.realized import ESTIMATORS

    p.add_argument("--bars", help="bars file: volatility regimes (--by regime) and --volatility-from")
    p.add_argument("--regimes", type=int, default=2, choices=[2, 3],
                   help="--by regime: number of Markov volatility regimes (calm/stressed, or calm/elevated/stressed)")
    p.add_argument("--volatility-from", choices=list(ESTIMATORS),
                   help="replace the fills' volatility with this realised estimator on --bars (days before arrival)")
    p.add_argument("--volatility-window", type=int, default=20, metavar="DAYS",
                   help="--volatility-from: complete days averaged (default 20)")
    p.add_argument("--fix", help="fix parameters: name=value,...")
    p.add_argument("--bound", help="bound parameters: name=lower:upper,... (empty side = unbounded)")
    p.add_argument("--free", help="estimate parameters fixed by default (e.g. h)")
    p.add_argument("--option", help="optimizer options: name=value,... (see `execal models`)")
    p.add_argument("--test-fraction", type=float, default=0.0, help="latest share held out (0 = none)")
    p.add_argument("--walk-forward", type=int, default=0, help="expanding-window folds (0 = off)")
    p.add_argument("--multistart", type=int, default=0)
    p.add_argument("--bootstrap", type=int, default=0, metavar="N", help="bootstrap resamples (0 = off)")
    p.add_argument("--bootstrap-by", default="day", choices=["day", "order_id"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--symbol", action="append", help="keep only this symbol (repeatable)")
    p.add_argument("--venue", action="append", help="keep only this venue (repeatable)")
    p.add_argument("--start", help="keep fills at or after this UTC time")
    p.add_argument("--end", help="keep fills before this UTC time")
    p.add_argument("--min-quantity", type=float, help="dataset directory: keep fills with quantity >= this")
    p.add_argument("--max-quantity", type=float, help="dataset directory: keep fills with quantity <= this")
    p.add_argument("--bootstrap-steps", type=int, default=1,
                   help="dataset directory: Gauss-Newton steps per day-bootstrap resample (1 = one-step)")
    p.add_argument("--scheduler", metavar="ADDR",
                   help="dataset directory: run the passes on this Dask scheduler (default: "
                        "$EXECAL_DASK_SCHEDULER, else in this process)")
    p.add_argument("--threads", type=int, default=1, help="dataset directory, in this process: threads")
    p.add_argument("--map", help="column mapping their_name=canonical_name,...")
    p.add_argument("--out", help="config file (.json, .yaml); stdout (JSON) when omitted")
    p.add_argument("--quiet", action="store_true", help="no summary on stderr")
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("predict", help="expected cost of each fill from a config (CSV out)")
    p.add_argument("path", help="fills file or dataset directory (streamed batch by batch)")
    p.add_argument("--config", required=True, help="config written by `execal calibrate`")
    p.add_argument("--map", help="column mapping their_name=canonical_name,...")
    p.add_argument("--out", help="CSV file; stdout when omitted")
    for flag in ("--symbol", "--venue"):
        p.add_argument(flag, action="append", help=f"dataset directory: keep only this {flag[2:]} (repeatable)")
    p.add_argument("--start", help="dataset directory: keep fills at or after this UTC time")
    p.add_argument("--end", help="dataset directory: keep fills before this UTC time")
    p.set_defaults(func=cmd_predict)

    from execal.models.vol.realized import ESTIMATORS, GAP_POLICIES
    from execal.models.core.registry import models_of_kind

    p = sub.add_parser("vol", help="fit a volatility model (realised, GARCH family, regimes, jumps) to "
                                   "bars or trades (JSON)")
    p.add_argument("path", help="bars or trades file (CSV, CSV.gz, Parquet, Tardis, Binance capture)")
    p.add_argument("--model", required=True, choices=list(models_of_kind("volatility")))
    p.add_argument("--estimator", default="yang_zhang", choices=list(ESTIMATORS),
                   help="realised estimator reported in params (all are in the JSON); realized only")
    p.add_argument("--freq", help="realized: the period estimates are made over (default 1D); other "
                                  "models: the return interval, a multiple of the bar (default: the bar)")
    p.add_argument("--window", type=int, default=1, help="realized: periods pooled per estimate")
    p.add_argument("--bar", help="bar length built from trades (default 1min), or coarser bars from bars")
    p.add_argument("--gaps", default="error", choices=list(GAP_POLICIES),
                   help="missing bars: stop with an error (default) or skip the returns across them")
    p.add_argument("--dist", default="normal", choices=["normal", "t"], help="GARCH family errors")
    p.add_argument("--horizon", type=int, default=10, help="GARCH family forecast periods")
    p.add_argument("--regimes", type=int, default=2, choices=[2, 3], help="markov: number of regimes")
    p.add_argument("--switching-mean", action="store_true", help="markov: a mean per regime")
    p.add_argument("--symbol", help="the symbol to use when the file holds several")
    p.add_argument("--kind", choices=["bars", "trades"], help="dataset kind (detected when omitted)")
    p.add_argument("--map", help="column mapping their_name=canonical_name,...")
    p.add_argument("--out", help="JSON file; stdout when omitted")
    p.add_argument("--quiet", action="store_true", help="no summary on stderr")
    p.set_defaults(func=cmd_vol)

    from execal.models.surface.options import FORWARD_METHODS, IV_SOURCES
    from execal.models.surface.svi import WEIGHTS as SURFACE_WEIGHTS

    p = sub.add_parser("surface", help="fit an implied-volatility surface (raw SVI per expiry or SSVI) "
                                       "to an option chain, with its arbitrage report (JSON)")
    p.add_argument("path", help="option chain (Tardis options_chain CSV or a generic chain)")
    p.add_argument("--model", default="svi", choices=list(models_of_kind("surface")))
    p.add_argument("--weights", default="vega", choices=list(SURFACE_WEIGHTS),
                   help="residual weights: vega (default), inverse bid-ask spread, or uniform")
    p.add_argument("--no-arbitrage", action="store_true",
                   help="fit under the no-butterfly (and calendar) constraints")
    p.add_argument("--method", default="quasi_explicit", choices=["quasi_explicit", "least_squares"],
                   help="SVI optimizer: Zeliade's quasi-explicit reduction (default) or plain least squares")
    p.add_argument("--underlying", help="the coin to fit when the chain holds several (e.g. BTC)")
    p.add_argument("--as-of", help="snapshot time (UTC); default: the latest quote")
    p.add_argument("--forward", default="auto", choices=list(FORWARD_METHODS),
                   help="forward per expiry: futures price, else put-call parity, else underlying price")
    p.add_argument("--iv-source", default="auto", choices=list(IV_SOURCES),
                   help="invert prices (default when there are prices) or use the file's IVs")
    p.add_argument("--map", help="column mapping their_name=canonical_name,...")
    p.add_argument("--out", help="JSON file; stdout when omitted")
    p.add_argument("--quiet", action="store_true", help="no summary on stderr")
    p.set_defaults(func=cmd_surface)

    p = sub.add_parser("serve", help="start the dashboard")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8050)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--dev", action="store_true", help="Dash's development server instead of gunicorn")
    p.set_defaults(func=cmd_serve)
    return ap


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=os.environ.get("EXECAL_LOG", "WARNING"))
    from execal.models.impact.config import ConfigError
    from execal.models.impact.fit import CalibrationError
    from execal.models.data.schema import DataError

    ap = build_parser()
    args = ap.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (DataError, UsageError, CalibrationError, ConfigError) as err:
        print(f"execal: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as err:  # the user gets one line; the traceback goes to the log at debug level
        log.debug("unexpected error", exc_info=True)
        print(f"execal: unexpected error: {type(err).__name__}: {err} (set EXECAL_LOG=DEBUG for details)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
