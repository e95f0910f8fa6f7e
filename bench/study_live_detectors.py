"""Detection delay and false-alarm rate of the live drift detectors, over seeded synthetic streams.

    python -m bench.study_live_detectors [--runs 200] [--out table.md]

Each run (seed s): 2,000 fills before the window calibrate the config (sqrt law, Y = 0.7, noise
0.5 × the expected noise 1e4·sigma·√T, Gaussian; `lm_normal`, loss linear, weights noise), then a
stream of `n_pre` = 1,000 fills from the same law and `n_post` = 500 fills whose Y is stepped by
+0 % (no change: the false-alarm scenario), +25 %, +50 % or +100 % at fill `n_pre` (a known
time). The monitor's standardised residuals z = (realised − predicted)/sd and the Kalman
innovations are computed with the live code's formulas on arrays (`OnlineImpact` per fill gives
the same numbers: checked on the first fills of every run), then fed one at a time to each
detector with the monitor's defaults: CUSUM (k = 0.5, ARL₀ = 1,000), Page–Hinkley (δ = 0.5,
λ = the CUSUM h), Kalman innovation block test (25 fills, α = 1e-3).

Per scenario and detector: the share of runs with a false alarm before the change, false alarms
per 1,000 in-control fills (detectors restart after an alarm), the share of runs detecting the
change within the 500 post-change fills, and the delay (fills from the change to the first alarm at
or after it) over the detecting runs: mean, median, 90th percentile.
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from execal.live.online import OnlineImpact
from execal.live.synthetic import change_point_fills, to_records
from execal.models.core.params import NS_PER_DAY
from execal.models.core.registry import get_model
from execal.models.impact.features import impact_features
from execal.models.impact.fit import Calibrator
from execal.models.impact.timevarying import kalman_path
from execal.models.live.detectors import Cusum, InnovationTest, PageHinkley

STEPS = (0.0, 0.25, 0.5, 1.0)
Y0 = 0.7
DETECTORS = ("cusum", "page_hinkley", "kalman_innovation")


def _make(name):
    if name == "cusum":
        return Cusum(0.5, arl0=1000)
    if name == "page_hinkley":
        return PageHinkley(0.5, arl0=1000)
    return InnovationTest(25, 1e-3)


def residuals(config, frame):
    """(z, innovation z) of every fill of `frame` under `config`, as the monitor computes them."""
    online = OnlineImpact(config)
    model = get_model(config["model"]["name"])
    f = impact_features(frame, online.participation)
    theta = online.theta
    pred = model.predict(theta, f)
    w = 1.0 / f.expected_noise_bps
    r = 1.0 / (w * w)
    j = online.j
    x = model.jacobian(theta, f, [j])[:, 0]
    sd = np.sqrt(online.s2 * r + x * x * online.beta_var)
    z = (f.cost_bps - pred) / sd
    theta0 = theta.copy()
    theta0[j] = 0.0
    y = f.cost_bps - model.predict(theta0, f)
    t = f.timestamp_ns
    dt = np.r_[0.0, np.diff(t) / NS_PER_DAY]
    m0, p0, _ = online.kf
    # the config's estimate as a pseudo-fill in front: the online filter's prior (tested equal)
    kp = kalman_path(np.r_[m0, y], np.r_[1.0, x], np.r_[p0, r], np.r_[0.0, dt], online.q_tilde)
    v = y - x * kp.m_pred[1:]
    S = x * x * kp.p_pred[1:] + r
    e = v / np.sqrt(online.s2 * S)
    # the per-fill live path on the first fills gives the same numbers
    for i, rec in enumerate(to_records(frame.iloc[:5])):
        out = online.step_fill(rec)
        assert abs(out["z"] - z[i]) < 1e-9 and abs(out["innovation_z"] - e[i]) < 1e-9, (out, z[i], e[i])
    return z, e


def one_run(seed: int, n_pre: int, n_post: int) -> dict:
    start = 1_700_000_000 * 10**9
    span = (n_pre + n_post) * 10**9            # one fill a second, on average
    pre, _ = change_point_fills(2000, start - 2 * span, start, seed=10_000 + seed, params_before={"Y": Y0})
    config = Calibrator(model="sqrt", loss="linear", weights="noise").fit(pre).to_config()
    out = {}
    for step in STEPS:
        frame, truth = change_point_fills(n_pre + n_post, start, start + span, change_ns=None,
                                          params_before={"Y": Y0}, seed=seed)
        # the step at a known fill index (not time): rebuild the post-change costs
        post = np.arange(len(frame)) >= n_pre
        frame.loc[post, "cost_bps"] = _cost_with(frame[post], Y0 * (1 + step), truth, seed)
        side = np.where(frame["side"] == "buy", 1.0, -1.0)
        frame["exec_price"] = frame["arrival_price"] * (1 + side * frame["cost_bps"] / 1e4)
        z, e = residuals(config, frame)
        for name in DETECTORS:
            det = _make(name)
            series = e if name == "kalman_innovation" else z
            alarms = [i for i, v in enumerate(series) if det.update(float(v), i) is not None]
            # with no change every alarm is a false one (over all n_pre + n_post fills)
            horizon = n_pre if step else n_pre + n_post
            false = [a for a in alarms if a < horizon]
            after = [a for a in alarms if a >= n_pre] if step else []
            out[(step, name)] = {"false": len(false), "any_false": bool(false),
                                 "delay": (after[0] - n_pre) if after else None}
    return out


def _cost_with(rows, y_coef, truth, seed):
    """Costs of `rows` at impact Y = y_coef, with the same noise draw the generator used."""
    model = get_model("sqrt")
    f = impact_features(rows, "adv")
    expected_old = model.predict(model.theta({"Y": Y0}, fill_defaults=True), f)
    noise = rows["cost_bps"].to_numpy() - expected_old
    return model.predict(model.theta({"Y": y_coef}, fill_defaults=True), f) + noise


def study(runs: int = 100, n_pre: int = 1000, n_post: int = 500) -> list[dict]:
    results = [one_run(seed, n_pre, n_post) for seed in range(runs)]
    rows = []
    for step in STEPS:
        for name in DETECTORS:
            cells = [r[(step, name)] for r in results]
            delays = np.array([c["delay"] for c in cells if c["delay"] is not None], dtype=float)
            rows.append({
                "step": step, "detector": name, "runs": runs,
                "p_false_alarm_before_change": float(np.mean([c["any_false"] for c in cells])),
                "false_alarms_per_1000_fills": 1000.0 * sum(c["false"] for c in cells)
                / (runs * (n_pre if step else n_pre + n_post)),
                "detected_within_post": float(delays.size / runs) if step else None,
                "delay_mean": float(delays.mean()) if delays.size else None,
                "delay_median": float(np.median(delays)) if delays.size else None,
                "delay_p90": float(np.percentile(delays, 90)) if delays.size else None})
    return rows


def markdown(rows: list[dict], n_pre: int, n_post: int) -> str:
    def f(x, spec):
        return "–" if x is None else format(x, spec)
    lines = [f"| Y step | detector | P(false alarm before the change) | false alarms / 1000 fills | "
             f"detected within {n_post} | delay mean | median | p90 (fills) |",
             "|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        step = "none" if r["step"] == 0 else f"+{r['step']:.0%}"
        lines.append(f"| {step} | {r['detector']} | {r['p_false_alarm_before_change']:.2f} | "
                     f"{r['false_alarms_per_1000_fills']:.2f} | {f(r['detected_within_post'], '.2f')} | "
                     f"{f(r['delay_mean'], '.1f')} | {f(r['delay_median'], '.0f')} | {f(r['delay_p90'], '.0f')} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--n-pre", type=int, default=1000)
    ap.add_argument("--n-post", type=int, default=500)
    ap.add_argument("--out", help="also write the markdown table here")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    rows = study(args.runs, args.n_pre, args.n_post)
    text = markdown(rows, args.n_pre, args.n_post)
    print(text)
    print(f"\n{args.runs} seeded runs per scenario, {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
