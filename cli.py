"""execal's command line: the same core as the app, JSON out, for nightly headless runs.

    execal inspect PATH [--kind K] [--map a=b,...]     summary of a data file or dataset directory (JSON)
    execal ingest SOURCE... --out DIR                  CSV / Parquet / captures -> partitioned dataset
    execal serve [--host H] [--port P] [--workers N]   the dashboard (gunicorn; --dev for Dash's server)
    execal users add NAME [--file F]                   add a dashboard user (hashed password) to a users file
    execal worker [--concurrency N]                    Celery workers for background jobs (EXECAL_REDIS_URL)
    execal models                                      models, parameters, optimizers, losses (JSON)
    execal calibrate PATH --model M [...] --out cfg    fit an execution-cost model, write the config
    execal predict --config cfg PATH [--out preds.csv] expected cost of each fill from a config
    execal vol PATH --model M [...] --out vol.json     realised / GARCH / Markov regimes / Merton / HAR-RV
    execal surface PATH --model {svi,ssvi} --out s.json option volatility surface + arbitrage report
    execal orderflow CAPTURE... --out orderflow.json   OFI, Kyle's lambda, propagator, resilience per venue
    execal corr PATH... --method {realized,hy,dcc,shrinkage} --out corr.json   correlation structures
    execal surface PATH --model {heston,bates}          stochastic-vol / jump model calibrated to the chain
    execal monitor SOURCE... --config cfg [--fills F]  live model monitor: alarms, recalibration
    execal record SOURCE... --out DIR                  record streams in the capture format (hourly)

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
    """JSON to `out` (or stdout). Everything goes through the one cleaner; an object it does not know
    is an error here, never a silent repr string in the output."""
    from execal.models.core.jsonable import clean

    text = json.dumps(clean(obj), indent=2, allow_nan=False)
    if out:
        Path(out).write_text(text + "\n")
    else:
        sys.stdout.write(text + "\n")


# a dataset directory read into memory by a command that does not stream (vol, surface, inspect
# --rows) stops at this many rows: filter it, or use a command that streams
IN_MEMORY_ROWS = 20_000_000


def _expand(paths) -> list[str]:
    """Paths as given, a glob pattern ('capture-*.gz') expanded in name order."""
    import glob

    out = []
    for path in [paths] if isinstance(paths, str) else paths:
        if not Path(path).exists() and glob.has_magic(path):
            found = sorted(glob.glob(path))
            if not found:
                raise UsageError(f"{path}: no file matches")
            out += found
        elif not Path(path).exists():
            raise UsageError(f"{path}: no such file")
        else:
            out.append(path)
    return out


def _load(path, kind: str | None, mapping: str | None):
    """One file, several consecutive raw Binance captures (paths or glob patterns), or a dataset
    directory (`execal ingest`) read into memory."""
    from execal.models.data.dataset import is_dataset, open_dataset
    from execal.models.data.io import load, parse_mapping

    paths = _expand(path)
    if len(paths) == 1 and is_dataset(paths[0]):
        ds = open_dataset(paths[0])
        if kind is not None and kind != ds.kind:
            raise UsageError(f"{paths[0]}: the dataset holds {ds.kind}, not {kind}")
        if mapping:
            raise UsageError(f"{paths[0]}: a dataset has canonical columns already; --map applies to files")
        return ds.all().to_dataset(max_rows=IN_MEMORY_ROWS)
    source = paths[0] if len(paths) == 1 else paths
    return load(source, kind=kind, mapping=parse_mapping(mapping) if mapping else None)


def _is_dataset(path: str) -> bool:
    from execal.models.data.dataset import is_dataset

    return is_dataset(path)


# --- commands ---------------------------------------------------------------------------------

def cmd_inspect(args) -> int:
    if len(args.path) == 1 and _is_dataset(args.path[0]):
        from execal.models.data.dataset import open_dataset

        dataset = open_dataset(args.path[0])
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


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False     # a host name: it may resolve to anything


def gunicorn_command(host: str, port: int, workers: int = 2, threads: int = 8) -> list[str]:
    """The gunicorn command line `execal serve` runs (the load benchmark and tests run exactly this).
    Threads: a background job's poll waits up to a second for its result (sleeping, not computing), so
    each worker keeps threads for the polls besides those that compute."""
    return [sys.executable, "-m", "gunicorn", "-w", str(workers), "--threads", str(threads),
            "-b", f"{host}:{port}", "--timeout", "600", "--no-control-socket",
            # execal's own package directory as the working directory: gunicorn puts its working
            # directory first on sys.path, and a user's own app.py / models/ must never shadow ours
            "--chdir", str(Path(__file__).resolve().parent), "execal.app:server"]


def _auth_configured() -> bool:
    return bool(os.environ.get("EXECAL_USERS_FILE", "").strip() or os.environ.get("EXECAL_AUTH_HEADER", "").strip())


def cmd_serve(args) -> int:
    if not _is_loopback(args.host) and not _auth_configured():
        print(f"execal: warning: --host {args.host} makes the dashboard reachable from other machines without "
              "authentication: anyone who can reach it can upload files and run jobs. Set EXECAL_USERS_FILE "
              "(execal users add NAME) or EXECAL_AUTH_HEADER behind an authenticating proxy, or bind "
              "127.0.0.1 (the default).", file=sys.stderr)
    if args.dev:
        from execal import app

        app.main(host=args.host, port=args.port, debug=False)
        return 0
    cmd = gunicorn_command(args.host, args.port, args.workers)
    env = dict(os.environ)
    print(f"execal: serving on http://{args.host}:{args.port} ({args.workers} workers)", file=sys.stderr)
    os.execvpe(cmd[0], cmd, env)
    return 0  # pragma: no cover


def cmd_users(args) -> int:
    import getpass

    from execal.components import identity

    path = args.file or os.environ.get("EXECAL_USERS_FILE", "").strip()
    if not path:
        raise UsageError("name the users file: --file PATH, or set EXECAL_USERS_FILE")
    try:
        if args.action == "list":
            for name in sorted(identity.read_users(path)):
                print(name)
            return 0
        if args.action == "remove":
            users = identity.read_users(path)
            if args.name not in users:
                raise UsageError(f"no user {args.name!r} in {path}")
            identity.remove_user(path, args.name)
            print(f"execal: removed {args.name} from {path}", file=sys.stderr)
            return 0
        if not args.name:
            raise UsageError("execal users add NAME")
        if args.password_stdin:
            password = sys.stdin.readline().rstrip("\n")
        else:
            password = getpass.getpass(f"password for {args.name}: ")
            if getpass.getpass("again: ") != password:
                raise UsageError("the two passwords differ")
        identity.add_user(path, args.name, password)
    except identity.UsersFileError as err:
        raise UsageError(str(err)) from None
    print(f"execal: {args.name} can sign in (users file {path}; serve with EXECAL_USERS_FILE={path})",
          file=sys.stderr)
    return 0


def cmd_worker(args) -> int:
    from execal.components import layout  # noqa: F401  (registers every panel's background jobs)
    from execal.components import scaleout

    try:
        scaleout.backend_from_env()
    except ValueError as err:
        raise UsageError(str(err)) from None
    print(f"execal: Celery workers ({args.concurrency} processes) on {scaleout.redis_url()}", file=sys.stderr)
    scaleout.worker_main(concurrency=args.concurrency, name=args.name, loglevel=args.loglevel)
    return 0


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


def _finish(result, args, caught=()) -> int:
    """What every fitting command ends with: the result's summary on stderr (with --quiet only its
    warnings), any other warning raised while fitting, and the exit code from `result.converged`
    (3: not converged; the output was written all the same)."""
    carried = list(result.warnings)
    others = [w for w in dict.fromkeys(str(c) for c in caught) if w not in carried]
    if args.quiet:
        for w in carried:
            print(f"execal: warning: {w}", file=sys.stderr)
    else:
        print(result.summary(), file=sys.stderr)
    for w in others:
        print(f"execal: warning: {w}", file=sys.stderr)
    return 0 if result.converged else 3


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
    import dataclasses
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
    if time_varying and args.bootstrap:
        raise UsageError(f"--optimizer {args.optimizer} learns a path: --bootstrap resamples a batch fit")
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
            # a path of parameters: the time-varying estimator (its config holds the path)
            result = tv.TimeVaryingCalibrator.from_calibrator(calibrator).fit(frame)
        elif by:
            result = calibrator.fit_segments(frame, by=by)
        else:
            result = calibrator.fit(frame)
        if args.bootstrap:
            pooled = getattr(result, "pooled", result)
            boot = calibrator.bootstrap(frame, n=args.bootstrap, by=args.bootstrap_by, result=pooled)
            result = dataclasses.replace(result, pooled=boot) if by else boot
    config = result.to_config(provenance)
    if regimes:
        config["regimes"] = regimes
    text = dump_config(config, None, args.out or "json")
    if not args.out:
        sys.stdout.write(text)
    code = _finish(result, args, [w.message for w in caught])
    if regimes and not args.quiet:
        print(tv.regime_summary_text(result), file=sys.stderr)
    return code


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
    from execal.models.data.csvsafe import neutralise
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
    frame = neutralise(frame)          # text cells a spreadsheet would run as formulas
    if args.out:
        frame.to_csv(args.out, index=False)
    else:
        frame.to_csv(sys.stdout, index=False)
    return 0


def cmd_vol(args) -> int:
    """Fit a volatility model to bars or trades (`VolatilityCalibrator`); JSON with parameters,
    standard errors, the optimizer report, statistics, forecasts (models that forecast) and every
    warning. `result.summary()` and the warnings go to stderr; exit 3 when `result.converged` is
    False (the JSON is still written)."""
    from execal.models.vol.base import VolatilityCalibrator

    settings = _vol_settings(args)
    calibrator = VolatilityCalibrator(args.model, **settings)
    if _is_dataset(args.path):
        data = _vol_bars_of_dataset(args, settings)
    else:
        if args.venue or args.start or args.end or args.scheduler:
            raise UsageError("--venue / --start / --end / --scheduler filter a dataset directory (execal ingest)")
        data = _load(args.path, args.kind, args.map)
    result = calibrator.fit(data)
    out = result.to_dict()
    if calibrator.spec.forecasts and args.horizon:
        fc = result.forecast(args.horizon)
        out["forecast"] = [{"h": int(h), "timestamp": t.isoformat(), "sigma_daily": s, "sigma_annualized": a}
                           for h, t, s, a in zip(fc["h"], fc["timestamp"], fc["sigma_daily"].map(_finite),
                                                 fc["sigma_annualized"].map(_finite))]
    _json_out(out, args.out)
    if args.quiet:
        for w in result.warnings:
            print(f"execal: warning: {w}", file=sys.stderr)
    else:                                   # the summary ends with every warning
        print(result.summary(), file=sys.stderr)
    return 0 if result.converged else 3


def _vol_bars_of_dataset(args, settings: dict):
    """The bars of a dataset directory of trades or bars for `vol`, aggregated out of core with
    the filters pushed down (`streambars.dataset_bar_series`), on a Dask cluster when given."""
    from execal.models.core.registry import get_model
    from execal.models.data.dataset import open_dataset
    from execal.models.data.streambars import dataset_bar_series

    if args.map:
        raise UsageError(f"{args.path}: a dataset has canonical columns already; --map applies to files")
    if "bar" not in get_model(args.model, kind="volatility").defaults():
        raise UsageError(f"--model {args.model} takes given returns, not bars: it cannot read a dataset directory")
    ds = open_dataset(args.path)
    if args.kind and args.kind != ds.kind:
        raise UsageError(f"{args.path}: the dataset holds {ds.kind}, not {args.kind}")
    view = ds.select(start=args.start, end=args.end, venues=args.venue)
    return dataset_bar_series(view, symbol=settings.get("symbol"), bar=settings.get("bar"),
                              gaps=settings.get("gaps") or "error", scheduler=args.scheduler,
                              threads=args.threads)


def _finite(x):
    x = float(x)
    return x if x == x and abs(x) != float("inf") else None


# settings that are not command-line flags (given returns only, or optimizer dicts)
_VOL_NOT_FLAGS = {"period", "options"}
# flags older than the generated ones, kept as aliases
_VOL_ALIASES = {"k_regimes": ("--regimes",)}


def _vol_flags() -> dict[str, dict]:
    """Every volatility model's settings as command-line flags, from the registry: name ->
    {models, default, choices, help}. A new model's settings become flags without editing here."""
    from execal.models.core.registry import models_of_kind

    import inspect

    flags: dict[str, dict] = {}
    for name, model in models_of_kind("volatility").items():
        annotations = {k: str(p.annotation) for k, p in inspect.signature(model.fit_fn).parameters.items()}
        for setting, default in model.defaults().items():
            if setting in _VOL_NOT_FLAGS:
                continue
            f = flags.setdefault(setting, {"models": [], "defaults": [], "choices": None, "helps": {},
                                           "annotation": annotations.get(setting, "")})
            f["models"].append(name)
            f["defaults"].append(default)
            choices = model.options.get(setting)
            if isinstance(choices, tuple):
                f["choices"] = list(dict.fromkeys((f["choices"] or []) + list(choices)))
            f["helps"].setdefault(model.help(setting) or setting, []).append(name)
    for f in flags.values():         # one help when the models agree, else each model's own
        helps = f.pop("helps")
        f["help"] = next(iter(helps)) if len(helps) == 1 else "; ".join(
            f"{', '.join(models)}: {text}" for text, models in helps.items())
    return flags


