"""Run every benchmark and print one table: `python -m bench.run [--quick] [--only NAME]`."""
from __future__ import annotations

import argparse
import importlib
import inspect
import json
import pkgutil
import sys
from pathlib import Path


def _fmt(x, spec):
    return "" if x is None else format(x, spec)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="smaller sizes (smoke run)")
    ap.add_argument("--only", help="run only bench_<ONLY>")
    ap.add_argument("--json", help="also write the rows to this file")
    ap.add_argument("--rows", type=int, help="size for the benchmarks that take one (bench_outofcore)")
    args = ap.parse_args(argv)
    here = Path(__file__).parent
    names = sorted(m.name for m in pkgutil.iter_modules([str(here)]) if m.name.startswith("bench_"))
    if args.only:
        names = [n for n in names if n == f"bench_{args.only}"]
    rows = []
    for name in names:
        mod = importlib.import_module(f"bench.{name}")
        print(f"running {name} ...", file=sys.stderr, flush=True)
        sized = args.rows and "rows" in inspect.signature(mod.run).parameters
        rows.extend(mod.run(quick=args.quick, **({"rows": args.rows} if sized else {})))
    print("| benchmark | execal s | floor s | meets floor | baseline | baseline s | ratio | note |")
    print("|---|---:|---:|:---:|---|---:|---:|---|")
    for r in rows:
        ok = "" if r["meets_floor"] is None else ("yes" if r["meets_floor"] else "**NO**")
        print(f"| {r['benchmark']} | {_fmt(r['seconds'], '.3f')} | {_fmt(r['floor_s'], '.2f')} | {ok} "
              f"| {r['baseline'] or ''} | {_fmt(r['baseline_s'], '.3f')} | "
              f"{_fmt(r['ratio'], '.1f')}{'×' if r['ratio'] else ''} | {r['note']} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
