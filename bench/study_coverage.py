"""How small a sample can the impact calibrator's 95 % intervals be trusted on? (a study, not a benchmark)

    python -m bench.study_coverage [--reps 2000] [--models sqrt,power_law,almgren] [--sizes 10,20,...]

For each model and sample size, simulate `reps` independent samples with known parameters
(`execal.models.impact.simulate.simulate_fills`: Student-t(4) noise scaled by the expected noise
1e4·sigma·√T, participation log-uniform over 1e-5..0.1), fit with the default calibrator (soft-L1 loss,
noise weights, sandwich standard errors) and count how often the nominal 95 % interval holds the
true value. The table in docs/notes/NOTES-contract.md (and `MIN_ROWS_PER_PARAMETER` in models/impact/fit.py)
comes from this script's output. Fits that refuse (too few usable rows) are counted separately.
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings

from execal.models.core.errors import CalibrationError
from execal.models.impact.fit import Calibrator
from execal.models.impact.simulate import simulate_fills

TRUTH = {"sqrt": {"Y": 0.8}, "power_law": {"Y": 0.8, "delta": 0.5},
         "almgren": {"gamma": 0.314, "eta": 0.142, "beta": 0.6}, "linear": {"lambda": 1.0}}


def coverage(model: str, n: int, reps: int, *, alpha: float = 0.05, dof: float | None = 4.0) -> dict:
    """{"model", "rows", "free", "fits", "refused", "at_bound", "coverage": {param: share}}."""
    truth = TRUTH[model]
    cal = Calibrator(model=model)
    hits = {k: 0 for k in truth}
    fits = refused = at_bound = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for r in range(reps):
            df, _ = simulate_fills(n, model=model, params=truth, seed=1_000_003 * n + r, dof=dof)
            try:
                res = cal.fit(df)
            except CalibrationError:
                refused += 1
                continue
            fits += 1
            at_bound += bool(res.report.active_bounds)
            ci = res.conf_int(alpha)
            for k, v in truth.items():
                lo, hi = ci[k]
                hits[k] += bool(lo <= v <= hi)
    return {"model": model, "rows": n, "free": len(truth), "fits": fits, "refused": refused,
            "at_bound": at_bound, "coverage": {k: h / fits if fits else float("nan") for k, h in hits.items()}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=2000, help="simulated samples per cell (default 2000)")
    ap.add_argument("--models", default="sqrt,power_law,almgren", help="comma list (default sqrt,power_law,almgren)")
    ap.add_argument("--sizes", default="10,15,20,30,45,60,90,150,300",
                    help="rows per sample, comma list (default 10,15,20,30,45,60,90,150,300)")
    args = ap.parse_args(argv)
    print("| model | free k | rows n | n/k | fits | at a bound | coverage of the nominal 95 % interval |")
    print("|---|---:|---:|---:|---:|---:|---|")
    t0 = time.perf_counter()
    for model in args.models.split(","):
        for n in (int(s) for s in args.sizes.split(",")):
            c = coverage(model, n, args.reps)
            cov = ", ".join(f"{k} {v:.3f}" for k, v in c["coverage"].items())
            print(f"| {model} | {c['free']} | {n} | {n / c['free']:.0f} | {c['fits']} | {c['at_bound']} | {cov} |",
                  flush=True)
    print(f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
