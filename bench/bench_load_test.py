"""Load benchmark of the full user flow against `execal serve` (gunicorn, 2 gthread workers), with locust.

20 users × 3 rounds (quick: 4 × 1) of page load -> upload -> calibrate -> diagnostics -> reload
(bench/load_flow.py), each round uploading its own 3,000-fill file (the seeded sample generator, one seed
per user and round), so every calibration is a real background job, not a cache hit. Traffic goes only to
the server this script starts on 127.0.0.1; the run is bounded (at most `RUN_TIME_S`, each job at most
`JOB_TIMEOUT_S`).

Reported per backend (the embedded default: diskcache; and Celery + Redis: one redis-server and one
`execal worker`): calibrations that failed (an error, HTTP 204 with no result, or no result in
`JOB_TIMEOUT_S` = hung), and calibrate p50 / p95 (Run pressed -> result on screen, polls included).
Baseline: the same flow by ONE user alone on the same server, so the ratio is the cost of 19 neighbours.

    python -m bench.bench_load_test [--users 20] [--rounds 3] [--backend diskcache|celery|both]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from bench import servers
from bench.common import row

ROOT = Path(__file__).resolve().parents[1]
ROWS_PER_FILE = 3000
RUN_TIME_S = 900
JOB_TIMEOUT_S = 180
P95_FLOOR_S = 3.0


def make_files(folder: Path, users: int, rounds: int) -> list[list[str]]:
    """One fills CSV per (user, round), distinct seeds: every calibration is a new fit."""
    from execal.models.data.sample import generate_fills

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for u in range(users):
        mine = []
        for r in range(rounds):
            path = folder / f"fills_u{u:02d}_r{r}.csv"
            if not path.exists():
                frame, _ = generate_fills(ROWS_PER_FILE, seed=1000 + 10 * u + r)
                frame.drop(columns=["cost_bps"], errors="ignore").to_csv(path, index=False)
            mine.append(str(path))
        paths.append(mine)
    return paths


def run_locust(url: str, files: list[list[str]], users: int, rounds: int, out: Path, folder: Path) -> list[dict]:
    """Locust headless against `url`; returns one record per round (bench/locustfile.py)."""
    out.unlink(missing_ok=True)
    env = servers.hermetic_env({"EXECAL_LOAD_FILES": json.dumps(files), "EXECAL_LOAD_ROUNDS": rounds,
                                "EXECAL_LOAD_OUT": out, "EXECAL_LOAD_JOB_TIMEOUT_S": JOB_TIMEOUT_S,
                                "PYTHONPATH": f"{ROOT}:{os.environ.get('PYTHONPATH', '')}"})
    cmd = [sys.executable, "-m", "locust", "-f", str(ROOT / "bench" / "locustfile.py"), "--headless",
           "-u", str(users), "-r", str(users), "-t", f"{RUN_TIME_S}s", "--host", url, "--only-summary",
           "--stop-timeout", "5", "--exit-code-on-error", "0", "--csv", str(folder / "locust")]
    with open(folder / "locust.log", "ab") as log:
        subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                       timeout=RUN_TIME_S + 120, check=False)
    if not out.exists():
        return []
    return [json.loads(line) for line in out.read_text().splitlines() if line.strip()]


def summarise(records: list[dict], users: int, rounds: int) -> dict:
    ok = [r for r in records if r.get("ok")]
    failed = [r for r in records if not r.get("ok")]
    cal = np.array([r["calibrate"] for r in ok if not r.get("cached")], float)
    return {"rounds_expected": users * rounds, "rounds_recorded": len(records), "ok": len(ok),
            "failed": len(failed), "missing": users * rounds - len(records),
            "hung": sum(1 for r in failed if "hung" in r.get("error", "")),
            "cached": sum(1 for r in ok if r.get("cached")),
            "calibrate_p50_s": float(np.percentile(cal, 50)) if cal.size else None,
            "calibrate_p95_s": float(np.percentile(cal, 95)) if cal.size else None,
            "calibrate_max_s": float(cal.max()) if cal.size else None,
            "errors": sorted({f"{r.get('step')}: {r.get('error', '')[:160]}" for r in failed})[:8]}


def load_test(backend: str, users: int, rounds: int, folder: Path) -> tuple[dict, dict]:
    """(summary under load, summary of one user alone) for one backend, on one fresh server."""
    files = make_files(folder / "files", users + 1, rounds)     # the last set is the lone user's
    with backend_env(backend, folder) as env:
        with servers.gunicorn(folder / backend, env=env, workers=2, name="gunicorn") as srv:
            alone = run_locust(srv.url, [files[users]], 1, 1, folder / backend / "alone.jsonl", folder / backend)
            crowd = run_locust(srv.url, files[:users], users, rounds, folder / backend / "crowd.jsonl",
                               folder / backend)
            log_tail = srv.log()[-4000:]
    summary = summarise(crowd, users, rounds)
    summary["server_log_errors"] = [line for line in log_tail.splitlines()
                                    if "Timeout" in line or "Traceback" in line][:5]
    return summary, summarise(alone, 1, 1)


class backend_env:
    """The server environment of a backend; Celery + Redis also starts redis-server and two workers."""

    def __init__(self, backend: str, folder: Path):
        self.backend, self.folder = backend, folder
        self._stack = None

    def __enter__(self) -> dict:
        import contextlib

        env = {"EXECAL_CACHE_DIR": self.folder / self.backend / "cache"}
        self._stack = contextlib.ExitStack()
        if self.backend == "celery":
            redis = self._stack.enter_context(servers.redis(self.folder / "redis"))
            shared = self.folder / self.backend / "shared"
            env.update({"EXECAL_REDIS_URL": redis.url, "EXECAL_SHARED_DIR": shared,
                        "EXECAL_SECRET_KEY": "load-test-secret-" + "x" * 32})
            self._stack.enter_context(servers.celery_worker(self.folder / self.backend, env=env, concurrency=2))
        return env

    def __exit__(self, *exc):
        self._stack.close()


def run(quick: bool = False, backends: tuple[str, ...] = ("diskcache", "celery")) -> list[dict]:
    users, rounds = (4, 1) if quick else (20, 3)
    rows = []
    with tempfile.TemporaryDirectory(prefix="execal-load-") as tmp:
        for backend in backends:
            s, alone = load_test(backend, users, rounds, Path(tmp))
            p95 = s["calibrate_p95_s"]
            note = (f"{users} users × {rounds} rounds: {s['failed']} failed ({s['hung']} hung), "
                    f"{s['missing']} missing of {s['rounds_expected']}; calibrate p50 "
                    f"{s['calibrate_p50_s'] or float('nan'):.2f} s, max {s['calibrate_max_s'] or float('nan'):.2f} s"
                    + (f"; errors: {s['errors']}" if s["errors"] else ""))
            r = row(f"load: full flow, calibrate p95 ({backend})", p95 if p95 is not None else float("inf"),
                    floor_s=P95_FLOOR_S, baseline="one user alone, same flow",
                    baseline_s=alone["calibrate_p50_s"], note=note)
            r["meets_floor"] = bool(p95 is not None and p95 <= P95_FLOOR_S and s["failed"] == 0 and s["missing"] == 0)
            r["summary"] = s
            rows.append(r)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--backend", choices=("diskcache", "celery", "both"), default="both")
    ap.add_argument("--keep", help="work in this folder (kept: logs, records) instead of a temp dir")
    args = ap.parse_args(argv)
    backends = ("diskcache", "celery") if args.backend == "both" else (args.backend,)
    folder = Path(args.keep or tempfile.mkdtemp(prefix="execal-load-"))
    for backend in backends:
        s, alone = load_test(backend, args.users, args.rounds, folder)
        print(json.dumps({"backend": backend, "load": s, "alone": alone}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
