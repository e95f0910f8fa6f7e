"""execal's command line: the same core as the app, JSON out, for nightly headless runs.

    execal inspect PATH [--kind K] [--map a=b,...]     summary of a data file (JSON)
    execal serve [--host H] [--port P] [--workers N]   the dashboard (gunicorn; --dev for Dash's server)
    execal models                                      models, parameters, optimizers, losses (JSON)
    execal calibrate PATH --model M [...] --out cfg    fit an execution-cost model, write the config
    execal predict --config cfg PATH [--out preds.csv] expected cost of each fill from a config
    execal vol PATH --model M [...] --out vol.json     realised / GARCH / Markov regimes / Merton / HAR-RV
    execal surface PATH --model {svi,ssvi} --out s.json option volatility surface + arbitrage report

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


def _load(path: str, kind: str | None, mapping: str | None):
    from execal.models.data.io import load, parse_mapping

    if not Path(path).exists():
        raise UsageError(f"{path}: no such file")
    return load(path, kind=kind, mapping=parse_mapping(mapping) if mapping else None)


# --- commands ---------------------------------------------------------------------------------

def cmd_inspect(args) -> int:
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


def cmd_predict(args) -> int:
    from execal.models.impact.config import load_config, predict_from_config

    config = load_config(args.config)
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
    """Fit a volatility model to bars or trades (`VolatilityCalibrator`); JSON with parameters,
    standard errors, the optimizer report, statistics, forecasts (models that forecast) and every
    warning. `result.summary()` and the warnings go to stderr; exit 3 when `result.converged` is
    False (the JSON is still written)."""
    from execal.models.vol.base import VolatilityCalibrator

    calibrator = VolatilityCalibrator(args.model, **_vol_settings(args))
    ds = _load(args.path, args.kind, args.map)
    result = calibrator.fit(ds)
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

    from execal.models.core.registry import LOSSES, OPTIMIZERS, PARTICIPATION, WEIGHTS, models_of_kind

    p = sub.add_parser("models", help="list models, parameters, optimizers, losses and weights (JSON)")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("calibrate", help="fit an execution-cost model to fills and write its config")
    p.add_argument("path", help="fills file (CSV, CSV.gz or Parquet)")
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

    p = sub.add_parser("vol", help="fit a volatility model (realised, GARCH family, regimes, jumps, HAR) to "
                                   "bars or trades (JSON)",
                       description="Fit a volatility model. Every model's settings are flags (generated from "
                                   "the registry: `execal models`); a flag a model does not take is an error.")
    p.add_argument("path", help="bars or trades file (CSV, CSV.gz, Parquet, Tardis, Binance capture)")
    p.add_argument("--model", required=True, choices=list(models_of_kind("volatility")))
    p.add_argument("--horizon", type=int, default=10,
                   help="forecast periods written for models that forecast (GARCH family, HAR; default 10)")
    p.add_argument("--kind", choices=["bars", "trades"], help="dataset kind (detected when omitted)")
    p.add_argument("--map", help="column mapping their_name=canonical_name,...")
    p.add_argument("--out", help="JSON file; stdout when omitted")
    p.add_argument("--quiet", action="store_true", help="no summary on stderr (warnings are still printed)")
    _add_vol_flags(p)
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
