"""Where per-task work runs: in this process, or on a Dask cluster when one is named.

Out-of-core work is a map over `ScanTask`s (execal.models.data.dataset) of a module-level
function returning small sums, then a reduction on the caller's side. `executor(scheduler)` gives
the place to run it: with no scheduler address (argument, or the environment variable
EXECAL_DASK_SCHEDULER) it is this process; with one, a `distributed.Client` connected to it (made
once per address). Either way `map` returns the results in task order, so the caller reduces them
in the same order and gets the same floating-point sums wherever the tasks ran.

Workers of an existing cluster need the same execal installed and the dataset directory at the same
path (a shared filesystem).
"""
from __future__ import annotations

import functools
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Sequence

from execal.models.core.errors import CalibrationError

ENV_SCHEDULER = "EXECAL_DASK_SCHEDULER"

_CLIENTS: dict[str, Any] = {}
_CLIENTS_LOCK = threading.Lock()


def scheduler_address(explicit: str | None = None) -> str | None:
    """The scheduler to use: `explicit` if given ("" or "local" = this process), else the
    environment variable EXECAL_DASK_SCHEDULER, else None (this process)."""
    value = explicit if explicit is not None else os.environ.get(ENV_SCHEDULER, "")
    value = (value or "").strip()
    return None if value in ("", "local", "none", "in-process") else value


class InProcess:
    """Run the tasks here, one after the other (or on `threads` threads: numpy and pyarrow
    release the GIL in their inner loops); results in task order."""

    def __init__(self, threads: int = 1):
        self.threads = max(int(threads), 1)

    @property
    def name(self) -> str:
        return "in-process" + (f" ({self.threads} threads)" if self.threads > 1 else "")

    def map(self, fn: Callable, items: Sequence, *, progress: Callable[[int, int], None] | None = None,
            **kwargs) -> list:
        total = len(items)
        if self.threads == 1 or total < 2:
            out = []
            for i, item in enumerate(items):
                out.append(fn(item, **kwargs))
                if progress:
                    progress(i + 1, total)
            return out
        done = [0]
        lock = threading.Lock()

        def run(item):
            value = fn(item, **kwargs)
            if progress:
                with lock:
                    done[0] += 1
                    progress(done[0], total)
            return value
        with ThreadPoolExecutor(self.threads) as pool:
            return list(pool.map(run, items))


class DaskExecutor:
    """Run the tasks on a Dask cluster through `distributed.Client(address)`."""

    def __init__(self, address: str):
        self.address = address
        self.client = _client(address)

    @property
    def name(self) -> str:
        return f"dask {self.address}"

    @property
    def workers(self) -> int:
        return len(self.client.scheduler_info(n_workers=-1).get("workers", {}))

    def map(self, fn: Callable, items: Sequence, *, progress: Callable[[int, int], None] | None = None,
            **kwargs) -> list:
        from distributed import as_completed

        if not items:
            return []
        # the keyword arguments travel inside the function (dask would turn a large array argument
        # into a shared task of its own, keyed by the argument's name); pure=False: never reuse a
        # result of an earlier pass
        futures = self.client.map(functools.partial(fn, **kwargs), list(items), pure=False)
        if progress:
            for i, _ in enumerate(as_completed(futures, loop=self.client.loop), start=1):
                progress(i, len(futures))
        return self.client.gather(futures)


def _client(address: str):
    try:
        from distributed import Client
    except ImportError:
        raise CalibrationError(f"a Dask scheduler was given ({address}) but dask.distributed is not "
                               "installed: pip install 'execal[cluster]', or run without a scheduler") from None
    with _CLIENTS_LOCK:
        client = _CLIENTS.get(address)
        if client is None or client.status not in ("running", "connecting"):
            try:
                client = Client(address, set_as_default=False, timeout="20s")
            except (OSError, TimeoutError) as exc:
                raise CalibrationError(f"cannot reach the Dask scheduler at {address} ({exc}); check the "
                                       f"address or unset {ENV_SCHEDULER}") from None
            _CLIENTS[address] = client
        return client


def close_clients() -> None:
    """Disconnect every client this process opened (tests, shutdown)."""
    with _CLIENTS_LOCK:
        for client in _CLIENTS.values():
            try:
                client.close()
            except Exception:   # pragma: no cover - a scheduler that went away
                pass
        _CLIENTS.clear()


def executor(scheduler: str | None = None, *, threads: int = 1):
    """`InProcess(threads)` without a scheduler address, else a `DaskExecutor` on it."""
    address = scheduler_address(scheduler)
    if address is None:
        return InProcess(threads)
    return DaskExecutor(address)
