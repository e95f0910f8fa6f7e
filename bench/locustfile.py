"""Locust users for the load test (bench/bench_load_test.py starts it headless; never point it anywhere
but a server of your own on 127.0.0.1).

Each user is one desk: it runs `EXECAL_LOAD_ROUNDS` rounds of the full flow (bench/load_flow.py:
page load, upload, calibrate, diagnostics, reload), each round uploading its own fills file (paths in
`EXECAL_LOAD_FILES`, a JSON list per user of one path per round), then stops; when the last user is done,
locust quits. Every round is appended to the JSON-lines file `EXECAL_LOAD_OUT`: step times, the
calibration's polls, or the step that failed and why. Locust's own statistics get every HTTP request
(named by callback) plus one "FLOW calibrate" entry per calibration: Run pressed -> result on screen.
"""
from __future__ import annotations

import itertools
import json
import os
import time
import traceback
from pathlib import Path

from locust import HttpUser, constant, events, task
from locust.exception import StopUser

from bench.load_flow import Browser, FlowError

FILES = json.loads(os.environ.get("EXECAL_LOAD_FILES", "[]"))
ROUNDS = int(os.environ.get("EXECAL_LOAD_ROUNDS", "3"))
OUT = os.environ.get("EXECAL_LOAD_OUT", "load.jsonl")
JOB_TIMEOUT_S = float(os.environ.get("EXECAL_LOAD_JOB_TIMEOUT_S", "180"))

_index = itertools.count()
_finished = itertools.count(1)


def _record(entry: dict) -> None:
    with open(OUT, "a") as fh:
        fh.write(json.dumps(entry) + "\n")


class Desk(HttpUser):
    wait_time = constant(0)

    def on_start(self):
        self.user = next(_index)
        self.browser = Browser(self.client, self.host, named=True, timeout_s=JOB_TIMEOUT_S)

    @task
    def flow(self):
        paths = FILES[self.user % len(FILES)]
        for round_no in range(ROUNDS):
            path = Path(paths[round_no % len(paths)])
            started = time.perf_counter()
            entry = {"user": self.user, "round": round_no, "file": path.name}
            try:
                times = self.browser.round(path.read_bytes(), path.name)
            except Exception as err:     # a failed round is data: record it and go on with the next
                entry.update(ok=False, step=getattr(err, "step", type(err).__name__), error=str(err)[:300],
                             seconds=time.perf_counter() - started,
                             trace=traceback.format_exc(limit=3)[-600:])
                events.request.fire(request_type="FLOW", name="calibrate round", response_time=entry["seconds"] * 1000,
                                    response_length=0, exception=err, context={})
            else:
                entry.update(ok=True, seconds=time.perf_counter() - started, page=times.page, upload=times.upload,
                             calibrate=times.calibrate, diagnostics=times.diagnostics, reload=times.reload,
                             polls=times.polls, cached=times.cached, result_key=times.result_key)
                events.request.fire(request_type="FLOW", name="calibrate", response_time=times.calibrate * 1000,
                                    response_length=0, exception=None, context={})
            _record(entry)
        if next(_finished) >= self.environment.runner.target_user_count:
            self.environment.runner.quit()
        raise StopUser()


__all__ = ["Desk", "FlowError"]
