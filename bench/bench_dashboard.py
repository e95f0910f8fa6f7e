"""Benchmark of the dashboard's server side with 1,000,000 fills: first page load, and the size of every
callback response (data stays on the server: no response may exceed 5 MB).

Setup: 1,000,000 simulated fills (100,000 with quick=True; three venues with their own impact
prefactor, 1 % outliers) are loaded through the session store as a Parquet upload would be, and
calibrated twice with the Calibrate panel's own code (`calibrate_panel.run_calibration`): pooled, and
segmented by venue with a 50-resample bootstrap.

The browser is replaced by `Renderer`, just enough of dash-renderer to replay a session through Flask's
test client: it reads `/_dash-layout` and `/_dash-dependencies`, fires the initial callbacks in dependency
order, applies every response to its copy of the component tree (new components included), and fires
whatever the changed properties feed, as the browser would. Clientside and background callbacks are not
replayed (the fit itself is timed by bench_calibrate; its result is made here as the job would make it).

Rows:
- first page load: GET / + /_dash-layout + /_dash-dependencies + every initial callback and the
  callbacks they trigger (their server time, one after the other), for a session whose dataset (1M
  fills) and last result (segmented) are in the cache. "New worker" runs in a fresh interpreter (as a
  new gunicorn worker: frame and result read from the disk cache, every per-process cache empty; best of
  3 workers); "same worker again" is that worker's next load. Baseline: a bare Dash app (one html.Div)
  answering the same three requests. Floor 2 s.
- response size, one row per callback: the largest response it sent while the replay loaded the page,
  visited every panel, set a filter, pressed Calibrate (a cached repeat), switched between the pooled
  and segmented results, moved a Tweak slider and imported a config. Limit 5 MB (`meets floor` is
  the size test; seconds = that callback's server time). Baseline: the data itself as JSON records
  (`DataFrame.to_json`), i.e. what a response would carry if data rode through the browser.
"""
from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import dash
import orjson
from dash import html

from bench.common import best_of, row
from execal.components import identity

ROOT = Path(__file__).resolve().parents[1]
LIMIT_BYTES = 5 * 2**20
PAGE_FLOOR_S = 2.0


# --- a minimal dash-renderer --------------------------------------------------------------------


def _stringify(component_id: Any) -> str:
    """dash-renderer's stringifyId: dict ids are JSON with sorted keys and no spaces."""
    if not isinstance(component_id, dict):
        return str(component_id)
    return "{" + ",".join(json.dumps(k) + ":" + json.dumps(component_id[k]) for k in sorted(component_id)) + "}"


def _split_outputs(output: str) -> list[tuple[str, str]]:
    """'..a.b...c.d..' or 'a.b' -> [(id, prop)], allow_duplicate hashes dropped."""
    parts = output[2:-2].split("...") if output.startswith("..") else [output]
    out = []
    for p in parts:
        ident, _, prop = p.rpartition(".")
        out.append((ident, prop.split("@")[0]))
    return out


def _wild(ident: str) -> dict | None:
    if not ident.startswith("{"):
        return None
    d = json.loads(ident)
    return d if any(isinstance(v, list) for v in d.values()) else None


