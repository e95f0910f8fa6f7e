"""The monitor: market messages and fills in, online state, alarms, recalibration and events out.

One `Monitor` is the whole loop for any number of venues and symbols, whatever the source (a live
exchange socket, the replay server, a test feeding lines): `on_message(venue, raw)` takes a raw
websocket message, `on_snapshot` a REST depth snapshot, `on_fill` one of our executions. It runs on
one thread (the asyncio loop of execal.live.runner); only the refit runs elsewhere, in a worker
process (a thread would hold the GIL through the fit and delay every market message).

Per market message: parse (orjson), route by (venue, stream) to the `MarketState`, count and skip
what is malformed (an event for the first few), and report a book gap (`resync_needed`) so the
source fetches a new snapshot. Per second of market time (a tick): the liquidity and regime alarms,
and the tick goes to the sinks (the dashboard's series writer).

Per fill: it waits (bounded heap) until the market it traded on has reached its timestamp, so it
is priced against the state at its arrival; missing inputs are filled from that state (volatility:
the realised estimate; spread: the book; adv: the traded volume; arrival price: the mid). Then
the live config predicts it (`OnlineImpact`), the rolling metrics per venue take it, the residual
detectors per venue (CUSUM, Page–Hinkley) and the Kalman innovation test read its standardised
residual, and every alarm is an event. An alarm (of a kind in `recalibrate_on`) or the schedule
starts a refit on the trailing window (execal.live.recalibrate); its new config version is
written to the history and becomes live when it beats the live one out of sample (the rule of
models/live/versions.py), or when the user switches to it.
"""
from __future__ import annotations

import heapq
import math
import multiprocessing
import threading
import time
from collections import deque
from concurrent.futures import BrokenExecutor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Callable, Mapping

import numpy as np
import orjson
import pandas as pd

from execal.live.online import OnlineImpact
from execal.live.recalibrate import refit
from execal.models.data.orderbook import GAP
from execal.models.data.schema import DataError, side_sign
from execal.models.live.detectors import Cusum, InnovationTest, LiquidityAlarm, PageHinkley, RegimeAlarm
from execal.models.live.events import EventLog, iso_ns, make_event
from execal.models.live.market import MarketState
from execal.models.live.metrics import RollingErrors
from execal.models.live.regime import HamiltonFilter
from execal.models.live.versions import ConfigHistory, config_hash

_DEPTH, _TICKER, _TRADE, _OTHER = 0, 1, 2, 3


@dataclass
class MonitorSettings:
    # market state
    interval_s: float = 1.0
    levels: int = 100
    depth_bps: tuple = (10.0,)
    walk_sizes: tuple = ()
    vol_halflife_s: float = 60.0
    bipower_window_s: int = 300
    sigma_source: str = "ewma"              # "ewma" | "bipower": the volatility a fill lacks
    contract_size_usd: float = 100.0
    sample_levels: int = 0                  # keep the top levels in each tick (tests)
    history: int = 3600                     # ticks kept per market
    regime: dict | None = None              # {transition, mu, sigma2, period_s} (Markov fit)
    # metrics and detectors
    rolling_window: int = 200
    alpha: float = 0.05                     # prediction interval: 1 - alpha
    cusum_k: float = 0.5
    arl0: float = 1000.0                    # CUSUM / Page–Hinkley in-control run length (fills)
    ph_delta: float = 0.5
    innovation_window: int = 25
    innovation_alpha: float = 1e-3
    liquidity_ratio: float = 0.3
    liquidity_recover: float = 0.6
    liquidity_window_s: int = 300
    liquidity_min_s: int = 3
    liquidity_min_history_s: int = 60
    regime_p_min: float = 0.8
    # recalibration
    recalibrate_on: tuple = ("cusum", "page_hinkley", "kalman_innovation")
    recalibrate_every_fills: int = 0        # 0 = no schedule
    recal_window: int = 2000                # trailing fills refitted
    holdout: float = 0.3                    # newest share held out for the out-of-sample comparison
    min_fills: int = 60
    min_improvement: float = 0.05
    switch_alpha: float = 0.05
    auto_switch: bool = True
    cooldown_fills: int = 50                # fills between two alarm-triggered refits
    refit_after_fills: int = 60             # fills after the estimated change point before a refit
    relatch_fills: int = 200                # a detector that fired stays quiet (latched) this many
                                            # fills or until the live config changes
    # fills
    fill_wait_s: float = 5.0                # wall seconds a fill waits for its market to catch up
    max_pending_fills: int = 10_000
    max_malformed_events: int = 5

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class _Route:
    state: MarketState
    kind: int


