"""Identity and server-side truth (issue 11 items 2 and 3), through the app's own HTTP interface.

The session is a server-signed HttpOnly SameSite=Lax cookie; a callback sees its caller whatever the
browser's session store says; a borrowed session id, a known content sha256 or another session's key gets
nothing (dataset preview, calibration, result, predictions download); a forged background-job request runs
nothing; keys differ between servers; with a users file or a trusted proxy header each user sees only
their own datasets and results. Browsers here are Flask test clients driven by bench/dash_client.py.
"""
from __future__ import annotations

import base64
import hashlib
import json
import time

import pytest

from bench.dash_client import FlaskHTTP
from bench.load_flow import ACTIVE_DATASET, ACTIVE_RESULT, JOB, RUN, SESSION, Browser, RoundTimes
from execal import app as app_module
from execal.components import export_panel as ep
from execal.components import identity
from execal.components import results as results_mod
from execal.components import store
from execal.models.data.sample import generate_fills


def fills_bytes(n: int, seed: int) -> bytes:
    frame, _ = generate_fills(n, seed=seed)
    return frame.drop(columns=["cost_bps"]).to_csv(index=False).encode()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    app = app_module.create_app(cache_dir=str(tmp_path_factory.mktemp("identity") / "cache"))
    return app


def browser(app, **headers) -> Browser:
    b = Browser(FlaskHTTP(app.server.test_client(), headers), "http://127.0.0.1")
    return b


def owner_of(app, b: Browser) -> str | None:
    cookie = b.client.http.client.get_cookie(identity.COOKIE_NAME)
    return identity.owner_of_cookie(app, cookie.value if cookie else None)


@pytest.fixture(scope="module")
def alice(served):
    """A session that uploaded its own fills and calibrated them."""
    b = browser(served)
    b.open("/")
    raw = fills_bytes(1500, seed=901)
    b.raw = raw
    b.dataset = b.upload(raw, "alice-fills.csv")
    b.result = b.calibrate(RoundTimes())
    return b


# --- the cookie ---------------------------------------------------------------------------------


def test_the_session_is_a_signed_httponly_samesite_cookie(served):
    client = served.server.test_client()
    r = client.get("/")
    cookie = r.headers.get("Set-Cookie", "")
    assert cookie.startswith(identity.COOKIE_NAME + "=") and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    sid = identity.owner_of_cookie(served, client.get_cookie(identity.COOKIE_NAME).value)
    assert store.is_session_id(sid)
    # the page holds no session id, and is the same for everyone
    assert sid not in r.get_data(as_text=True) and sid not in client.get("/_dash-layout").get_data(as_text=True)
    # a tampered cookie is no session: the server issues a new one
    forged = client.get_cookie(identity.COOKIE_NAME).value[:-2] + "xx"
    other = served.server.test_client()
    other.set_cookie(identity.COOKIE_NAME, forged)
    other.get("/")
    assert identity.owner_of_cookie(served, other.get_cookie(identity.COOKIE_NAME).value) not in (None, sid)


def test_a_session_survives_a_reload_through_its_cookie(alice, served):
    before = owner_of(served, alice)
    alice.open("/")
    assert owner_of(served, alice) == before
    assert alice.client.value(ACTIVE_DATASET, "data") == {"key": alice.dataset}
    assert alice.client.value(ACTIVE_RESULT, "data") == {"key": alice.result}


# --- a borrowed session id ------------------------------------------------------------------------


def test_a_borrowed_session_id_gets_nothing(alice, served):
    sid = owner_of(served, alice)
    mallory = browser(served)
    mallory.open("/")
    c = mallory.client
    # the page's session store says alice's id: the server answers for mallory's own session
    c.set(SESSION, "data", sid)
    c.call(output=f"{ACTIVE_DATASET}.data", inputs=[f"{SESSION}.modified_timestamp"],
           trigger=f"{SESSION}.modified_timestamp")
    c.call(output=f"{ACTIVE_RESULT}.data", inputs=[f"{SESSION}.modified_timestamp"],
           trigger=f"{SESSION}.modified_timestamp")
    assert c.value(ACTIVE_DATASET, "data") != {"key": alice.dataset}     # mallory's own (the sample)
    assert c.value(ACTIVE_RESULT, "data") is None
    # a cookie naming alice's session but not signed by this server is no session either
    forger = served.server.test_client()
    foreign = _cookie_signed_elsewhere(sid)
    forger.set_cookie(identity.COOKIE_NAME, foreign)
    forger.get("/")
    assert identity.owner_of_cookie(served, forger.get_cookie(identity.COOKIE_NAME).value) != sid
    # and the download of alice's predictions, naming her session in the URL, is refused
    for client in (mallory.client.http.client, forger, served.server.test_client()):
        r = client.get(ep.ROUTE_PREFIX + f"predictions.csv?session={sid}&key={alice.result}")
        assert r.status_code == 404
    r = alice.client.http.client.get(ep.link_href(sid, alice.result, "predictions.csv"))
    assert r.status_code == 200 and r.get_data(as_text=True).count("\n") > 1000     # alice herself: yes