class Renderer:
    """Replays what a browser's dash-renderer asks a Dash server, through Flask's test client."""

    def __init__(self, client, session_id: str):
        self.client = client
        self.session_id = session_id
        # the browser of this session holds its signed cookie (the server decides the session from it)
        client.set_cookie(identity.COOKIE_NAME, identity.session_cookie(client.application, session_id))
        self.props: dict[tuple[str, str], Any] = {}
        self.ids: dict[str, Any] = {}            # in layout order, as the renderer lists wildcard matches
        self.owned: dict[tuple[str, str], set[str]] = {}   # (id, prop) -> ids of the components inside it
        self.sizes: dict[str, list[tuple[int, float]]] = defaultdict(list)
        self.deps: list[dict] = []

    # the page
    def load(self) -> None:
        self.props.clear()
        self.ids.clear()
        self.owned.clear()
        page = self.client.get("/")
        assert page.status_code == 200
        layout = self.client.get("/_dash-layout").get_json()
        deps = self.client.get("/_dash-dependencies").get_json()
        self.deps = [d for d in deps if not d.get("clientside_function") and not d.get("background")]
        for d in self.deps:
            d["_outputs"] = _split_outputs(d["output"])
        self._walk(layout)
        # whatever the page's session store says, the server reads the session from the cookie
        self.props[("execal-session", "data")] = self.session_id
        self.props[("execal-session", "modified_timestamp")] = int(time.time() * 1000)
        initial = [d for d in self.deps if not d.get("prevent_initial_call")]
        self._run(initial, changed=set(), initial=True)

    def _walk(self, node: Any) -> set[str]:
        """Register the components in `node`; returns the ids found (for removal when replaced)."""
        found: set[str] = set()
        if isinstance(node, list):
            for x in node:
                found |= self._walk(x)
            return found
        if not isinstance(node, dict) or "props" not in node or "type" not in node:
            return found
        props = node["props"] or {}
        key = _stringify(props["id"]) if "id" in props else None
        if key is not None:
            self.ids[key] = props["id"]
            found.add(key)
        for prop, value in props.items():
            inner = self._walk(value)
            found |= inner
            if key is not None:
                self.props[(key, prop)] = value
                if inner:
                    self.owned[(key, prop)] = inner
        return found

    def _replace(self, key: str, prop: str, value: Any) -> None:
        """A response's new value: components that were inside the old one leave the page."""
        for gone in self.owned.pop((key, prop), set()):
            self.ids.pop(gone, None)
            for k in [k for k in self.props if k[0] == gone]:
                self.props.pop(k)
        self.props[(key, prop)] = value
        inner = self._walk(value)
        if inner:
            self.owned[(key, prop)] = inner

    # callbacks
    def _matches(self, pattern: dict) -> list[Any]:
        found = []
        for ident in self.ids.values():
            if isinstance(ident, dict) and set(ident) == set(pattern) and all(
                    isinstance(v, list) or ident[k] == v for k, v in pattern.items()):
                found.append(ident)
        return found

    def _spec(self, ident: str, prop: str, *, value: bool) -> Any:
        pattern = _wild(ident)
        if pattern is not None:
            return [{"id": i, "property": prop, **({"value": self.props.get((_stringify(i), prop))} if value else {})}
                    for i in self._matches(pattern)]
        ident_obj = self.ids.get(ident, json.loads(ident) if ident.startswith("{") else ident)
        out = {"id": ident_obj, "property": prop}
        if value:
            out["value"] = self.props.get((ident, prop))
        return out

    def _inputs_of(self, d: dict) -> set[tuple[str, str]]:
        keys = set()
        for i in d["inputs"]:
            pattern = _wild(i["id"])
            if pattern is None:
                keys.add((i["id"], i["property"]))
            else:
                keys |= {(_stringify(m), i["property"]) for m in self._matches(pattern)}
        return keys

    def _outputs_of(self, d: dict) -> set[tuple[str, str]]:
        keys = set()
        for ident, prop in d["_outputs"]:
            pattern = _wild(ident)
            keys |= {(ident, prop)} if pattern is None else {(_stringify(m), prop) for m in self._matches(pattern)}
        return keys

    def fire(self, d: dict, changed: set[tuple[str, str]]) -> set[tuple[str, str]]:
        outputs = [self._spec(i, p, value=False) for i, p in d["_outputs"]]
        body = {"output": d["output"], "outputs": outputs if len(outputs) > 1 or d["output"].startswith("..")
                else outputs[0],
                "inputs": [self._spec(i["id"], i["property"], value=True) for i in d["inputs"]],
                "state": [self._spec(s["id"], s["property"], value=True) for s in d["state"]],
                "changedPropIds": [f"{i}.{p}" for i, p in changed & self._inputs_of(d)]}
        t0 = time.perf_counter()
        r = self.client.post("/_dash-update-component", data=orjson.dumps(body), content_type="application/json")
        seconds = time.perf_counter() - t0
        if r.status_code == 204:      # PreventUpdate
            return set()
        assert r.status_code == 200, (d["output"][:120], r.status_code, r.get_data(as_text=True)[:500])
        self.sizes[d["output"]].append((len(r.data), seconds))
        payload = r.get_json()
        updated = set()
        for section in ("response", "sideUpdate"):
            for ident, props in (payload.get(section) or {}).items():
                for prop, value in props.items():
                    self._replace(ident, prop, value)
                    updated.add((ident, prop))
        return updated

    def _run(self, queue: list[dict], changed: set[tuple[str, str]], initial: bool = False) -> None:
        """Fire `queue`, then whatever the changed properties feed, round by round; a callback whose
        input another queued callback is about to write waits for it (as dash-renderer does)."""
        rounds = 0
        while queue:
            rounds += 1
            assert rounds < 50, "callback chain does not settle"
            pending_out = set().union(*(self._outputs_of(d) for d in queue))
            ready = [d for d in queue if not (self._inputs_of(d) & (pending_out - self._outputs_of(d)))] or queue[:1]
            waiting = [d for d in queue if d not in ready]
            fired = [(d, self.fire(d, changed)) for d in ready]
            changed = set().union(*(upd for _, upd in fired)) if fired else set()
            # a callback is not re-triggered by its own outputs (a slider and its box update each other)
            queue = waiting + [d2 for d2 in self.deps if d2 not in waiting and any(
                self._inputs_of(d2) & upd for d, upd in fired if d is not d2)]

    def set(self, ident: str | dict, prop: str, value: Any) -> None:
        """A user action: set a property and fire what it feeds."""
        key = _stringify(ident)
        self.ids.setdefault(key, ident)
        self.props[(key, prop)] = value
        changed = {(key, prop)}
        self._run([d for d in self.deps if self._inputs_of(d) & changed], changed)