@dataclass(order=True)
class _PendingFill:
    t_ns: int
    seq: int
    arrived: float = field(compare=False)
    fill: dict = field(compare=False)


def _time_ns(value) -> int:
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        v = int(value)
        # seconds, ms, us or ns since the epoch, by magnitude
        for scale, limit in ((10**9, 10**11), (10**6, 10**14), (10**3, 10**17)):
            if abs(v) < limit:
                return v * scale
        return v
    if isinstance(value, float):
        return _time_ns(int(value)) if value.is_integer() else int(value * 1e9)
    ts = pd.Timestamp(value)
    return int((ts.tz_localize("UTC") if ts.tzinfo is None else ts).value)


def _refit_executor() -> ProcessPoolExecutor:
    """One worker process (forkserver: no fork of this threaded process), started at once from a
    side thread so the first refit does not stop the message loop while it imports."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["execal.live.recalibrate"])
    pool = ProcessPoolExecutor(1, mp_context=ctx)

    def warm_up():
        try:
            pool.submit(int).result()
        except Exception:          # a broken pool is replaced by a thread at the first refit
            pass
    threading.Thread(target=warm_up, name="execal-refit-warmup", daemon=True).start()
    return pool


class Monitor:
    def __init__(self, config: Mapping | None = None, *, settings: MonitorSettings | None = None,
                 events: EventLog | None = None, history: ConfigHistory | None = None,
                 background: bool = True):
        self.settings = s = settings or MonitorSettings()
        self.events = events or EventLog(None)
        self.history = history
        self.markets: dict[tuple[str, str], MarketState] = {}
        self.routes: dict[tuple[str, str], _Route] = {}
        self.venue_markets: dict[str, str] = {}
        self.metrics = RollingErrors(s.rolling_window, 1.0 - s.alpha)
        self.residual_detectors: dict[str, list] = {}
        self.innovation = InnovationTest(s.innovation_window, s.innovation_alpha)
        self.liquidity: dict[tuple[str, str], LiquidityAlarm] = {}
        self.regime_alarms: dict[tuple[str, str], RegimeAlarm] = {}
        self.tick_sinks: list[Callable[[dict], None]] = []
        self.fill_sinks: list[Callable[[dict], None]] = []
        self.pending: list[_PendingFill] = []
        self._seq = 0
        self.recent_fills: deque = deque(maxlen=max(s.recal_window, 10))
        self.counts = dict(messages=0, malformed=0, unknown_stream=0, gaps=0, resyncs=0,
                           snapshots=0, connections=0, queue_dropped=0, fills=0, fills_used=0,
                           fills_refused=0, fills_dropped=0, fills_waited=0, alarms=0,
                           recalibrations=0, switches=0, ticks=0, alarms_suppressed=0)
        self.resync_needed: set[tuple[str, str]] = set()
        self.online: OnlineImpact | None = None
        self.live_version: int | None = None
        self.live_hash: str | None = None
        # the refit runs in another process: in a thread it would hold the GIL for whole numpy
        # passes and every market message would wait behind it (milliseconds of latency)
        self._executor = _refit_executor() if background else None
        self._refit: Future | None = None
        self._refit_reason = None
        self._last_refit_fill = -10**9
        self._plan: dict | None = None          # a refit waiting for fills after a change point
        self._latched: dict[tuple[str, str], int] = {}
        self.started = time.time()
        self.wall = time.monotonic()            # set by the runner once per batch of messages
        self.last_market_ns: int | None = None
        self.last_error: str | None = None
        if config is not None:
            self.set_config(config, reason="start", by="start")

    # -- configuration --------------------------------------------------------------------------------

    def set_config(self, config: Mapping, *, reason: str, by: str, version: int | None = None) -> None:
        """Make `config` the live one (a fresh online state: Kalman from its estimate, SGD from
        its parameters); recorded in the history (added as a version first when new)."""
        self.online = OnlineImpact(config, alpha=self.settings.alpha)
        if self.history is not None:
            if version is None:
                digest = config_hash(config)
                known = [v for v in self.history.versions()
                         if "versioning" in config and v["hash"] == digest[:12]]
                entry = known[0] if known else self.history.add(config, reason=reason)
                version = entry["version"]
            self.history.switch(version, reason=reason, by=by, t_ns=self.last_market_ns)
            self.live_version = version
            self.live_hash = self.history.full_hash(version)
        else:
            self.live_hash = config_hash(config)
        if by != "start":
            self.counts["switches"] += 1
        # a new model: its residuals start afresh
        self.residual_detectors.clear()
        self.innovation.reset()
        self._latched.clear()
        self._plan = None
        self.emit("switch", version=self.live_version, reason=reason, by=by,
                  params=self.online.model.as_dict(self.online.theta))

    def switch_to(self, ref, *, by: str = "user", reason: str = "user confirmed") -> None:
        if self.history is None:
            raise ValueError("no config history to switch from")
        entry = self.history.entry(ref)
        self.set_config(self.history.load(ref), reason=reason, by=by, version=entry["version"])

    # -- markets ---------------------------------------------------------------------------------------

    def add_market(self, venue: str, symbol: str, market: str) -> MarketState:
        s = self.settings
        regime = HamiltonFilter.from_config(s.regime) if s.regime else None
        state = MarketState(venue, symbol.upper(), market, interval_s=s.interval_s, levels=s.levels,
                            depth_bps=s.depth_bps, walk_sizes=s.walk_sizes,
                            vol_halflife_s=s.vol_halflife_s, bipower_window_s=s.bipower_window_s,
                            contract_size_usd=s.contract_size_usd, regime=regime,
                            sample_levels=s.sample_levels, history=s.history)
        key = (venue, symbol.upper())
        self.markets[key] = state
        self.venue_markets[venue] = state.market
        self.liquidity[key] = LiquidityAlarm(s.liquidity_ratio, s.liquidity_recover, s.liquidity_window_s,
                                             s.liquidity_min_s, s.liquidity_min_history_s)
        if regime is not None:
            self.regime_alarms[key] = RegimeAlarm(s.regime_p_min)
        state.sinks.append(self._on_tick)
        return state

    def _route(self, venue: str, stream: str) -> _Route | None:
        sym, _, channel = stream.partition("@")
        state = self.markets.get((venue, sym.upper()))
        if state is None:
            return None
        if channel.startswith("depth"):
            kind = _DEPTH
        elif channel == "bookTicker":
            kind = _TICKER
        elif channel in ("trade", "aggTrade"):
            kind = _TRADE
        else:
            kind = _OTHER
        route = self.routes[(venue, stream)] = _Route(state, kind)
        return route

    def on_message(self, venue: str, raw) -> None:
        """One raw combined-stream message ({"stream": ..., "data": ...}) from `venue`'s socket."""
        self.counts["messages"] += 1
        try:
            msg = orjson.loads(raw)
            stream = msg["stream"]
            data = msg["data"]
            route = self.routes.get((venue, stream)) or self._route(venue, stream)
            if route is None:
                self.counts["unknown_stream"] += 1
                return
            kind = route.kind
            route.state.seen_wall = self.wall
            if kind == _TICKER:
                route.state.on_ticker(data["b"], data["a"], data.get("T"))
            elif kind == _TRADE:
                t_ns = data["T"] * 1_000_000
                route.state.on_trade(float(data["p"]), float(data["q"]), t_ns)
                self.last_market_ns = t_ns
            elif kind == _DEPTH:
                if route.state.on_diff(data) == GAP:
                    self.counts["gaps"] += 1
                    key = (venue, route.state.symbol)
                    self.resync_needed.add(key)
                    self.emit("resync", venue=venue, symbol=route.state.symbol, reason="update-id gap",
                              gaps=route.state.book.counts["gaps"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
            self.counts["malformed"] += 1
            if self.counts["malformed"] <= self.settings.max_malformed_events:
                text = raw[:120] if isinstance(raw, (str, bytes)) else repr(raw)[:120]
                self.emit("malformed", venue=venue, error=f"{type(exc).__name__}: {exc}",
                          message=text.decode("utf-8", "replace") if isinstance(text, bytes) else text)

    def on_snapshot(self, venue: str, symbol: str, snap: Mapping) -> None:
        state = self.markets.get((venue, symbol.upper()))
        if state is None:
            return
        self.counts["snapshots"] += 1
        statuses = state.on_snapshot(snap)
        if GAP in statuses or state.book.needs_snapshot:
            self.resync_needed.add((venue, state.symbol))
        else:
            self.resync_needed.discard((venue, state.symbol))

    def reset_venue(self, venue: str) -> None:
        """A new connection: every book of the venue waits for a fresh snapshot."""
        for (v, sym), state in self.markets.items():
            if v == venue:
                state.book.reset()
                self.resync_needed.add((v, sym))
        self.counts["connections"] += 1

    def _on_tick(self, tick: dict) -> None:
        self.counts["ticks"] += 1
        key = (tick["venue"], tick["symbol"])
        t_ns = tick["t_ns"]
        self.last_market_ns = t_ns if self.last_market_ns is None else max(self.last_market_ns, t_ns)
        bps = self.settings.depth_bps[0]
        db, da = tick.get(f"depth_bid_{bps:g}bps"), tick.get(f"depth_ask_{bps:g}bps")
        if db is not None and da is not None:
            alarm = self.liquidity[key].update(db + da)
            if alarm:
                self.alarm(alarm, t_ns, venue=key[0], symbol=key[1], depth_bps=bps)
        if "p_regime" in tick and key in self.regime_alarms:
            alarm = self.regime_alarms[key].update(tick["p_regime"])
            if alarm:
                self.alarm(alarm, t_ns, venue=key[0], symbol=key[1])
        for sink in self.tick_sinks:
            sink(tick)

    # -- fills -----------------------------------------------------------------------------------------

    def _market_for(self, fill: Mapping) -> MarketState | None:
        sym = str(fill.get("symbol", "")).upper()
        venue = str(fill.get("venue", ""))
        state = self.markets.get((venue, sym))
        if state is not None:
            return state
        same = [st for (v, s), st in self.markets.items() if s == sym]
        if len(same) > 1 and venue:
            pref = [st for st in same if st.venue.startswith(venue) or venue.startswith(st.venue)]
            same = pref or same
        return same[0] if len(same) == 1 else None

    def on_fill(self, fill: Mapping) -> None:
        """Queue one fill; it is processed once its market has reached its time (or after
        `fill_wait_s` wall seconds), see `poll`."""
        self.counts["fills"] += 1
        try:
            t_ns = _time_ns(fill["timestamp"])
        except (KeyError, ValueError, TypeError) as exc:
            self._refuse(fill, f"timestamp: {exc}")
            return
        if len(self.pending) >= self.settings.max_pending_fills:
            heapq.heappop(self.pending)
            self.counts["fills_dropped"] += 1
        self._seq += 1
        heapq.heappush(self.pending, _PendingFill(t_ns, self._seq, time.monotonic(), dict(fill)))
        self.poll()

    def poll(self, *, flush: bool = False) -> None:
        """Process the queued fills whose market has caught up; collect a finished refit.

        A fill is processed when its market's exchange time has reached the fill's time, when it
        has no market here, or when its market has been silent for `fill_wait_s` wall seconds
        (a stalled feed must not hold fills forever)."""
        now = time.monotonic()
        self.wall = now
        wait = self.settings.fill_wait_s
        while self.pending:
            head = self.pending[0]
            state = self._market_for(head.fill)
            market_t = state.last_time_ns if state is not None else None
            silent_since = max(head.arrived, getattr(state, "seen_wall", 0.0) or 0.0)
            ready = (flush or state is None or (market_t is not None and market_t >= head.t_ns)
                     or now - silent_since >= wait)
            if not ready:
                break
            heapq.heappop(self.pending)
            if state is not None and market_t is not None and market_t < head.t_ns:
                self.counts["fills_waited"] += 1
            self._process_fill(head.fill, head.t_ns, state)
        self._collect_refit()

    def _refuse(self, fill, why: str) -> None:
        self.counts["fills_refused"] += 1
        if self.counts["fills_refused"] <= self.settings.max_malformed_events:
            self.emit("fill_refused", reason=why, order_id=fill.get("order_id"))

    def enrich(self, fill: dict, state: MarketState | None) -> dict:
        """The fill with the inputs it lacks taken from its market's state at arrival."""
        out = dict(fill)
        filled = []
        if state is not None:
            mid, spread = state.mid_spread()
            if out.get("volatility") is None:
                ewma, bip = state.sigma_daily()
                sigma = bip if self.settings.sigma_source == "bipower" else ewma
                if math.isfinite(sigma) and sigma > 0:
                    out["volatility"] = sigma
                    filled.append("volatility")
            if out.get("spread_bps") is None and math.isfinite(spread):
                out["spread_bps"] = spread
                filled.append("spread_bps")
            if out.get("adv") is None:
                adv = state.adv_estimate()
                if math.isfinite(adv) and adv > 0:
                    out["adv"] = adv
                    filled.append("adv")
            if out.get("arrival_price") is None and out.get("cost_bps") is None and math.isfinite(mid):
                out["arrival_price"] = mid
                filled.append("arrival_price")
        if out.get("cost_bps") is None and {"side", "exec_price", "arrival_price"} <= out.keys():
            out["cost_bps"] = side_sign(out["side"]) * (float(out["exec_price"]) / float(out["arrival_price"]) - 1.0) * 1e4
        out["filled_from_market"] = filled
        return out

    def _process_fill(self, fill: dict, t_ns: int, state: MarketState | None) -> None:
        if self.online is None:
            self._refuse(fill, "no live config")
            return
        try:
            rec = self.enrich(fill, state)
            for key in ("quantity", "adv", "volatility", "duration_s", "spread_bps", "cost_bps",
                        "market_volume", "exec_price", "arrival_price"):
                if rec.get(key) is not None:
                    rec[key] = float(rec[key])
            rec["timestamp"] = pd.Timestamp(t_ns, tz="UTC")
            f = self.online.features(rec)
            out = self.online.step(f, t_ns=t_ns)
        except (DataError, ValueError, TypeError, KeyError) as exc:
            self._refuse(fill, str(exc))
            return
        if not (math.isfinite(out["predicted_bps"]) and math.isfinite(out["realised_bps"])):
            self._refuse(fill, "no prediction (an input is not a number)")
            return
        self.counts["fills_used"] += 1
        venue = str(rec.get("venue") or (state.venue if state else "unknown"))
        self.metrics.add(venue, out["realised_bps"], out["predicted_bps"], out["lower_bps"], out["upper_bps"])
        self.metrics.add("all", out["realised_bps"], out["predicted_bps"], out["lower_bps"], out["upper_bps"])
        rec["venue"] = venue
        rec["t_ns"] = t_ns
        self.recent_fills.append(rec)
        dets = self.residual_detectors.get(venue)
        if dets is None:
            s = self.settings
            dets = self.residual_detectors[venue] = [Cusum(s.cusum_k, arl0=s.arl0),
                                                     PageHinkley(s.ph_delta, arl0=s.arl0)]
        fired = []
        for det in dets:
            alarm = det.update(out["z"], t_ns)
            if alarm:
                fired.append(self._fill_alarm(alarm, t_ns, venue, rec.get("symbol")))
        alarm = self.innovation.update(out.get("innovation_z", math.nan), t_ns)
        if alarm:
            fired.append(self._fill_alarm(alarm, t_ns, venue, rec.get("symbol")))
        record = {"t_ns": t_ns, "venue": venue, "symbol": rec.get("symbol"), "order_id": rec.get("order_id"),
                  "predicted_bps": out["predicted_bps"], "lower_bps": out["lower_bps"],
                  "upper_bps": out["upper_bps"], "realised_bps": out["realised_bps"], "z": out["z"],
                  "kalman_value": out.get("kalman_value"), "kalman_lower": out.get("kalman_lower"),
                  "kalman_upper": out.get("kalman_upper"), "sgd": out.get("sgd"),
                  "live_coef": (float(self.online.theta[self.online.j]) if self.online.j is not None else None),
                  "drift_parameter": self.online.drift, "version": self.live_version, "filled_from_market": rec["filled_from_market"]}
        for sink in self.fill_sinks:
            sink(record)
        s = self.settings
        n_used = self.counts["fills_used"]
        trigger = next((a for a in fired if a and a["detector"] in s.recalibrate_on), None)
        if trigger and self._plan is None and self._refit is None \
                and n_used - self._last_refit_fill >= s.cooldown_fills:
            # refit on the fills since the estimated change point, once there are enough of them
            since = int(trigger.get("changepoint") or t_ns)
            self._plan = {"reason": f"{trigger['detector']} alarm", "since_ns": since, "alarm_ns": t_ns,
                          "n_after": sum(1 for f in self.recent_fills if f["t_ns"] >= since) - 1}
            self.emit("recalibration_planned", t_ns, reason=self._plan["reason"], since=iso_ns(since),
                      after_fills=s.refit_after_fills)
        if self._plan is not None:
            since = self._plan["since_ns"]
            if t_ns >= since:
                self._plan["n_after"] += 1
            if self._plan["n_after"] >= s.refit_after_fills:
                plan, self._plan = self._plan, None
                self.start_refit(plan["reason"], t_ns, since_ns=since)
        elif s.recalibrate_every_fills and n_used % s.recalibrate_every_fills == 0:
            self.start_refit("schedule", t_ns)

    def _fill_alarm(self, alarm: dict, t_ns: int, venue: str, symbol) -> dict | None:
        """An alarm event, unless the same detector on the same venue fired within
        `relatch_fills` fills under the same live config (then counted as suppressed)."""
        key = (venue, alarm["detector"])
        n = self.counts["fills_used"]
        last = self._latched.get(key)
        if last is not None and n - last < self.settings.relatch_fills:
            self.counts["alarms_suppressed"] += 1
            return None
        self._latched[key] = n
        if alarm.get("changepoint") is not None:
            alarm = {**alarm, "changepoint": iso_ns(alarm["changepoint"]), "changepoint_ns": alarm["changepoint"]}
        out = self.alarm(alarm, t_ns, venue=venue, symbol=symbol)
        out["changepoint"] = alarm.get("changepoint_ns")
        return out

    # -- alarms, events, recalibration -----------------------------------------------------------------

    def emit(self, kind: str, t_ns: int | None = None, **fields) -> dict:
        return self.events.write(make_event(kind, t_ns if t_ns is not None else self.last_market_ns, **fields))

    def alarm(self, alarm: dict, t_ns: int, **where) -> dict:
        self.counts["alarms"] += 1
        return self.emit("alarm", t_ns, **where, **alarm)

    def start_refit(self, reason: str, t_ns: int | None = None, since_ns: int | None = None) -> bool:
        """Refit on the trailing fills (those from `since_ns` on when given) in the background;
        False when one is running or there are too few fills."""
        s = self.settings
        if self._refit is not None or self.online is None:
            return False
        rows = [f for f in self.recent_fills if since_ns is None or f["t_ns"] >= since_ns]
        if len(rows) < s.min_fills:
            self.emit("recalibration_skipped", t_ns, reason=reason,
                      why=f"{len(rows)} fills in the window, {s.min_fills} needed")
            self._last_refit_fill = self.counts["fills_used"]
            return False
        self._last_refit_fill = self.counts["fills_used"]
        frame = pd.DataFrame(rows)
        args = (dict(self.online.config), frame)
        kwargs = dict(reason=reason, history=self.history, parent=self.live_hash, holdout=s.holdout,
                      min_improvement=s.min_improvement, alpha=s.switch_alpha)
        self._refit_reason = reason
        if self._executor is None:
            fut: Future = Future()
            try:
                fut.set_result(refit(*args, **kwargs))
            except Exception as exc:      # reported as an event, the monitor goes on
                fut.set_exception(exc)
            self._refit = fut
            self._collect_refit()
        else:
            try:
                self._refit = self._executor.submit(refit, *args, **kwargs)
            except BrokenExecutor as exc:
                # the worker process could not start (e.g. an unguarded __main__ script re-imported
                # by multiprocessing): refit in a thread instead, and say so
                self.emit("refit_worker", error=f"{type(exc).__name__}: {exc}", fallback="thread")
                self._executor = ThreadPoolExecutor(1, thread_name_prefix="execal-refit")
                self._refit = self._executor.submit(refit, *args, **kwargs)
        return True

    def _collect_refit(self) -> None:
        fut = self._refit
        if fut is None or not fut.done():
            return
        self._refit = None
        try:
            out = fut.result()
        except BrokenExecutor as exc:
            self.emit("refit_worker", error=f"{type(exc).__name__}: {exc}", fallback="thread")
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="execal-refit")
            return
        except Exception as exc:      # a refit that fails is an event, not a crash
            self.emit("recalibration_failed", reason=self._refit_reason, error=f"{type(exc).__name__}: {exc}")
            return
        self.counts["recalibrations"] += 1
        cmp = out["comparison"]
        self.emit("recalibration", version=out.get("version"), reason=self._refit_reason,
                  params=out["params"], window=out["window"], comparison=cmp,
                  decision="switch" if cmp.get("switch") and self.settings.auto_switch else "candidate")
        if cmp.get("switch") and self.settings.auto_switch:
            self.set_config(out["config"], reason=f"beats v{self.live_version} out of sample "
                            f"(RMSE {cmp['candidate']['rmse_bps']:.3g} vs {cmp['current']['rmse_bps']:.3g} bps)",
                            by="rule", version=out.get("version"))

    def wait_refit(self, timeout: float = 60.0) -> None:
        """Block until a running refit is collected (tests, the end of a replay)."""
        fut = self._refit
        if fut is not None:
            fut.exception(timeout=timeout)
            self._collect_refit()

    # -- reporting -------------------------------------------------------------------------------------

    def status(self) -> dict:
        return {"time": self.last_market_ns, "uptime_s": time.time() - self.started,
                "counts": dict(self.counts), "pending_fills": len(self.pending),
                "live_version": self.live_version,
                "markets": {f"{v}:{s}": st.status() for (v, s), st in self.markets.items()},
                "metrics": self.metrics.all(), "online": self.online.state() if self.online else None,
                "alarms": {k: v for k, v in self.events.counts.items()},
                "resync_needed": sorted(f"{v}:{s}" for v, s in self.resync_needed)}

    def status_line(self) -> str:
        c = self.counts
        parts = [f"msgs {c['messages']}"]
        for (v, s), st in self.markets.items():
            mid, spread = st.mid_spread()
            ewma, _ = st.sigma_daily()
            parts.append(f"{v}:{s} mid {mid:.6g} spr {spread:.2f}bp vol {ewma * 100:.2f}%/d")
        m = self.metrics.metrics("all")
        if m["n"]:
            parts.append(f"fills {c['fills_used']} rmse {m['rmse_bps']:.2f} bias {m['bias_bps']:+.2f} "
                         f"cov {m['coverage']:.2f}")
        parts.append(f"alarms {c['alarms']} recal {c['recalibrations']} v{self.live_version}")
        reconnects = max(0, c["connections"] - len(self.venue_markets))
        if c["gaps"] or c["malformed"] or c["queue_dropped"] or reconnects:
            parts.append(f"gaps {c['gaps']} malformed {c['malformed']} dropped {c['queue_dropped']} "
                         f"reconnects {reconnects}")
        return " | ".join(parts)

    def finish(self) -> None:
        """End of the stream: the last ticks, every queued fill, the running refit."""
        for st in self.markets.values():
            st.finish()
        self.poll(flush=True)
        self.wait_refit()

    def summary(self) -> dict:
        return {"counts": dict(self.counts), "events": dict(self.events.counts),
                "metrics": self.metrics.all(), "live_version": self.live_version,
                "online": self.online.state() if self.online else None,
                "markets": {f"{v}:{s}": st.status() for (v, s), st in self.markets.items()},
                "settings": self.settings.to_dict()}

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
        self.events.close()