def _cookie_signed_elsewhere(sid: str) -> str:
    from flask import Flask

    other = Flask("elsewhere")
    other.secret_key = b"another server's secret, not ours"
    return identity.session_cookie(other, sid)


# --- a known content hash, another session's keys -------------------------------------------------


def test_a_known_sha256_or_another_sessions_key_gets_nothing(alice, served):
    sha = hashlib.sha256(alice.raw).hexdigest()
    st, results = store.get_store(served), results_mod.get_results(served)
    assert st.get_dataset(alice.dataset).sha256 == sha            # what an exported config prints
    assert not alice.dataset.startswith(sha)                      # ... is not the key
    mallory = browser(served)
    mallory.open("/")
    c = mallory.client
    for key in (f"{sha}-fills", alice.dataset):
        # the preview of the Data panel
        c.set(ACTIVE_DATASET, "data", {"key": key})
        c.call(output="summary-data.children", inputs=[f"{ACTIVE_DATASET}.data"], trigger=f"{ACTIVE_DATASET}.data")
        assert c.value("grid-data", "rowData") == []
        assert "alice-fills.csv" not in json.dumps(c.value("summary-data", "children"))
        # a calibration of it
        c.set(RUN, "n_clicks", (c.value(RUN, "n_clicks") or 0) + 1)
        c.call(output=f"{JOB}.data", inputs=[f"{RUN}.n_clicks"], trigger=f"{RUN}.n_clicks")
        assert c.value("alert-calibrate", "is_open") and "no dataset loaded" in c.value("alert-calibrate", "children")
    # alice's result key, held by mallory's page: nothing drawn, nothing downloaded
    c.set(ACTIVE_RESULT, "data", {"key": alice.result})
    c.call(output="status-calibrate.children", inputs=[f"{ACTIVE_RESULT}.data"], trigger=f"{ACTIVE_RESULT}.data")
    assert "Converged" not in json.dumps(c.value("status-calibrate", "children"))
    assert mallory.client.http.client.get(ep.link_href("", alice.result, "predictions.csv")).status_code == 404
    assert mallory.client.http.client.get(ep.link_href("", alice.result, "config.json")).status_code == 404
    # and alice's dataset did not become mallory's
    assert alice.dataset not in st.session_keys(owner_of(served, mallory))
    assert results.active(owner_of(served, alice)) == alice.result


# --- a forged background-job request --------------------------------------------------------------


