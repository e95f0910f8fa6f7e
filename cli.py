"""execal's command line: the same core as the app, JSON out, for nightly headless runs.

    execal inspect PATH [--kind K] [--map a=b,...]     summary of a data file (JSON)
    execal serve [--host H] [--port P] [--workers N]   the dashboard (gunicorn; --dev for Dash's server)
    execal users add NAME [--file F]                   add a dashboard user (hashed password) to a users file
    execal worker [--concurrency N]                    Celery workers for background jobs (EXECAL_REDIS_URL)
    execal models                                      models, parameters, optimizers, losses (JSON)
    execal calibrate PATH --model M [...] --out cfg    fit an execution-cost model, write the config
    execal predict --config cfg PATH [--out preds.csv] expected cost of each fill from a config
    execal vol PATH --model M [...] --out vol.json     realised / GARCH / Markov regimes / Merton
    execal surface PATH --model {svi,ssvi} --out s.json option volatility surface + arbitrage report
    execal orderflow CAPTURE... --out orderflow.json   OFI, Kyle's lambda, propagator, resilience per venue

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
    """One file, or several consecutive raw Binance captures (paths or glob patterns)."""
    from execal.models.data.io import load, parse_mapping

    paths = _expand(path)
    source = paths[0] if len(paths) == 1 else paths
    return load(source, kind=kind, mapping=parse_mapping(mapping) if mapping else None)


# --- commands ---------------------------------------------------------------------------------

def cmd_inspect(args) -> int:
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
    calibrator = Calibrator(model=args.model, optimizer=args.optimizer, loss=args.loss,
                            f_scale=args.f_scale, weights=args.weights, weight_column=args.weight_column,
                            fixed=fixed, bounds=bounds, participation=args.participation,
                            test_fraction=args.test_fraction, walk_forward=args.walk_forward,
                            multistart=args.multistart, seed=args.seed,
                            free=tuple(filter(None, (args.free or "").split(","))), options=options)
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


def cmd_predict(args) -> int:
    from execal.models.data.csvsafe import neutralise
    from execal.models.impact.config import load_config, predict_from_config

    config = load_config(args.config)
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
                          iv_source=args.iv_source, price_unit=args.price_unit, strict=not args.lenient)
    print(f"execal: option prices read as {chain.price_unit}: {chain.price_unit_reason}", file=sys.stderr)
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

    from execal.models.core.registry import LOSSES, OPTIMIZERS, PARTICIPATION, WEIGHTS, models_of_kind

    p = sub.add_parser("models", help="list models, parameters, optimizers, losses and weights (JSON)")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("calibrate", help="fit an execution-cost model to fills and write its config")
    p.add_argument("path", help="fills file (CSV, CSV.gz or Parquet)")
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
    p.add_argument("--map", help="column mapping their_name=canonical_name,...")
    p.add_argument("--out", help="config file (.json, .yaml); stdout (JSON) when omitted")
    p.add_argument("--quiet", action="store_true", help="no summary on stderr")
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("predict", help="expected cost of each fill from a config (CSV out)")
    p.add_argument("path", help="fills file")
    p.add_argument("--config", required=True, help="config written by `execal calibrate`")
    p.add_argument("--map", help="column mapping their_name=canonical_name,...")
    p.add_argument("--out", help="CSV file; stdout when omitted")
    p.set_defaults(func=cmd_predict)

    from execal.models.vol.realized import ESTIMATORS, GAP_POLICIES
    from execal.models.core.registry import models_of_kind

    p = sub.add_parser("vol", help="fit a volatility model (realised, GARCH family, regimes, jumps) to "
                                   "bars or trades (JSON)")
    p.add_argument("path", help="bars or trades file (CSV, CSV.gz, Parquet, Tardis, Binance capture)")
    p.add_argument("--model", required=True, choices=list(models_of_kind("volatility")),
                   help="the volatility model (required)")
    p.add_argument("--estimator", default="yang_zhang", choices=list(ESTIMATORS),
                   help="realised estimator reported in params (all are in the JSON); realized only "
                        "(default: %(default)s)")
    p.add_argument("--freq", help="realized: the period estimates are made over (default 1D); other "
                                  "models: the return interval, a multiple of the bar (default: the bar)")
    p.add_argument("--window", type=int, default=1, help="realized: periods pooled per estimate (default: %(default)s)")
    p.add_argument("--bar", help="bar length built from trades (default 1min), or coarser bars from bars")
    p.add_argument("--gaps", default="error", choices=list(GAP_POLICIES),
                   help="missing bars: stop with an error (default) or skip the returns across them")
    p.add_argument("--dist", default="normal", choices=["normal", "t"],
                   help="GARCH family errors (default: %(default)s)")
    p.add_argument("--horizon", type=int, default=10, help="GARCH family forecast periods (default: %(default)s)")
    p.add_argument("--regimes", type=int, default=2, choices=[2, 3],
                   help="markov: number of regimes (default: %(default)s)")
    p.add_argument("--switching-mean", action="store_true", help="markov: a mean per regime")
    p.add_argument("--symbol", help="the symbol to use when the file holds several")
    p.add_argument("--kind", choices=["bars", "trades"], help="dataset kind (detected when omitted)")
    p.add_argument("--map", help="column mapping their_name=canonical_name,...")
    p.add_argument("--out", help="JSON file; stdout when omitted")
    p.add_argument("--quiet", action="store_true", help="no summary on stderr")
    p.set_defaults(func=cmd_vol)

    from execal.models.surface.options import FORWARD_METHODS, IV_SOURCES, PRICE_UNITS
    from execal.models.surface.svi import WEIGHTS as SURFACE_WEIGHTS

    p = sub.add_parser("surface", help="fit an implied-volatility surface (raw SVI per expiry or SSVI) "
                                       "to an option chain, with its arbitrage report (JSON)")
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

    p = sub.add_parser("serve", help="start the dashboard")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind; anything but a loopback address is reachable from other machines "
                        "and prints a warning (execal has no login) (default: %(default)s)")
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
