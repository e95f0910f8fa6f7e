"""The full user flow of the load test, over HTTP, as the browser would do it: one `round(...)` is

    page load -> upload a fills file (the Data panel's upload callback, then its preview)
    -> calibrate (the Calibrate panel's Run: plan, then the background job, polled to its end, then the
       result shown) -> diagnostics (open /diagnostics: its render callback) -> reload (a new page load
       in the same browser: the session's dataset and result come back).

Used by bench/locustfile.py (locust users), bench/bench_load_test.py and tests/test_load.py. Every step
checks what a user would see; a failed step raises `FlowError` naming it.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from bench.dash_client import DashClient, DashError, data_url

SESSION = "execal-session"
ACTIVE_DATASET = "execal-active-dataset"
ACTIVE_RESULT = "execal-active-result"
UPLOAD = "upload-data"
STREAMED = "streamed-data"
JOB = "job-calibrate"
RUN = "run-calibrate"
LOCATION = "execal-url"


class FlowError(RuntimeError):
    def __init__(self, step: str, message: str):
        super().__init__(f"{step}: {message}")
        self.step = step


@dataclass
class RoundTimes:
    """Seconds per step of one round; `calibrate` is Run pressed -> result on screen (polls included)."""
    page: float = 0.0
    upload: float = 0.0
    calibrate: float = 0.0
    diagnostics: float = 0.0
    reload: float = 0.0
    polls: int = 0
    cached: bool = False
    result_key: str | None = None
    notes: list = field(default_factory=list)


def _now_ms() -> int:
    return int(time.time() * 1000)


class Browser:
    """One user's browser: a DashClient whose localStorage (today's session store) survives reloads."""

    def __init__(self, http, base_url: str, *, named: bool = False, timeout_s: float = 180.0):
        self.client = DashClient(http, base_url, named=named, timeout_s=timeout_s)
        self.local_session: str | None = None

    def open(self, path: str = "/") -> None:
        c = self.client
        c.load_page(path)
        # dcc.Store(storage_type="local"): what the browser kept wins over the layout's fresh id
        if self.local_session is not None and c.value(SESSION, "storage_type") == "local":
            c.set(SESSION, "data", self.local_session)
        elif c.value(SESSION, "storage_type") == "local":
            self.local_session = c.value(SESSION, "data")
        c.set(SESSION, "modified_timestamp", _now_ms())
        # the page's first callbacks that matter here: the Data panel loads the session's dataset and
        # the Calibrate panel restores the session's result
        c.call(output=f"{ACTIVE_DATASET}.data", inputs=[f"{SESSION}.modified_timestamp"],
               trigger=f"{SESSION}.modified_timestamp", name="cb data load (page)")
        c.call(output=f"{ACTIVE_RESULT}.data", inputs=[f"{SESSION}.modified_timestamp"],
               trigger=f"{SESSION}.modified_timestamp", name="cb calibrate restore (page)")

    def upload(self, raw: bytes, filename: str) -> str:
        c = self.client
        c.set(UPLOAD, "contents", data_url(raw))
        c.set(UPLOAD, "filename", filename)
        c.set(UPLOAD, "last_modified", _now_ms())
        out = c.call(output=f"{ACTIVE_DATASET}.data", inputs=[f"{UPLOAD}.contents"],
                     trigger=f"{UPLOAD}.contents", name="cb data upload")
        return self._uploaded(out)

    def upload_stream(self, raw, filename: str) -> str:
        """What the page does with a chosen file (assets/execal_upload.js): post the raw bytes to the
        upload route, then hand its token to the Data panel's load callback. `raw`: bytes or an open file."""
        c = self.client
        r = c.http.post(c.base + "/_execal/upload", data=raw, timeout=c.timeout_s,
                        headers={"X-Execal-Upload": "1", "X-Execal-Filename": filename,
                                 "Content-Type": "application/octet-stream"},
                        **({"name": "upload route"} if c.named else {}))
        if r.status_code != 200:
            raise FlowError("upload", f"route HTTP {r.status_code}: {r.text[:200]}")
        c.set(STREAMED, "data", {**r.json(), "at": _now_ms()})
        out = c.call(output=f"{ACTIVE_DATASET}.data", inputs=[f"{STREAMED}.data"], trigger=f"{STREAMED}.data",
                     name="cb data upload (streamed)")
        return self._uploaded(out)

    def _uploaded(self, out) -> str:
        c = self.client
        if out.status != 200:
            raise FlowError("upload", f"HTTP {out.status}")
        alert = c.value("alert-data", "is_open")
        key = (c.value(ACTIVE_DATASET, "data") or {}).get("key")
        if alert or not key:
            raise FlowError("upload", f"not loaded: {c.value('alert-data', 'children')!r}")
        c.call(output="summary-data.children", inputs=[f"{ACTIVE_DATASET}.data"],
               trigger=f"{ACTIVE_DATASET}.data", name="cb data preview")
        return key

    def calibrate(self, times: RoundTimes) -> str:
        c = self.client
        c.set(RUN, "n_clicks", (c.value(RUN, "n_clicks") or 0) + 1)
        before = c.value(JOB, "data")
        started = time.perf_counter()
        plan = c.call(output=f"{JOB}.data", inputs=[f"{RUN}.n_clicks"], trigger=f"{RUN}.n_clicks",
                      name="cb calibrate plan")
        if plan.status != 200:
            raise FlowError("calibrate", f"plan HTTP {plan.status}")
        if c.value("alert-calibrate", "is_open"):
            raise FlowError("calibrate", f"refused: {c.value('alert-calibrate', 'children')!r}")
        job = c.value(JOB, "data")
        if job is not None and job != before:
            run = c.call(output=f"{ACTIVE_RESULT}.data", inputs=[f"{JOB}.data"], trigger=f"{JOB}.data",
                         name="cb calibrate job")
            times.polls = run.polls
            if run.status != 200:
                raise FlowError("calibrate", f"the job ended without a result (HTTP {run.status} after "
                                             f"{run.seconds:.1f} s, {run.polls} polls)")
            if c.value("alert-calibrate", "is_open"):
                raise FlowError("calibrate", f"failed: {c.value('alert-calibrate', 'children')!r}")
        else:
            times.cached = True
        key = (c.value(ACTIVE_RESULT, "data") or {}).get("key")
        if not key:
            raise FlowError("calibrate", "no result became active")
        c.call(output="status-calibrate.children", inputs=[f"{ACTIVE_RESULT}.data"],
               trigger=f"{ACTIVE_RESULT}.data", name="cb calibrate render")
        times.calibrate = time.perf_counter() - started
        times.result_key = key
        return key

    def diagnostics(self) -> None:
        c = self.client
        c.set(LOCATION, "pathname", "/diagnostics")
        out = c.call(output="status-diagnostics.children", inputs=[f"{ACTIVE_RESULT}.data"],
                     trigger=f"{LOCATION}.pathname", name="cb diagnostics render")
        if out.status != 200:
            raise FlowError("diagnostics", f"HTTP {out.status}")
        c.set(LOCATION, "pathname", "/")

    def round(self, raw: bytes, filename: str, *, streamed: bool = True) -> RoundTimes:
        """One round; the upload goes as the page sends it (streamed to the upload route), or with
        `streamed=False` through dcc.Upload's base64 callback."""
        times = RoundTimes()
        t = time.perf_counter()
        self.open("/")
        times.page = time.perf_counter() - t
        t = time.perf_counter()
        (self.upload_stream if streamed else self.upload)(raw, filename)
        times.upload = time.perf_counter() - t
        key = self.calibrate(times)
        t = time.perf_counter()
        self.diagnostics()
        times.diagnostics = time.perf_counter() - t
        t = time.perf_counter()
        self.open("/")
        times.reload = time.perf_counter() - t
        restored = (self.client.value(ACTIVE_RESULT, "data") or {}).get("key")
        if restored != key:
            raise FlowError("reload", f"the session's result did not come back ({restored!r} != {key!r})")
        return times


__all__ = ["Browser", "FlowError", "RoundTimes", "DashError"]