def _int_list(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected whole numbers separated by commas, got {text!r}") from None


def _add_vol_flags(p) -> None:
    from execal.models.core.registry import model_names

    every = model_names("volatility")
    for setting, f in _vol_flags().items():
        names = [f"--{setting.replace('_', '-')}", *_VOL_ALIASES.get(setting, ())]
        defaults = [d for d in f["defaults"] if d is not None]
        shown = (str(defaults[0]) if len(defaults) == len(f["models"]) and len(set(map(str, defaults))) == 1 else
                 ", ".join(dict.fromkeys(f"{m}: {d}" for m, d in zip(f["models"], f["defaults"]) if d is not None)))
        models = "all models" if f["models"] == every else ", ".join(f["models"])
        text = f"{f['help'] or setting} ({models}" + (f"; default {shown})" if shown else ")")
        kw: dict = {"dest": setting, "default": None, "help": text}
        sample = defaults[0] if defaults else None
        if f["choices"] and all(isinstance(c, bool) for c in f["choices"]) or isinstance(sample, bool):
            kw["action"] = argparse.BooleanOptionalAction
        elif f["choices"]:
            kw.update(choices=f["choices"], type=type(f["choices"][0]))
        elif isinstance(sample, (tuple, list)):
            kw.update(type=_int_list, metavar="N,N,...")
        elif isinstance(sample, int) or (sample is None and f["annotation"].startswith("int")):
            kw["type"] = int
        elif isinstance(sample, float) or (sample is None and f["annotation"].startswith("float")):
            kw["type"] = float
        p.add_argument(*names, **kw)


def _vol_settings(args) -> dict:
    """The settings the user gave on the command line that the chosen model has."""
    from execal.models.core.registry import get_model

    model = get_model(args.model, kind="volatility")
    known = model.defaults()
    given = {s: getattr(args, s) for s in _vol_flags() if getattr(args, s, None) is not None}
    unknown = sorted(set(given) - set(known))
    if unknown:
        flags = ", ".join(f"--{u.replace('_', '-')}" for u in unknown)
        raise UsageError(f"--model {args.model} does not take {flags} (its settings: "
                         f"{', '.join(k for k in known if k not in _VOL_NOT_FLAGS)})")
    return given


def cmd_surface(args) -> int:
    """Fit raw SVI per expiry or an SSVI surface to an option chain; JSON with, per expiry, the
    parameters, RMSE in vol points, optimizer report and butterfly violations, plus calendar
    violations (exit 3 when a slice's optimizer did not converge; the JSON is still written)."""
    from execal.models.core.registry import get_model
    from execal.models.surface.heston import StochasticVolCalibrator
    from execal.models.surface.options import prepare_chain
    from execal.models.surface.svi import SurfaceCalibrator

    ds = _load(args.path, "options", args.map)
    chain = prepare_chain(ds, underlying=args.underlying, as_of=args.as_of, forward=args.forward,
                          iv_source=args.iv_source, price_unit=args.price_unit, strict=not args.lenient)
    print(f"execal: option prices read as {chain.price_unit}: {chain.price_unit_reason}", file=sys.stderr)
    pricing = getattr(get_model(args.model, "surface"), "family", "smile") == "pricing"
    if pricing:   # heston, bates: a model of the underlying calibrated to the chain's prices or vols
        if args.no_arbitrage:
            print(f"execal: note: --no-arbitrage has no effect on {args.model}: its prices are free of static "
                  "arbitrage by construction", file=sys.stderr)
        calibrator = StochasticVolCalibrator(args.model, args.target, args.weights, seed=args.seed)
    else:
        calibrator = SurfaceCalibrator(args.model, args.weights, args.no_arbitrage, method=args.method)
    result = calibrator.fit(chain)
    out = result.to_dict()
    out["config"] = result.to_config()
    _json_out(out, args.out)
    return _finish(result, args, chain.report.warnings)


def cmd_orderflow(args) -> int:
    """Order flow and price formation per venue from Binance raw captures: OFI regressions, Kyle's
    lambda and Amihud, sign memory and the propagator kernel, resilience; JSON with every result
    and the per-venue table (exit 3 when a model could not be fitted or did not converge; the
    JSON is still written)."""
    from execal.models.data.binance import market_from_name
    from execal.models.orderflow.analysis import MODELS, analyse, parse_windows
    from execal.models.orderflow.data import load_venue

    windows = parse_windows(args.windows)
    aliases = {"usdm": "binance-usdm", "spot": "binance-spot", "coinm": "binance-coinm", "cm": "binance-coinm"}
    wanted = {aliases.get(v.strip().lower(), v.strip().lower()) for v in (args.venue or [])}
    venues = []
    for path in args.captures:
        if not Path(path).exists():
            raise UsageError(f"{path}: no such file")
        guess = market_from_name(path)
        if wanted and guess and aliases[guess] not in wanted:
            continue                     # the file name says it is a venue not asked for
        data = load_venue(path, levels=args.levels, market=args.market)
        if wanted and data.venue.lower() not in wanted:
            continue
        venues.append(data)
    if not venues:
        raise UsageError(f"no capture left for --venue {', '.join(sorted(wanted))}")
    from execal.models.core.registry import model_names

    models = [m.strip() for m in (args.models or ",".join(MODELS)).split(",") if m.strip()]
    unknown = [m for m in models if m not in model_names("orderflow")]
    if unknown:
        raise UsageError(f"--models: unknown order-flow model(s) {', '.join(unknown)} "
                         f"(available: {', '.join(model_names('orderflow'))})")
    settings = {"propagator": {"max_lag": args.max_lag}, "resilience": {"share": args.share}}
    report = analyse(venues, windows_s=windows, levels=args.levels, models=models,
                     settings={k: v for k, v in settings.items() if k in models})
    _json_out(report.to_dict(curves=not args.no_curves), args.out)
    for w in report.warnings:
        print(f"execal: warning: {w}", file=sys.stderr)
    if not args.quiet:
        print(report.summary(), file=sys.stderr)
    return 0 if report.converged else 3


def _floats(text: str | None, what: str) -> list[float] | None:
    if not text:
        return None
    return [_number(v.strip(), what) for v in text.split(",") if v.strip()]


def _corr_basket(args, result):
    """The basket-cost block of `execal corr --basket` (Almgren–Chriss with this covariance)."""
    from execal.models.corr.basket import BasketCost

    quantities = {k: _number(v, "--basket") for k, v in _pairs(args.basket, "--basket").items()}
    prices = {k: _number(v, "--prices") for k, v in _pairs(args.prices, "--prices").items()}
    adv = {k: _number(v, "--adv") for k, v in _pairs(args.adv, "--adv").items()}
    return BasketCost(quantities=quantities, prices=prices, adv=adv, eta_bps=args.eta_bps, gamma_bps=args.gamma_bps,
                      half_spread_bps=args.half_spread_bps, horizon_days=args.horizon_days, steps=args.steps,
                      risk_aversion=args.risk_aversion).fit(result)


def _corr_regimes(args, panel):
    """Calm / stressed correlation matrices: Markov-switching regimes of one asset's returns (the volatility
    area's model, composed here: the correlation area only takes labels)."""
    import numpy as np

    from execal.models.corr.regimes import RegimeCorrelations
    from execal.models.data.bars import Returns
    from execal.models.data.schema import ValidationReport
    from execal.models.vol.base import VolatilityCalibrator
    from execal.models.vol.regimes import REGIME_NAMES

    asset = args.regime_asset or panel.names[0]
    if asset not in panel.names:
        raise UsageError(f"--regime-asset {asset!r}: not one of {list(panel.names)}")
    ret = Returns(panel.column(asset), panel.t_ns, panel.period_ns, ", ".join(panel.sources), asset,
                  ValidationReport(rows_read=panel.n, rows_kept=panel.n))
    markov = VolatilityCalibrator("markov", k_regimes=args.regimes).fit(ret)
    names = REGIME_NAMES[args.regimes]
    labels = np.asarray(names, dtype=object)[np.asarray(markov.smoothed).argmax(1)]
    result = RegimeCorrelations(order=names).fit(panel, labels)
    info = {"asset": asset, "k_regimes": args.regimes, "converged": bool(markov.converged),
            "message": markov.report.message, "labels": "most probable smoothed regime of the Markov-switching variance "
            f"of {asset}'s returns (execal.models.vol.base.VolatilityCalibrator, model markov)",
            "regimes": [{"name": names[r["regime"]], "sigma_daily": r["sigma_daily"],
                         "expected_duration_days": r["expected_duration_days"], "share_of_time": r["share_of_time"]}
                        for r in markov.regimes]}
    warn = list(result.warnings) + ([] if markov.converged else
                                    [f"the Markov fit of {asset} did not converge ({markov.report.message}): the regime "
                                     "labels are unreliable"])
    return result, info, warn, bool(markov.converged)


def cmd_corr(args) -> int:
    """Correlation of several series: realised covariance + Epps curve, or Hayashi–Yoshida + lead–lag
    (ticks: trades or quotes), or DCC-GARCH, or Ledoit–Wolf (returns of bars or trades); optional
    regime-conditional matrices and a basket's execution cost. JSON out; exit 3 when a fit did not converge."""
    from execal.models.corr.spec import CLI_METHODS
    from execal.models.core.registry import get_model
    from execal.models.data.schema import DataError
    from execal.models.impact.config import make_provenance

    spec = get_model(CLI_METHODS[args.method], kind="correlation")
    tick_method = spec.input == "ticks"
    if args.basket and not (args.prices and args.adv):
        raise UsageError("--basket needs --prices NAME=USD,... and --adv NAME=UNITS_PER_DAY,... for every asset traded")
    if args.regimes and tick_method:
        raise UsageError("--regimes needs returns (--method dcc or shrinkage), not tick data")
    datasets = [_load(p, args.kind, args.map) for p in args.paths]
    if tick_method:
        settings = {"price": args.price}
        intervals = None if args.epps in (None, "auto") else _floats(args.epps, "--epps")
        if args.method == "realized":
            settings.update(interval=args.interval, grid=args.grid, epps_intervals=intervals, epps=not args.no_epps)
        else:
            settings.update(lead_lag=not args.no_lead_lag, max_lag_s=args.max_lag_s, lag_step_s=args.lag_step_s,
                            band=args.band, alpha=args.alpha, n_shifts=args.shifts, seed=args.seed,
                            epps=args.epps is not None and not args.no_epps, epps_intervals=intervals)
    elif args.method == "dcc":
        settings = {"vol": args.vol, "dist": args.dist, "mean": args.mean, "freq": args.freq, "bar": args.bar,
                    "maxiter": args.maxiter}
    else:
        settings = {"freq": args.freq, "bar": args.bar, "n_boot": args.boot, "seed": args.seed}
    estimator = spec.estimator(**settings)
    try:
        if tick_method:
            data = datasets
            if args.symbol:
                from execal.models.corr.ticks import tick_series, unique_names

                data = unique_names([s for ds in datasets for sym in args.symbol
                                     for s in tick_series(ds, price=args.price, symbol=sym)
                                     if sym in set(ds.frame.get("symbol", []))])
            result = estimator.fit(data)
        else:
            panel = estimator.panel(datasets)
            if args.symbol:
                keep = [n for n in panel.names if n in args.symbol]
                if len(keep) < 2:
                    raise UsageError(f"--symbol keeps {keep}: a correlation needs two of {list(panel.names)}")
                import numpy as np
                from execal.models.corr.panel import ReturnPanel

                cols = [panel.names.index(n) for n in keep]
                panel = ReturnPanel(np.asarray(panel.values)[:, cols], panel.t_ns, tuple(keep), panel.period_ns,
                                    panel.sources, panel.report)
            result = estimator.fit(panel)
        converged = result.converged
        out = result.to_dict(horizon=args.horizon) if args.method == "dcc" else result.to_dict()
        warnings = list(result.warnings)
        if args.regimes:
            regimes, info, warn, ok = _corr_regimes(args, result.panel)
            out["regimes"] = {**info, **regimes.to_dict()}
            warnings += warn
            converged = converged and ok
        if args.basket:
            basket = _corr_basket(args, result)
            out["basket"] = basket.to_dict()
            warnings += list(basket.warnings)
    except (DataError, UsageError):
        raise
    except ValueError as err:          # a setting the estimator refuses: the user's to fix, one line
        raise UsageError(str(err)) from None
    out["inputs"] = [{**make_provenance(ds), "kind": ds.kind, "warnings": list(ds.report.warnings)}
                     for ds in datasets]
    out["config"] = result.to_config({"files": out["inputs"]})
    _json_out(out, args.out)
    for w in warnings:
        print(f"execal: warning: {w}", file=sys.stderr)
    if not args.quiet:
        print(result.summary(), file=sys.stderr)
        if args.regimes:
            print(regimes.summary(), file=sys.stderr)
        if args.basket:
            print(basket.summary(), file=sys.stderr)
    return 0 if converged else 3


# --- live -------------------------------------------------------------------------------------

def _live_sources(args):
    """Capture files (replayed by a local server) and MARKET:SYMBOL live sources."""
    from execal.live.sources import parse_source

    endpoints = {}
    for item in args.endpoint or []:
        market, sep, rest = item.partition("=")
        ws, sep2, http = rest.partition(",")
        if not sep or not sep2:
            raise UsageError(f"--endpoint: expected MARKET=WS_BASE,REST_BASE, got {item!r}")
        endpoints[market] = (ws, http)
    files, live = [], []
    for src in args.sources:
        if Path(src).exists():
            files.append(src)
        elif ":" in src and not src.startswith(("/", ".")):
            try:
                live.append(parse_source(src, endpoints=endpoints, depth_stream=args.depth_stream))
            except ValueError as exc:
                raise UsageError(str(exc)) from None
        else:
            raise UsageError(f"{src}: no such capture file (or MARKET:SYMBOL for a live stream)")
    if files and live:
        raise UsageError("monitor either capture files (replayed) or live streams, not both at once")
    return files, live


def _speed(text: str | None):
    if text is None or str(text).lower() in ("max", "full", "0", "inf"):
        return None
    value = _number(text, "--speed")
    if not value > 0:
        raise UsageError("--speed: must be > 0 (or 'max')")
    return value


def _run_live(args, monitor, *, recorder=None, fills=()) -> dict:
    import asyncio
    import signal

    from execal.live.runner import RunOptions, Runner
    from execal.live.sources import ReplayServer

    files, live = _live_sources(args)
    options = RunOptions(status_every_s=args.status_every, duration_s=args.duration,
                         state_dir=Path(args.state_dir) if getattr(args, "state_dir", None) else None,
                         tick_every=getattr(args, "tick_every", 1))

    def status(line: str) -> None:
        if not args.quiet:
            print(f"execal: {line}", file=sys.stderr, flush=True)

    async def main():
        loop = asyncio.get_running_loop()
        server = None
        sources = live
        if files:
            server = ReplayServer(files, speed=_speed(args.speed), loop=getattr(args, "loop", False))
            await server.start()
            sources = server.sources()
            server.wait_clients = len(sources)
        runner = Runner(monitor, sources, options, list(fills), replay=server, recorder=recorder,
                        status_out=status)
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, runner.request_stop)
        try:
            return await runner.run()
        finally:
            if server is not None:
                await server.stop()

    return asyncio.run(main())