def test_a_forged_job_request_runs_nothing(alice, served):
    st, results = store.get_store(served), results_mod.get_results(served)
    sample_key = st.active_key(owner_of(served, browser_with_sample(served)))
    # the result key an attacker would compute for the sample's default run (the old, unkeyed formula)
    settings = {"bootstrap": {"n": 1_000_000, "by": "day"}, "calibrator": {"model": "power_law"}, "segments": []}
    guessed = "result:" + hashlib.sha256(json.dumps({"data": sample_key, "filters": {}, "settings": settings},
                                                    sort_keys=True).encode()).hexdigest()[:32]
    forged_job = {"key": guessed, "dataset": alice.dataset, "filters": {}, "settings": settings,
                  "session": owner_of(served, alice), "requested_at": time.time()}
    mallory = browser(served)
    mallory.open("/")
    c = mallory.client
    before = results.active(owner_of(served, alice))
    c.set(JOB, "data", forged_job)
    started = time.perf_counter()
    out = c.call(output=f"{ACTIVE_RESULT}.data", inputs=[f"{JOB}.data"], trigger=f"{JOB}.data", interval_s=0.2)
    assert time.perf_counter() - started < 20                   # no million-resample bootstrap ran
    assert out.status == 204 or not out.outputs.get(ACTIVE_RESULT)
    assert results.get(guessed) is None and guessed not in results.cache
    assert results.active(owner_of(served, alice)) == before == alice.result
    assert results.active(owner_of(served, mallory)) is None
    # a real ticket of alice's, replayed by mallory, is not mallory's to redeem
    alice.client.set(RUN, "n_clicks", (alice.client.value(RUN, "n_clicks") or 0) + 1)
    alice.client.set("bootstrap-n-calibrate", "value", 50)
    alice.client.call(output=f"{JOB}.data", inputs=[f"{RUN}.n_clicks"], trigger=f"{RUN}.n_clicks")
    ticket = alice.client.value(JOB, "data")
    assert set(ticket) == {"ticket"}
    c.set(JOB, "data", ticket)
    out = c.call(output=f"{ACTIVE_RESULT}.data", inputs=[f"{JOB}.data"], trigger=f"{JOB}.data", interval_s=0.2)
    assert out.status == 204 and results.active(owner_of(served, mallory)) is None
    assert results.active(owner_of(served, alice)) == alice.result


def browser_with_sample(app) -> Browser:
    b = browser(app)
    b.open("/")             # a first visit loads the bundled sample fills into the session
    return b


def test_the_ui_caps_are_held_on_the_server(served):
    b = browser_with_sample(served)
    c = b.client
    c.set("bootstrap-n-calibrate", "value", 1_000_000)
    c.set(RUN, "n_clicks", 1)
    c.call(output=f"{JOB}.data", inputs=[f"{RUN}.n_clicks"], trigger=f"{RUN}.n_clicks")
    assert c.value("alert-calibrate", "is_open")
    assert "bootstrap resamples must be between 0 and 5000" in c.value("alert-calibrate", "children")
    assert c.value(JOB, "data") is None


# --- keys differ between servers ----------------------------------------------------------------


def test_keys_differ_between_servers(tmp_path, monkeypatch):
    monkeypatch.delenv("EXECAL_SECRET_KEY", raising=False)
    raw = fills_bytes(300, seed=5)
    keys = []
    for name in ("one", "two"):
        cache = store.open_cache(tmp_path / name)
        st, rs = store.SessionStore(cache), results_mod.ResultStore(cache)
        key = st.load_bytes(raw, name="f.csv")
        keys.append((key, results_mod.result_key(key, {}, {"a": 1}, secret=rs.secret)))
        assert (tmp_path / name / store.SECRET_FILE).stat().st_mode & 0o777 == 0o600
        # the same server keeps its key (a second worker on the directory agrees)
        assert store.SessionStore(store.open_cache(tmp_path / name)).load_bytes(raw, name="f.csv") == key
    assert keys[0][0] != keys[1][0] and keys[0][1] != keys[1][1]
    # with EXECAL_SECRET_KEY, servers sharing the secret (a scaled-out deployment) agree
    monkeypatch.setenv("EXECAL_SECRET_KEY", "s" * 40)
    a = store.SessionStore(store.open_cache(tmp_path / "three")).load_bytes(raw, name="f.csv")
    b = store.SessionStore(store.open_cache(tmp_path / "four")).load_bytes(raw, name="f.csv")
    assert a == b != keys[0][0]


# --- authentication -----------------------------------------------------------------------------