# --- the data ------------------------------------------------------------------------------------


def make_app(cache_dir: Path):
    from execal import app as app_module

    return app_module.create_app(cache_dir=str(cache_dir))


def bare_app() -> dash.Dash:
    app = dash.Dash(__name__, serve_locally=True)
    app.layout = html.Div("bare")
    app.server.test_client().get("/")   # the same warm-up create_app does
    return app


def page_requests(client) -> None:
    for path in ("/", "/_dash-layout", "/_dash-dependencies"):
        assert client.get(path).status_code == 200


def setup(n: int, cache_dir: Path, session_id: str) -> dict:
    """1M fills in the store as the session's dataset; a pooled and a segmented result (the latter active)."""
    from execal.components import calibrate_panel as cp
    from execal.components import results as results_mod
    from execal.components import store
    from execal.models.impact.simulate import simulate_fills

    frame, _ = simulate_fills(n, params={"binance": {"Y": 0.6, "delta": 0.5}, "okx": {"Y": 0.8, "delta": 0.5},
                                         "coinbase": {"Y": 1.0, "delta": 0.5}}, seed=7, outlier_share=0.01)
    buf = io.BytesIO()
    frame.drop(columns=["cost_bps"]).to_parquet(buf)
    app = make_app(cache_dir)
    st, results = store.get_store(app), results_mod.get_results(app)
    t0 = time.perf_counter()
    dataset_key = st.load_bytes(buf.getvalue(), name=f"fills_{n // 1000}k.parquet", session_id=session_id)
    load_s = time.perf_counter() - t0
    keys = {}
    for label, changes in (("pooled", {}), ("segmented", {"segments": ["venue"], "bootstrap_n": 50})):
        c = cp.controls_from_settings(None)
        c.update(changes)
        plan = cp.plan_calibration(st, results, session_id=session_id, active_dataset={"key": dataset_key},
                                   filters={}, run_settings=cp.build_settings(**c))
        t0 = time.perf_counter()
        keys[label] = cp.run_calibration(st, results, plan["job"])
        keys[label + "_s"] = time.perf_counter() - t0
    # the data as the browser would get it if it rode through a response (the size baseline)
    t0 = time.perf_counter()
    as_json = st.get_dataset(dataset_key).frame.to_json(orient="records", date_format="iso")
    json_s = time.perf_counter() - t0
    return {"dataset": dataset_key, "load_s": load_s, "json_bytes": len(as_json), "json_s": json_s, **keys}


def replay(renderer: Renderer, app, info: dict) -> None:
    """What a user does after the page load, each step through the callbacks it triggers."""
    from execal.components import calibrate_panel as cp
    from execal.components import data_panel as dp
    from execal.components import export_panel as ep
    from execal.components import layout as shell
    from execal.components import results as results_mod

    for panel in shell.PANELS:
        renderer.set(shell.LOCATION_ID, "pathname", shell.panel_path(panel))
    renderer.set(dp.FILTER_VENUE, "value", ["okx", "binance"])
    renderer.set(dp.FILTER_VENUE, "value", [])
    # Calibrate pressed with the settings of a stored result: answered from the cache
    renderer.set(cp.RUN, "n_clicks", 1)
    results = results_mod.get_results(app)
    for label in ("pooled", "segmented", "pooled"):
        results.set_active(renderer.session_id, info[label])
        renderer.set(results_mod.ACTIVE_RESULT_ID, "data", {"key": info[label]})
    # a Tweak slider moved (the exponent: every model has one free)
    sliders = [i for i in renderer.ids.values() if isinstance(i, dict) and i.get("type") == "tweak-slider"]
    for slider in sliders[-1:]:
        current = renderer.props.get((_stringify(slider), "value"))
        renderer.set(slider, "value", float(current) * 1.05)
    text = ep.export_response(app.server.extensions["execal_store"], results, "config.json", renderer.session_id,
                              info["pooled"])[0]
    renderer.set(ep.IMPORT, "filename", "bench.json")
    renderer.set(ep.IMPORT, "contents", "data:application/json;base64," + base64.b64encode(text.encode()).decode())