def _monitor_settings(args):
    from dataclasses import fields

    from execal.live.engine import MonitorSettings

    settings = MonitorSettings()
    known = {f.name: f for f in fields(MonitorSettings)}
    for name, value in _pairs(args.set, "--set").items():
        if name not in known:
            raise UsageError(f"--set: unknown setting {name!r} (one of {', '.join(known)})")
        current = getattr(settings, name)
        if isinstance(current, bool):
            parsed = value.lower() in ("1", "true", "yes", "on")
        elif isinstance(current, tuple):
            parsed = tuple(v for v in value.split("/") if v)
            parsed = tuple(float(v) for v in parsed) if name in ("depth_bps", "walk_sizes") else parsed
        elif isinstance(current, int) and not isinstance(current, bool):
            parsed = int(_number(value, f"--set {name}"))
        elif isinstance(current, float):
            parsed = _number(value, f"--set {name}")
        else:
            parsed = value
        setattr(settings, name, parsed)
    if args.regime:
        from execal.models.live.regime import regime_from_vol_json

        try:
            settings.regime = regime_from_vol_json(json.loads(Path(args.regime).read_text()))
        except (OSError, ValueError, KeyError) as exc:
            raise UsageError(f"--regime {args.regime}: {exc}") from None
    if args.no_auto_switch:
        settings.auto_switch = False
    return settings


