"""A small Dash client for load tests and HTTP-level tests: it speaks to a running execal server exactly
as the browser's dash-renderer does, without a browser.

`DashClient(http, base_url)` loads a page (GET / for the config and its `end_id`, then /_dash-layout and
/_dash-dependencies), keeps every component's props as the page would, and fires one callback at a time
with `call(...)`: the request body is built from the callback's declared inputs and states (pattern-
matching ids included) out of the props it holds, and the response's props are written back. A
background callback is followed as the renderer follows it: the first answer is a signed job handle,
then the same request (inputs and states nulled) is re-posted with `cacheKey`, `job` and `endId` every
`interval` until the outputs arrive (or 204: the job ended with no output).

`http` is anything with requests' `get(url, **kw)` / `post(url, **kw)` (a `requests.Session`, or
locust's `HttpSession`, which also takes `name=` to group its statistics; pass `named=True`). Cookies
ride on the session, as in a browser. No retries, no redirects: what the server answers is what a
test sees.
"""
from __future__ import annotations

import base64
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any, Iterable

_CONFIG_RE = re.compile(r'<script id="_dash-config" type="application/json">(.*?)</script>', re.S)


def stringify_id(component_id: Any) -> str:
    """Dash's string form of an id (dict ids: JSON with sorted keys, no spaces)."""
    if isinstance(component_id, dict):
        return "{" + ",".join(json.dumps(k) + ":" + json.dumps(component_id[k]) for k in sorted(component_id)) + "}"
    return str(component_id)


def _walk(node: Any) -> Iterable[dict]:
    if isinstance(node, dict):
        if "props" in node and "type" in node:
            yield node
            for value in node["props"].values():
                yield from _walk(value)
        else:
            for value in node.values():
                yield from _walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from _walk(item)


def _parse_id(component_id: Any) -> Any:
    """/_dash-dependencies writes dict ids as JSON strings."""
    if isinstance(component_id, str) and component_id.startswith("{"):
        return json.loads(component_id)
    return component_id


def _is_pattern(component_id: Any) -> bool:
    return isinstance(component_id, dict) and any(isinstance(v, list) for v in component_id.values())


def _matches(pattern: dict, component_id: Any) -> bool:
    if not isinstance(component_id, dict) or set(component_id) != set(pattern):
        return False
    return all(isinstance(v, list) or component_id[k] == v for k, v in pattern.items())


def data_url(raw: bytes, mime: str = "text/csv") -> str:
    """A dcc.Upload `contents` value: what the browser sends for a file."""
    return f"data:{mime};base64," + base64.b64encode(raw).decode()


