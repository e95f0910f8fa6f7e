"""Real servers for the load benchmark and the serving tests, on 127.0.0.1 only: execal under gunicorn
(exactly the command `execal serve` runs), redis-server (Debian's) and execal's Celery workers.

Each starter is a context manager that yields a handle and stops what it started (SIGTERM, then SIGKILL)
by its own process id. Logs go to files in the caller's directory.
"""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from execal import cli

ROOT = Path(__file__).resolve().parents[1]
REDIS_SERVER = "/usr/bin/redis-server"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def hermetic_env(extra: dict | None = None) -> dict:
    """The environment without the caller's EXECAL_* settings, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXECAL_")}
    env.update({k: str(v) for k, v in (extra or {}).items()})
    return env


def stop(proc: subprocess.Popen, timeout_s: float = 20, sig: int = signal.SIGTERM) -> int | None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout_s)
    return proc.returncode


@dataclass
class Gunicorn:
    url: str
    port: int
    process: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def wait_http(url: str, proc: subprocess.Popen, log_path: Path, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{log_path.read_text(errors='replace')[-3000:]}")
        try:
            with urllib.request.urlopen(url + "/_dash-layout", timeout=10) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        time.sleep(0.3)
    raise RuntimeError(f"server not ready after {timeout_s} s:\n{log_path.read_text(errors='replace')[-3000:]}")


@contextlib.contextmanager
def gunicorn(folder: Path, *, env: dict | None = None, workers: int = 2, threads: int = 8,
             port: int | None = None, name: str = "gunicorn"):
    """`execal serve` (gunicorn, `workers` gthread workers) on 127.0.0.1 with the settings in `env`."""
    port = port or free_port()
    folder.mkdir(parents=True, exist_ok=True)
    log_path = folder / f"{name}.log"
    cmd = cli.gunicorn_command("127.0.0.1", port, workers, threads)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cmd, env=hermetic_env(env), stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    server = Gunicorn(url=f"http://127.0.0.1:{port}", port=port, process=proc, log_path=log_path)
    try:
        wait_http(server.url, proc, log_path)
        yield server
    finally:
        stop(proc)


@dataclass
class Redis:
    url: str
    port: int
    process: subprocess.Popen
    folder: Path


def start_redis(folder: Path, port: int | None = None) -> Redis:
    """A private redis-server on 127.0.0.1 (no persistence, no password: a test's throwaway)."""
    port = port or free_port()
    folder.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(folder), "--protected-mode", "yes"],
                            stdout=open(folder / f"redis-{port}.log", "ab"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return Redis(url=f"redis://127.0.0.1:{port}/0", port=port, process=proc, folder=folder)
        except OSError:
            time.sleep(0.1)
    stop(proc)
    raise RuntimeError("redis-server did not start")


@contextlib.contextmanager
def redis(folder: Path, port: int | None = None):
    server = start_redis(folder, port)
    try:
        yield server
    finally:
        stop(server.process)


@contextlib.contextmanager
def celery_worker(folder: Path, *, env: dict, concurrency: int = 2, name: str = "worker"):
    """`execal worker` (Celery, prefork pool of `concurrency` processes) with the settings in `env`."""
    folder.mkdir(parents=True, exist_ok=True)
    log_path = folder / f"{name}.log"
    cmd = [sys.executable, "-m", "execal.cli", "worker", "--concurrency", str(concurrency), "--name", name]
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cmd, env=hermetic_env(env), stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        yield proc, log_path
    finally:
        stop(proc, timeout_s=30)