def cmd_monitor(args) -> int:
    """Monitor the calibrated model live (or on a replay): status lines on stderr, events as JSON
    lines, a JSON summary on stdout when it ends (Ctrl-C ends it cleanly)."""
    from execal.live.engine import Monitor
    from execal.models.impact.config import load_config
    from execal.models.live.events import EventLog
    from execal.models.live.versions import ConfigHistory

    config = load_config(args.config) if args.config else None
    for f in args.fills or []:
        if not str(f).startswith(("redis://", "rediss://", "unix://")) and not Path(f).parent.exists():
            raise UsageError(f"--fills {f}: its directory does not exist")
    settings = _monitor_settings(args)
    state_dir = Path(args.state_dir) if args.state_dir else None
    if state_dir is not None:
        owned = {(state_dir / n).resolve() for n in ("fills.jsonl", "ticks.jsonl", "events.jsonl")}
        clash = [f for f in args.fills or [] if Path(f).resolve() in owned]
        if clash:
            raise UsageError(f"--fills {clash[0]}: the state directory writes that file; put the fills elsewhere")
    events_path = args.events or (state_dir / "events.jsonl" if state_dir else None)
    if state_dir:
        state_dir.mkdir(parents=True, exist_ok=True)
    history_dir = args.history or (state_dir / "history" if state_dir else None)
    events = EventLog(events_path)
    history = ConfigHistory(history_dir) if history_dir else None
    monitor = Monitor(config, settings=settings, events=events, history=history)
    try:
        summary = _run_live(args, monitor, fills=args.fills or [])
    finally:
        monitor.close()
    _json_out(summary, args.summary)
    if not args.quiet:
        print(f"execal: stopped; {summary['counts']['messages']} messages, {summary['counts']['fills_used']} "
              f"fills, {summary['counts']['alarms']} alarms, {summary['counts']['recalibrations']} "
              f"recalibrations, live config v{summary['live_version']}", file=sys.stderr)
    return 0