class DashError(RuntimeError):
    """The server answered a callback with an error status."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


@dataclass
class CallResult:
    status: int                              # the final HTTP status (200 with outputs, 204 no update)
    outputs: dict = field(default_factory=dict)   # {id string: {prop: value}}
    seconds: float = 0.0
    polls: int = 0
    side_updates: dict = field(default_factory=dict)


class DashClient:
    def __init__(self, http, base_url: str, *, named: bool = False, timeout_s: float = 60.0):
        self.http = http
        self.base = base_url.rstrip("/")
        self.named = named
        self.timeout_s = timeout_s
        self.config: dict = {}
        self.props: dict[str, dict] = {}        # id string -> props
        self.ids: dict[str, Any] = {}           # id string -> id as declared
        self.callbacks: list[dict] = []

    # --- transport ---------------------------------------------------------------------------------

    def _kw(self, name: str | None) -> dict:
        kw: dict = {"timeout": self.timeout_s, "allow_redirects": False}
        if self.named and name:
            kw["name"] = name
        return kw

    def get(self, path: str, *, name: str | None = None):
        return self.http.get(self.base + path, **self._kw(name))

    # --- the page ----------------------------------------------------------------------------------

    def load_page(self, path: str = "/") -> None:
        """What a page load fetches: the index (its config), the layout and the callback graph."""
        r = self.get(path, name="page /")
        if r.status_code != 200:
            raise DashError(f"GET {path}: {r.status_code}", r.status_code)
        m = _CONFIG_RE.search(r.text)
        self.config = json.loads(m.group(1)) if m else {}
        layout = self.get("/_dash-layout", name="page /_dash-layout")
        deps = self.get("/_dash-dependencies", name="page /_dash-dependencies")
        if layout.status_code != 200 or deps.status_code != 200:
            raise DashError("layout or dependencies failed", layout.status_code)
        self.props, self.ids = {}, {}
        for node in _walk(layout.json()):
            cid = node["props"].get("id")
            if cid is not None:
                key = stringify_id(cid)
                self.props[key] = dict(node["props"])
                self.ids[key] = cid
        self.callbacks = deps.json()
        self.set("execal-url", "pathname", path)

    def set(self, component_id: Any, prop: str, value: Any) -> None:
        """What the user (or the browser) does to a component: set one of its props."""
        key = stringify_id(component_id)
        self.props.setdefault(key, {})[prop] = value
        self.ids.setdefault(key, component_id)

    def value(self, component_id: Any, prop: str, default: Any = None) -> Any:
        return self.props.get(stringify_id(component_id), {}).get(prop, default)

    # --- callbacks ---------------------------------------------------------------------------------

    def find(self, *, output: str | None = None, inputs: Iterable[str] = ()) -> dict:
        """The one callback whose output string contains `output` and whose inputs include every
        "id.prop" of `inputs`."""
        want = set(inputs)
        found = []
        for cb in self.callbacks:
            if output is not None and output not in cb["output"]:
                continue
            have = {f"{stringify_id(_parse_id(i['id']))}.{i['property']}" for i in cb["inputs"]}
            if want <= have:
                found.append(cb)
        if len(found) != 1:
            raise LookupError(f"{len(found)} callbacks match output={output!r} inputs={sorted(want)}")
        return found[0]

    def _dep(self, dep: dict) -> Any:
        cid, prop = _parse_id(dep["id"]), dep["property"]
        if _is_pattern(cid):
            return [{"id": self.ids[k], "property": prop, "value": self.props[k].get(prop)}
                    for k in sorted(self.ids) if _matches(cid, self.ids[k])]
        return {"id": cid, "property": prop, "value": self.value(cid, prop)}

    def _outputs(self, cb: dict) -> Any:
        parts = cb["output"]
        outs = []
        multi = parts.startswith("..")
        for dep in (self._split_output(parts)):
            cid, prop = dep
            if _is_pattern(cid):
                outs.append([{"id": self.ids[k], "property": prop} for k in sorted(self.ids)
                             if _matches(cid, self.ids[k])])
            else:
                outs.append({"id": cid, "property": prop})
        return outs if multi else outs[0]

    @staticmethod
    def _split_output(text: str) -> list[tuple[Any, str]]:
        body = text[2:-2] if text.startswith("..") else text
        out = []
        for part in body.split("..."):
            cid, _, prop = part.rpartition(".")
            if "@" in prop:
                prop = prop.split("@")[0]
            out.append((json.loads(cid) if cid.startswith("{") else cid, prop))
        return out

    def payload(self, cb: dict, changed: Iterable[str]) -> dict:
        return {"output": cb["output"], "outputs": self._outputs(cb),
                "inputs": [self._dep(d) for d in cb["inputs"]],
                "state": [self._dep(d) for d in cb.get("state", [])],
                "changedPropIds": list(changed)}

    def post(self, body: dict, *, query: dict | None = None, name: str | None = None):
        url = self.base + "/_dash-update-component"
        args = dict(query or {})
        if self.config.get("end_id"):
            args = {"endId": self.config["end_id"], **args}
        if args:
            url += "?" + "&".join(f"{k}={v}" for k, v in args.items())
        return self.http.post(url, data=json.dumps(body), headers={"Content-Type": "application/json"},
                              **self._kw(name))

    def begin(self, *, output: str | None = None, inputs: Iterable[str] = (), trigger: str | None = None,
              name: str | None = None, body: dict | None = None) -> "Call":
        """Send one callback request (the first of a background job: its handle comes back)."""
        cb = self.find(output=output, inputs=inputs)
        body = body or self.payload(cb, [trigger] if trigger else [])
        call = Call(self, cb, body, name, time.perf_counter())
        call.response = self.post(body, name=name)
        if call.response.status_code == 200 and cb.get("background"):
            data = call.response.json()
            if "cacheKey" in data:
                call.handle = {"cacheKey": data["cacheKey"], "job": data["job"]}
        return call

    def call(self, *, output: str | None = None, inputs: Iterable[str] = (), trigger: str | None = None,
             name: str | None = None, body: dict | None = None, interval_s: float | None = None) -> CallResult:
        """Fire one callback (found by `output` / `inputs`) as if `trigger` ("id.prop") had just changed;
        follow a background job to its end; write the outputs back into the page's props."""
        return self.begin(output=output, inputs=inputs, trigger=trigger, name=name, body=body).finish(interval_s)

    def apply(self, data: dict) -> None:
        for cid, props in (data.get("response") or {}).items():
            for prop, value in props.items():
                self.props.setdefault(cid, {})[prop] = value
        for cid, props in (data.get("sideUpdate") or {}).items():
            for prop, value in props.items():
                self.props.setdefault(cid, {})[prop] = value