def page_load(cache_dir: str, session_id: str, warm_repeat: int = 3) -> dict:
    """Seconds of a cold page load (this process has never served the session: frame and result come
    from the disk cache, per-process caches are empty) and of the best warm reload, with the slowest
    callbacks of the cold one. Run it in a fresh interpreter (`_fresh_page_load`)."""
    app = make_app(Path(cache_dir))
    renderer = Renderer(app.server.test_client(), session_id)
    t0 = time.perf_counter()
    renderer.load()
    cold = time.perf_counter() - t0
    slowest = sorted(((max(s for _, s in seen), _name(out)) for out, seen in renderer.sizes.items()), reverse=True)
    result = renderer.props.get(("execal-active-result", "data"))
    badge = renderer.props.get(("status-badge-calibrate", "children"))
    calls = sum(len(v) for v in renderer.sizes.values())
    warm, _ = best_of(renderer.load, repeat=warm_repeat)
    return {"cold_s": cold, "warm_s": warm, "callbacks": calls, "slowest": slowest[:4], "result": result,
            "badge": badge}


def _fresh_page_load(cache_dir: Path, session_id: str) -> dict:
    code = ("import json, sys, warnings; warnings.simplefilter('ignore'); "
            "from bench.bench_dashboard import page_load; "
            f"print('RESULT' + json.dumps(page_load({str(cache_dir)!r}, {session_id!r})))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    line = next(x for x in out.stdout.splitlines() if x.startswith("RESULT"))
    return json.loads(line[len("RESULT"):])


def _name(output: str) -> str:
    outs = _split_outputs(output)
    first = f"{outs[0][0]}.{outs[0][1]}"
    return first + (f" (+{len(outs) - 1} outputs)" if len(outs) > 1 else "")


def run(quick: bool = False) -> list[dict]:
    n = 100_000 if quick else 1_000_000
    session_id = str(uuid.uuid4())
    rows = []
    with tempfile.TemporaryDirectory(prefix="execal-bench-dash-") as tmp:
        cache_dir = Path(tmp) / "cache"
        info = setup(n, cache_dir, session_id)

        # first page load: a new worker (a fresh interpreter: nothing of the session in memory) and
        # that worker's next load, best of 3 workers; vs a bare Dash app answering the same requests
        loads = [_fresh_page_load(cache_dir, session_id) for _ in range(1 if quick else 3)]
        for load in loads:
            assert load["result"] == {"key": info["segmented"]}, "the page load did not restore the result"
        best = min(loads, key=lambda x: x["cold_s"])
        bare = bare_app().server.test_client()
        bare_s, _ = best_of(lambda: page_requests(bare), repeat=5)
        slowest = ", ".join(f"{name.split('.')[0]} {sec:.2f} s" for sec, name in best["slowest"][:3])
        note = (f"{n:,} fills and a segmented result (3 venues, bootstrap 50) restored, status shown: "
                f"{best['badge']}; {best['callbacks']} callbacks; slowest: {slowest}; all cold runs: "
                + ", ".join(f"{x['cold_s']:.2f}" for x in loads) + " s")
        rows.append(row(f"first page load, new worker ({n:,} fills)", best["cold_s"], floor_s=PAGE_FLOOR_S,
                        baseline="bare Dash app: GET /, _dash-layout, _dash-dependencies", baseline_s=bare_s,
                        note=note))
        rows.append(row(f"page load, same worker again ({n:,} fills)", min(x["warm_s"] for x in loads),
                        floor_s=PAGE_FLOOR_S, baseline="bare Dash app: GET /, _dash-layout, _dash-dependencies",
                        baseline_s=bare_s, note="frame, result and prepared figures in the worker's memory"))

        # every callback response while a user goes through the panels
        app = make_app(cache_dir)
        renderer = Renderer(app.server.test_client(), session_id)
        renderer.load()
        replay(renderer, app, info)
        for output, seen in sorted(renderer.sizes.items(), key=lambda kv: -max(b for b, _ in kv[1])):
            size, seconds = max(seen)
            r = row(f"response size: {_name(output)}", seconds,
                    baseline="the data as JSON records (DataFrame.to_json)", baseline_s=info["json_s"],
                    note=f"largest of {len(seen)} responses: {size / 2**20:.3f} MB (limit 5 MB); "
                         f"the data as JSON: {info['json_bytes'] / 2**20:.0f} MB")
            r["meets_floor"] = size <= LIMIT_BYTES   # the floor here is bytes, see note
            rows.append(r)
    return rows


if __name__ == "__main__":
    for r in run(quick="--quick" in sys.argv):
        print(r)
