"""execal's command line: the same core as the app, JSON out, for nightly headless runs.

    execal inspect PATH [--kind K] [--map a=b,...]     summary of a data file (JSON)
    execal serve [--host H] [--port P] [--workers N]   the dashboard (gunicorn; --dev for Dash's server)

Exit codes: 0 ok, 2 bad input or usage (a short message on stderr, never a traceback), 1 unexpected.
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
    from models.io import load, parse_mapping

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
        import app

        app.main(host=args.host, port=args.port, debug=False)
        return 0
    cmd = [sys.executable, "-m", "gunicorn", "-w", str(args.workers), "--threads", "4",
           "-b", f"{args.host}:{args.port}", "--timeout", "600", "app:server"]
    root = Path(__file__).resolve().parent
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
    print(f"execal: serving on http://{args.host}:{args.port} ({args.workers} workers)", file=sys.stderr)
    os.execvpe(cmd[0], cmd, env)
    return 0  # pragma: no cover


# --- parser -----------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    from models.schema import KINDS

    ap = argparse.ArgumentParser(prog="execal", description="Execution-cost and volatility model calibration.")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("inspect", help="summarise and validate a data file (JSON to stdout)")
    p.add_argument("path")
    p.add_argument("--kind", choices=KINDS + ("ticker",), help="dataset kind (detected when omitted)")
    p.add_argument("--map", help="column mapping their_name=canonical_name,...")
    p.add_argument("--report", action="store_true", help="include the full validation report")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("serve", help="start the dashboard")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8050)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--dev", action="store_true", help="Dash's development server instead of gunicorn")
    p.set_defaults(func=cmd_serve)
    return ap


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=os.environ.get("EXECAL_LOG", "WARNING"))
    from models.schema import DataError

    ap = build_parser()
    args = ap.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (DataError, UsageError) as err:
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