def basic(name: str, password: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{name}:{password}".encode()).decode()}


@pytest.fixture()
def users_app(tmp_path, monkeypatch):
    users = tmp_path / "users"
    identity.add_user(users, "alice", "alice-password")
    identity.add_user(users, "bob", "bob-password-1")
    assert users.stat().st_mode & 0o777 == 0o600
    assert "alice-password" not in users.read_text()
    monkeypatch.setenv("EXECAL_USERS_FILE", str(users))
    return app_module.create_app(cache_dir=str(tmp_path / "cache"))


def test_a_users_file_signs_people_in(users_app):
    client = users_app.server.test_client()
    r = client.get("/")
    assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Basic")
    assert client.post("/_dash-update-component", json={}).status_code == 401
    assert client.get("/", headers=basic("alice", "wrong")).status_code == 401
    assert client.get("/", headers=basic("carol", "alice-password")).status_code == 401
    assert client.get("/", headers={"Authorization": "Bearer nonsense"}).status_code == 401
    assert client.get("/", headers={"Authorization": "Basic %%%"}).status_code == 401
    assert client.get("/", headers=basic("alice", "alice-password")).status_code == 200


def test_each_user_sees_only_their_own_datasets_and_results(users_app):
    st, results = store.get_store(users_app), results_mod.get_results(users_app)
    alice = browser(users_app, **basic("alice", "alice-password"))
    alice.open("/")
    mine = alice.upload(fills_bytes(800, seed=77), "alice-only.csv")
    bob = browser(users_app, **basic("bob", "bob-password-1"))
    bob.open("/")
    assert bob.client.value(ACTIVE_DATASET, "data") != {"key": mine}
    alice_owner = identity.user_owner(st.secret, "alice")
    bob_owner = identity.user_owner(st.secret, "bob")
    assert mine in st.session_keys(alice_owner) and mine not in st.session_keys(bob_owner)
    # alice from another browser (no cookie yet) is still alice: her dataset comes back
    again = browser(users_app, **basic("alice", "alice-password"))
    again.open("/")
    assert again.client.value(ACTIVE_DATASET, "data") == {"key": mine}
    assert results.active(bob_owner) is None


def test_a_trusted_proxy_header_only_when_configured(tmp_path, monkeypatch):
    plain = app_module.create_app(cache_dir=str(tmp_path / "plain"))
    c1 = plain.server.test_client()
    assert c1.get("/", headers={"X-Forwarded-User": "alice"}).status_code == 200
    st = store.get_store(plain)
    b = browser(plain, **{"X-Forwarded-User": "alice"})
    b.open("/")
    # not configured: the header is ignored, the owner is this browser's own session
    assert owner_of(plain, b) != identity.user_owner(st.secret, "alice")

    monkeypatch.setenv("EXECAL_AUTH_HEADER", "X-Forwarded-User")
    app = app_module.create_app(cache_dir=str(tmp_path / "proxied"))
    st = store.get_store(app)
    client = app.server.test_client()
    assert client.get("/").status_code == 401
    assert client.get("/", headers={"X-Forwarded-User": ""}).status_code == 401
    assert client.get("/", headers={"X-Forwarded-User": "alice"}).status_code == 200
    alice = browser(app, **{"X-Forwarded-User": "alice"})
    alice.open("/")
    mine = alice.upload(fills_bytes(600, seed=78), "via-proxy.csv")
    assert mine in st.session_keys(identity.user_owner(st.secret, "alice"))
    bob = browser(app, **{"X-Forwarded-User": "bob"})
    bob.open("/")
    assert bob.client.value(ACTIVE_DATASET, "data") != {"key": mine}


def test_execal_users_add_writes_a_hashed_users_file(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "config" / "execal" / "users"        # its folder does not exist yet
    r = subprocess.run([sys.executable, "-m", "execal.cli", "users", "add", "carol", "--file", str(path),
                        "--password-stdin"], input="a long password\n", capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    users = identity.read_users(path)
    assert list(users) == ["carol"] and "a long password" not in path.read_text()
    assert path.stat().st_mode & 0o777 == 0o600 and path.parent.stat().st_mode & 0o777 == 0o700
    r = subprocess.run([sys.executable, "-m", "execal.cli", "users", "add", "bad name!", "--file", str(path),
                        "--password-stdin"], input="a long password\n", capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr


def test_binding_beyond_loopback_without_auth_warns(monkeypatch, capsys):
    from execal import cli

    monkeypatch.delenv("EXECAL_USERS_FILE", raising=False)
    monkeypatch.delenv("EXECAL_AUTH_HEADER", raising=False)
    monkeypatch.setattr(cli.os, "execvpe", lambda *a: None)
    cli.main(["serve", "--host", "0.0.0.0"])
    assert "without authentication" in capsys.readouterr().err
    monkeypatch.setenv("EXECAL_AUTH_HEADER", "X-Forwarded-User")
    cli.main(["serve", "--host", "0.0.0.0"])
    assert "without authentication" not in capsys.readouterr().err