@dataclass
class Call:
    client: DashClient
    cb: dict
    body: dict
    name: str | None
    started: float
    response: Any = None
    handle: dict | None = None
    polls: int = 0

    @property
    def job_pid(self) -> int | None:
        """The job's process id, read from its (signed, not secret) handle."""
        if not self.handle:
            return None
        value = self.handle["job"].rpartition("~")[0]
        head = value.split(":")[0]
        return int(head) if head.isdigit() else None

    def poll(self):
        """One poll of a background job, as the renderer sends it (inputs and states nulled)."""
        quiet = json.loads(json.dumps(self.body))
        for group in ("inputs", "state"):
            for dep in quiet.get(group, []):
                for d in (dep if isinstance(dep, list) else [dep]):
                    d["value"] = None
        self.polls += 1
        name = (self.name + " poll") if self.name else None
        self.response = self.client.post(quiet, query=dict(self.handle), name=name)
        return self.response

    def done(self) -> bool:
        r = self.response
        return r.status_code != 200 or "response" in r.json() or self.handle is None

    def finish(self, interval_s: float | None = None) -> CallResult:
        c = self.client
        if self.handle is not None:
            background = self.cb.get("background") or {}
            wait = interval_s if interval_s is not None else background.get("interval", 1000) / 1000
            deadline = self.started + c.timeout_s
            while True:
                time.sleep(wait)
                r = self.poll()
                if r.status_code != 200 or "response" in r.json():
                    break
                if time.perf_counter() > deadline:
                    raise DashError(f"hung: the background job gave no result in {c.timeout_s:.0f} s", 0)
        r = self.response
        seconds = time.perf_counter() - self.started
        if r.status_code == 204:
            return CallResult(204, {}, seconds, self.polls)
        if r.status_code != 200:
            raise DashError(f"callback {self.cb['output'][:60]}: HTTP {r.status_code} {r.text[:200]}", r.status_code)
        data = r.json()
        c.apply(data)
        return CallResult(200, data.get("response", {}), seconds, self.polls, data.get("sideUpdate") or {})


class FlaskHTTP:
    """requests-like get/post over a Flask test client (in-process tests): cookies ride on the client."""

    class _Response:
        def __init__(self, r):
            self.status_code = r.status_code
            self.headers = r.headers
            self.content = r.get_data()
            self.text = r.get_data(as_text=True)

        def json(self):
            return json.loads(self.text)

    def __init__(self, client, headers: dict | None = None):
        self.client = client
        self.headers = dict(headers or {})

    @staticmethod
    def _path(url: str) -> str:
        return re.sub(r"^https?://[^/]+", "", url)

    def get(self, url, headers=None, **_kw):
        return self._Response(self.client.get(self._path(url), headers={**self.headers, **(headers or {})}))

    def post(self, url, data=None, headers=None, **_kw):
        return self._Response(self.client.post(self._path(url), data=data,
                                               headers={**self.headers, **(headers or {})}))