def cmd_record(args) -> int:
    """Record what the sources deliver in the capture format (gzip, one file per venue, symbol
    and hour); a JSON summary on stdout when it ends."""
    from execal.live.engine import Monitor, MonitorSettings
    from execal.live.record import Recorder

    args.set, args.regime, args.no_auto_switch = None, None, False
    recorder = Recorder(args.out)
    monitor = Monitor(None, settings=MonitorSettings())
    try:
        summary = _run_live(args, monitor, recorder=recorder)
    finally:
        monitor.close()
    summary["recorded"] = {"lines": recorder.lines, "files": sorted(set(recorder.files_written))}
    _json_out(summary, args.summary)
    return 0


# --- parser -----------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    from execal.models.data.schema import KINDS

    from execal.models.core import __version__

    ap = argparse.ArgumentParser(prog="execal", description="Execution-cost and volatility model calibration.",
                                 epilog="Exit codes: 0 ok, 2 bad input, 3 a fit did not converge (its output is "
                                        "still written), 1 unexpected.")
    ap.add_argument("--version", action="version", version=f"execal {__version__}",
                    help="print execal's version and exit")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("inspect", help="summarise and validate a data file (JSON to stdout)")
    p.add_argument("path", nargs="+", help="a file; or several consecutive raw Binance captures "
                                           "(or a glob such as 'capture-*.gz') replayed as one")
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
                   help="rows validated at a time (memory is bounded by this; default: %(default)s)")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.set_defaults(func=cmd_ingest)

    from execal.models.core.registry import LOSSES, OPTIMIZERS, PARTICIPATION, WEIGHTS, models_of_kind

    p = sub.add_parser("models", help="list models, parameters, optimizers, losses and weights (JSON)")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("calibrate", help="fit an execution-cost model to fills and write its config")
    p.add_argument("path", help="fills file (CSV, CSV.gz or Parquet) or dataset directory (streamed)")
    p.add_argument("--model", required=True, choices=list(models_of_kind("impact")),
                   help="the impact model (required; `execal models` lists their parameters)")
    p.add_argument("--optimizer", default="lm_normal", choices=list(OPTIMIZERS),
                   help="how to fit; kalman and sgd learn a path of parameters over time (default: %(default)s)")
    p.add_argument("--loss", default="soft_l1", choices=list(LOSSES), help="robust loss (default: %(default)s)")
    p.add_argument("--f-scale", type=float, default=1.0,
                   help="robust-loss scale, in residual units (default: %(default)s)")
    p.add_argument("--weights", default="auto", choices=list(WEIGHTS),
                   help="residual weights; auto = noise (1/(sigma·sqrt(T))) when the data allows, else none "
                        "(default: %(default)s)")
    p.add_argument("--weight-column", help="the column for --weights column")
    p.add_argument("--participation", default="adv", choices=list(PARTICIPATION),
                   help="Q/adv or Q/market_volume (horizon participation) (default: %(default)s)")
    p.add_argument("--by", help="segment by venue, symbol, side, regime or a comma list (one fit each + "
                                "pooled); regime: volatility regimes of --bars")
    from execal.models.vol.realized import ESTIMATORS

    p.add_argument("--bars", help="bars file: volatility regimes (--by regime) and --volatility-from")
    p.add_argument("--regimes", type=int, default=2, choices=[2, 3],
                   help="--by regime: number of Markov volatility regimes (calm/stressed, or "
                        "calm/elevated/stressed) (default: %(default)s)")
    p.add_argument("--volatility-from", choices=list(ESTIMATORS),
                   help="replace the fills' volatility with this realised estimator on --bars (days before arrival)")
    p.add_argument("--volatility-window", type=int, default=20, metavar="DAYS",
                   help="--volatility-from: complete days averaged (default: %(default)s)")
    p.add_argument("--fix", help="fix parameters: name=value,...")
    p.add_argument("--bound", help="bound parameters: name=lower:upper,... (empty side = unbounded)")
    p.add_argument("--free", help="estimate parameters fixed by default (e.g. h)")
    p.add_argument("--option", help="optimizer options: name=value,... (see `execal models`)")
    p.add_argument("--test-fraction", type=float, default=0.0,
                   help="latest share of the fills held out for out-of-sample metrics, 0 = none (default: %(default)s)")
    p.add_argument("--walk-forward", type=int, default=0, help="expanding-window folds, 0 = off (default: %(default)s)")
    p.add_argument("--multistart", type=int, default=0, metavar="N",
                   help="extra Latin-hypercube starts for the local optimizer, keeping the lowest cost; "
                        "0 = one start (default: %(default)s)")
    p.add_argument("--bootstrap", type=int, default=0, metavar="N",
                   help="bootstrap resamples of whole days or orders, 0 = off (default: %(default)s)")
    p.add_argument("--bootstrap-by", default="day", choices=["day", "order_id"],
                   help="the cluster the bootstrap resamples (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0,
                   help="random seed of multistart, the global search and the bootstrap (default: %(default)s)")
    p.add_argument("--symbol", action="append", help="keep only this symbol (repeatable)")
    p.add_argument("--venue", action="append", help="keep only this venue (repeatable)")
    p.add_argument("--start", help="keep fills at or after this UTC time")
    p.add_argument("--end", help="keep fills before this UTC time")
    p.add_argument("--min-quantity", type=float, help="dataset directory: keep fills with quantity >= this")
    p.add_argument("--max-quantity", type=float, help="dataset directory: keep fills with quantity <= this")
    p.add_argument("--bootstrap-steps", type=int, default=1,
                   help="dataset directory: Gauss-Newton steps per day-bootstrap resample (1 = one-step; default: %(default)s)")
    p.add_argument("--scheduler", metavar="ADDR",
                   help="dataset directory: run the passes on this Dask scheduler (default: "
                        "$EXECAL_DASK_SCHEDULER, else in this process)")
    p.add_argument("--threads", type=int, default=1, help="dataset directory, in this process: threads (default: %(default)s)")
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

    p = sub.add_parser("vol", help="fit a volatility model (realised, GARCH family, regimes, jumps, HAR) to "
                                   "bars or trades (JSON)",
                       description="Fit a volatility model. Every model's settings are flags (generated from "
                                   "the registry: `execal models`); a flag a model does not take is an error.")
    p.add_argument("path", help="bars or trades file (CSV, CSV.gz, Parquet, Tardis, Binance capture), or a "
                                "dataset directory of trades or bars (aggregated to bars out of core)")
    p.add_argument("--model", required=True, choices=list(models_of_kind("volatility")),
                   help="the volatility model (required); its settings below are named by model")
    p.add_argument("--horizon", type=int, default=10,
                   help="forecast periods written for models that forecast (GARCH family, HAR; default 10)")
    p.add_argument("--kind", choices=["bars", "trades"], help="dataset kind (detected when omitted)")
    p.add_argument("--map", help="column mapping their_name=canonical_name,...")
    p.add_argument("--out", help="JSON file; stdout when omitted")
    p.add_argument("--quiet", action="store_true", help="no summary on stderr (warnings are still printed)")
    p.add_argument("--venue", action="append", help="dataset directory: keep only this venue (repeatable)")
    p.add_argument("--start", help="dataset directory: keep rows at or after this UTC time")
    p.add_argument("--end", help="dataset directory: keep rows before this UTC time")
    p.add_argument("--scheduler", metavar="ADDR",
                   help="dataset directory: aggregate the bars on this Dask scheduler (default: "
                        "$EXECAL_DASK_SCHEDULER, else in this process)")
    p.add_argument("--threads", type=int, default=1,
                   help="dataset directory, in this process: threads (default: %(default)s)")
    _add_vol_flags(p)
    p.set_defaults(func=cmd_vol)

    from execal.models.surface.options import FORWARD_METHODS, IV_SOURCES, PRICE_UNITS
    from execal.models.surface.svi import WEIGHTS as SURFACE_WEIGHTS

    p = sub.add_parser("surface", help="fit an implied-volatility surface (raw SVI per expiry or SSVI) "
                                       "to an option chain, with its arbitrage report, or calibrate Heston / "
                                       "Bates to it (JSON)")
    p.add_argument("path", help="option chain (Tardis options_chain CSV or a generic chain)")
    p.add_argument("--model", default="svi", choices=list(models_of_kind("surface")),
                   help="raw SVI per expiry or the SSVI surface (default: %(default)s)")
    p.add_argument("--weights", default="vega", choices=list(SURFACE_WEIGHTS),
                   help="residual weights: vega, inverse bid-ask spread, or uniform (default: %(default)s)")
    p.add_argument("--no-arbitrage", action="store_true",
                   help="fit under the no-butterfly (and calendar) constraints")
    p.add_argument("--method", default="quasi_explicit", choices=["quasi_explicit", "least_squares"],
                   help="SVI optimizer: Zeliade's quasi-explicit reduction or plain least squares "
                        "(default: %(default)s)")
    p.add_argument("--target", default="price", choices=["price", "vol"],
                   help="heston/bates: fit out-of-the-money prices / forward, or implied vols (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="heston/bates: seed of the multistart points "
                                                       "(default: %(default)s)")
    p.add_argument("--underlying", help="the coin to fit when the chain holds several (e.g. BTC)")
    p.add_argument("--as-of", help="snapshot time (UTC); default: the latest quote")
    p.add_argument("--forward", default="auto", choices=list(FORWARD_METHODS),
                   help="forward per expiry; auto: futures price, else put-call parity, else underlying "
                        "price (default: %(default)s)")
    p.add_argument("--iv-source", default="auto", choices=list(IV_SOURCES),
                   help="auto: per row, invert the prices where it has any, else use its IVs; prices; "
                        "or given (the file's IVs) (default: %(default)s)")
    p.add_argument("--price-unit", default="auto", choices=list(PRICE_UNITS),
                   help="unit of the option prices: usd (quote currency), base (the coin, inverse options "
                        "like Deribit) or auto: a price_unit/currency column, else detected per expiry "
                        "from the no-arbitrage bounds and said on stderr (default: %(default)s)")
    p.add_argument("--lenient", action="store_true",
                   help="warn instead of refusing a chain whose prices break the no-arbitrage bounds "
                        "(over 5 %% of quotes below intrinsic value, parity far from the futures)")
    p.add_argument("--map", help="column mapping their_name=canonical_name,...")
    p.add_argument("--out", help="JSON file; stdout when omitted")
    p.add_argument("--quiet", action="store_true", help="no summary on stderr")
    p.set_defaults(func=cmd_surface)

    p = sub.add_parser("orderflow", help="order-flow imbalance, Kyle's lambda, propagator and resilience "
                                         "per venue from Binance raw captures (JSON)")
    p.add_argument("captures", nargs="+", metavar="CAPTURE", help="Binance raw capture(s) (.gz), one per venue")
    p.add_argument("--venue", action="append", help="keep only this venue (binance-usdm, binance-spot, "
                                                    "binance-coinm or usdm/spot/coinm; repeatable)")
    p.add_argument("--windows", default="1s,10s,60s", help="OFI / Kyle windows (default 1s,10s,60s)")
    p.add_argument("--levels", type=int, default=10, help="book levels kept per event (multi-level OFI, "
                                                         "resilience depth; default 10)")
    p.add_argument("--models", help="comma list of order-flow models (default ofi,kyle,propagator,resilience)")
    p.add_argument("--max-lag", type=int, default=100, help="propagator kernel length in orders (default 100)")
    p.add_argument("--share", type=float, default=0.5,
                   help="resilience: an order is a sweep above this share of the depth it hits (default 0.5)")
    p.add_argument("--market", choices=["usdm", "spot", "coinm"], help="override the market detected per file")
    p.add_argument("--no-curves", action="store_true", help="leave the curves (window series, correlation "
                                                          "functions, recovery curves) out of the JSON")
    p.add_argument("--out", help="JSON file; stdout when omitted")
    p.add_argument("--quiet", action="store_true", help="no table on stderr")
    p.set_defaults(func=cmd_orderflow)
    p = sub.add_parser("corr", help="correlation of several series: realised + Epps curve or Hayashi–Yoshida + "
                                    "lead–lag (ticks), DCC-GARCH or Ledoit–Wolf (returns) (JSON)")
    p.add_argument("paths", nargs="+", metavar="PATH",
                   help="files: trades or quotes (realized, hy), bars or trades (dcc, shrinkage); a file with several "
                        "symbols or venues gives one series each")
    p.add_argument("--method", required=True, choices=["realized", "hy", "dcc", "shrinkage"],
                   help="realized covariance + Epps curve, Hayashi–Yoshida + lead–lag, DCC-GARCH or Ledoit–Wolf")
    p.add_argument("--kind", choices=["trades", "quotes", "bars"], help="dataset kind (detected when omitted; a raw "
                   "Binance capture gives trades unless --kind quotes)")
    p.add_argument("--price", default="auto", choices=["auto", "trade", "mid"],
                   help="realized/hy: trade prices or mid quotes (auto: mid for quotes) (default: %(default)s)")
    p.add_argument("--symbol", action="append", help="keep only this symbol (repeatable)")
    p.add_argument("--interval", help="realized: sampling interval of the matrix (e.g. 1s, 5min; default: the largest "
                                      "nice interval leaving ≥ 100 returns)")
    p.add_argument("--grid", default="calendar", choices=["calendar", "refresh"],
                   help="realized: previous-tick calendar grid or refresh-time sampling (default: %(default)s)")
    p.add_argument("--epps", help="Epps-curve intervals in seconds, comma-separated, or 'auto' (realized: on by "
                                  "default; hy: adds the curves beside the HY level)")
    p.add_argument("--no-epps", action="store_true", help="skip the Epps curves")
    p.add_argument("--max-lag-s", type=float, default=2.0, help="hy: largest lead–lag scanned, seconds (default: %(default)s)")
    p.add_argument("--lag-step-s", type=float, default=0.01, help="hy: lag step, seconds (default 0.01)")
    p.add_argument("--band", default="asymptotic", choices=["asymptotic", "shift"],
                   help="hy: null band of the lead–lag scan (variance under independence, or circular shifts) (default: %(default)s)")
    p.add_argument("--alpha", type=float, default=0.05, help="hy: level of the null band (default 0.05)")
    p.add_argument("--shifts", type=int, default=200, help="hy --band shift: rotations drawn (default 200)")
    p.add_argument("--no-lead-lag", action="store_true", help="hy: skip the lead–lag scans")
    p.add_argument("--freq", help="dcc/shrinkage: return interval, a multiple of the bar (default: the bar)")
    p.add_argument("--bar", help="dcc/shrinkage: bar length built from trades (default 1min)")
    p.add_argument("--vol", default="garch", choices=["garch", "gjr", "egarch"], help="dcc: margin model (default: %(default)s)")
    p.add_argument("--dist", default="normal", choices=["normal", "t"], help="dcc: margin errors (default: %(default)s)")
    p.add_argument("--mean", default="constant", choices=["constant", "zero"], help="dcc: margin mean (default: %(default)s)")
    p.add_argument("--horizon", type=int, default=10, help="dcc: forecast periods (default 10)")
    p.add_argument("--maxiter", type=int, default=200, help="dcc: SLSQP iterations on (a, b) (default 200)")
    p.add_argument("--boot", type=int, default=200, help="shrinkage: block-bootstrap resamples (default 200)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the shift band and the bootstrap (default: %(default)s)")
    p.add_argument("--regimes", type=int, choices=[2, 3], help="dcc/shrinkage: also the correlation per Markov "
                   "volatility regime (calm/stressed) of --regime-asset")
    p.add_argument("--regime-asset", help="the asset whose volatility regimes label the periods (default: the first)")
    p.add_argument("--basket", help="also the Almgren–Chriss cost of this basket, NAME=QTY,... (signed units), "
                                    "together vs apart")
    p.add_argument("--prices", help="--basket: NAME=USD,...")
    p.add_argument("--adv", help="--basket: NAME=units per day,...")
    p.add_argument("--eta-bps", type=float, default=50.0, help="--basket: temporary impact, bps at 1 ADV/day (default: %(default)s)")
    p.add_argument("--gamma-bps", type=float, default=10.0, help="--basket: permanent impact, bps per ADV (default: %(default)s)")
    p.add_argument("--half-spread-bps", type=float, default=0.5, help="--basket: half spread, bps (default: %(default)s)")
    p.add_argument("--horizon-days", type=float, default=1.0, help="--basket: execution horizon, days (default: %(default)s)")
    p.add_argument("--steps", type=int, default=48, help="--basket: trading intervals (default: %(default)s)")
    p.add_argument("--risk-aversion", type=float, default=1e-6, help="--basket: λ per USD (default: %(default)s)")
    p.add_argument("--map", help="column mapping their_name=canonical_name,...")
    p.add_argument("--out", help="JSON file; stdout when omitted")
    p.add_argument("--quiet", action="store_true", help="no summary on stderr")
    p.set_defaults(func=cmd_corr)
    def live_source_args(p):
        p.add_argument("sources", nargs="+", metavar="SOURCE",
                       help="capture files (replayed through a local websocket server) or live streams "
                            "MARKET:SYMBOL[,SYMBOL] (MARKET: usdm, spot, coinm)")
        p.add_argument("--speed", default="1", help="replay speed: 1 (real time), N, or max (default 1)")
        p.add_argument("--endpoint", action="append", metavar="MARKET=WS,REST",
                       help="websocket and REST base URLs of a market (default: Binance's)")
        p.add_argument("--depth-stream", default="depth@100ms", help="live depth stream (default depth@100ms)")
        p.add_argument("--duration", type=float, help="stop after this many seconds")
        p.add_argument("--status-every", type=float, default=5.0, help="seconds between status lines (default: %(default)s)")
        p.add_argument("--summary", help="write the final summary JSON here (default stdout)")
        p.add_argument("--quiet", action="store_true", help="no status lines")

    p = sub.add_parser("monitor", help="monitor a calibrated model against live (or replayed) market data "
                                       "and fills: drift alarms, recalibration, events")
    live_source_args(p)
    p.add_argument("--config", help="impact config (execal calibrate --out) to monitor")
    p.add_argument("--fills", action="append", metavar="PATH|redis://HOST:PORT/DB[?stream=KEY]",
                   help="our fills: a CSV / JSON-lines file being appended to, or a Redis stream")
    p.add_argument("--events", help="events log (JSON lines); default STATE_DIR/events.jsonl")
    p.add_argument("--history", help="config history directory (new versions are written here)")
    p.add_argument("--state-dir", help="directory the dashboard follows (status, ticks, fills, events)")
    p.add_argument("--tick-every", type=int, default=1, help="state dir: keep one tick in N (default: %(default)s)")
    p.add_argument("--loop", action="store_true", help="replay the captures in a loop")
    p.add_argument("--regime", help="a Markov-regime fit (execal vol --model markov --out) for the regime "
                                    "probability and alarm")
    p.add_argument("--set", help="monitor settings name=value,... (see execal.live.engine.MonitorSettings; "
                                 "tuples with /, e.g. walk_sizes=1/10)")
    p.add_argument("--no-auto-switch", action="store_true",
                   help="keep recalibrated configs as candidates until switched by hand")
    p.set_defaults(func=cmd_monitor)

    p = sub.add_parser("record", help="record market streams in the capture format execal reads "
                                      "(gzip, rotated hourly)")
    live_source_args(p)
    p.add_argument("--out", required=True, help="directory of the recorded captures")
    p.set_defaults(func=cmd_record)

    p = sub.add_parser("serve", help="start the dashboard")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind; anything but a loopback address is reachable from other machines "
                        "and prints a warning unless sign-in is set up (EXECAL_USERS_FILE or EXECAL_AUTH_HEADER) "
                        "(default: %(default)s)")
    p.add_argument("--port", type=int, default=8050, help="TCP port (default: %(default)s)")
    p.add_argument("--workers", type=int, default=2, help="gunicorn worker processes (default: %(default)s)")
    p.add_argument("--dev", action="store_true", help="Dash's development server instead of gunicorn")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("users", help="manage the dashboard's users file (sign-in with hashed passwords)")
    p.add_argument("action", choices=["add", "remove", "list"], help="add (or change the password of), remove, "
                                                                      "or list users")
    p.add_argument("name", nargs="?", help="user name (letters, digits, . _ - @)")
    p.add_argument("--file", help="the users file (default: $EXECAL_USERS_FILE); created 0600")
    p.add_argument("--password-stdin", action="store_true", help="read the password from stdin (scripts)")
    p.set_defaults(func=cmd_users)

    p = sub.add_parser("worker", help="Celery workers for the dashboard's background jobs (scale-out: needs "
                                      "EXECAL_REDIS_URL, EXECAL_SHARED_DIR and EXECAL_SECRET_KEY)")
    p.add_argument("--concurrency", type=int, default=2, help="job processes (default: %(default)s)")
    p.add_argument("--name", help="worker name (default: celery's)")
    p.add_argument("--loglevel", default="INFO", help="Celery log level (default: %(default)s)")
    p.set_defaults(func=cmd_worker)
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
