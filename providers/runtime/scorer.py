"""Calling the user's ``run()``: off the event loop, with a deadline and a bounded queue.

``run()`` is ordinary blocking code, so it runs on a small thread pool (one thread by default:
the same one-request-at-a-time-per-worker that Azure's sync workers give, which score scripts
silently rely on). The event loop stays free meanwhile, so liveness and readiness answer even
while a long prediction runs, and a deadline can answer 504 on time.

A call that has run longer than the *stall* threshold while requests wait behind it gives up its
slot: the next waiting request starts on an extra thread (at most ``max_concurrent`` extra ones),
so one hung ``run()`` does not make every request queued on this worker wait for the scoring
timeout. Calls that finish in time never overlap beyond ``max_concurrent``; a stall threshold of 0
turns the rule off for scripts that must never see two calls at once.

A thread cannot be killed. When ``run()`` overruns its deadline the client gets 504 at once and
the call is left to finish; if it is still running one more timeout later, the worker reports
itself wedged and is replaced by the supervisor (the ``on_wedged`` callback).
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from .script import EntryScript

log = logging.getLogger("mlops.runtime")

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]


class Busy(Exception):
    """Too many requests are waiting in this worker; answer 503."""


class ScoringTimeout(Exception):
    """``run()`` did not finish within the scoring timeout; answer 504."""


@dataclass(slots=True)
class Outcome:
    """What one ``run()`` call produced, ready to send (encoding happens on the worker thread)."""

    status: int = 200
    body: bytes = b""
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    run_ms: float = 0.0
    failure: ExcInfo | None = None
    """Set when ``run()`` (or encoding its result) raised: logged, never sent."""


def _jsonable(value: Any) -> Any:
    """``json.dumps`` fallback for what models return: NumPy arrays and scalars, pandas objects."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "to_dict"):
        return value.to_dict(orient="records") if hasattr(value, "columns") else value.to_dict()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _response_parts(value: Any) -> tuple[int, bytes, list[tuple[bytes, bytes]]] | None:
    """A Flask/werkzeug-style response returned by ``run()`` (Azure's ``AMLResponse``) passes through."""
    status = getattr(value, "status_code", None)
    get_data = getattr(value, "get_data", None)
    if not isinstance(status, int) or not callable(get_data):
        return None
    headers = [
        (str(k).lower().encode("latin-1"), str(v).encode("latin-1"))
        for k, v in getattr(value, "headers", {}).items()
        if str(k).lower() not in ("content-length", "transfer-encoding", "connection")
    ]
    return status, bytes(get_data()), headers


def encode(value: Any) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    """The HTTP answer for ``run()``'s return value: JSON-encoded, like Azure's server."""
    passthrough = _response_parts(value)
    if passthrough is not None:
        return passthrough
    return 200, json.dumps(value, default=_jsonable).encode(), [(b"content-type", b"application/json")]


class _Call:
    """One admitted request: the loop-side future, and where it stands (waiting, running, stalled)."""

    __slots__ = ("future", "finished", "kwargs", "started", "stalled")

    def __init__(self, future: asyncio.Future[Outcome], kwargs: dict[str, Any]) -> None:
        self.future = future
        self.finished = False
        """Its thread returned, or it expired before it started (it will never run)."""
        self.kwargs = kwargs
        self.started: float | None = None
        self.stalled = False


class Scorer:
    """Runs ``init()`` and ``run()`` on the worker's scoring threads (see the module docstring)."""

    def __init__(
        self,
        script: EntryScript,
        *,
        max_concurrent: int,
        max_queued: int,
        timeout_ms: int,
        on_wedged: Callable[[], None],
        stall_ms: int = 0,
    ) -> None:
        self._script = script
        self._max_concurrent = max_concurrent
        self._max_stalled = max_concurrent if stall_ms > 0 else 0
        self._pool = ThreadPoolExecutor(max_concurrent + self._max_stalled, thread_name_prefix="mlops-run")
        self._limit = max_concurrent + max_queued
        self._timeout_s = timeout_ms / 1000
        self.timeout_ms = timeout_ms
        self._stall_s = stall_ms / 1000
        self._on_wedged = on_wedged
        self._admitted = 0
        """Calls admitted and not finished (loop thread only, as every field below)."""
        self._running: dict[_Call, None] = {}
        """Calls holding a slot, oldest first."""
        self._stalled = 0
        """Calls that gave up their slot after the stall threshold and are still running."""
        self._waiting: deque[_Call] = deque()
        self._watch: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def init(self) -> float:
        """Run the user's ``init()`` on a scoring thread (the same thread ``run()`` will use when
        there is one); returns its duration in seconds. Exceptions propagate."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        started = time.perf_counter()
        await loop.run_in_executor(self._pool, self._script.init)
        return time.perf_counter() - started

    def _work(self, call: _Call) -> None:
        """Scoring thread: call ``run()``, encode the result, hand it back to the loop."""
        outcome = Outcome()
        started = time.perf_counter()
        try:
            value = self._script.run(**call.kwargs)
            outcome.run_ms = (time.perf_counter() - started) * 1000
            outcome.status, outcome.body, outcome.headers = encode(value)
        except BaseException:  # noqa: BLE001 - the user's code may raise anything
            outcome.run_ms = (time.perf_counter() - started) * 1000
            outcome.failure = sys.exc_info()  # type: ignore[assignment]
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._finished, call, outcome)

    def _start(self, call: _Call) -> None:
        assert self._loop is not None
        call.started = self._loop.time()
        self._running[call] = None
        self._pool.submit(self._work, call)

    def _dispatch(self) -> None:
        """Start waiting calls while a slot is free; watch for stalls while some still wait."""
        waiting = self._waiting
        while waiting and len(self._running) < self._max_concurrent:
            call = waiting.popleft()
            if not call.finished:  # else it expired while waiting
                self._start(call)
        if waiting and self._max_stalled and self._watch is None:
            assert self._loop is not None
            self._watch = self._loop.call_later(max(self._stall_s / 4, 0.01), self._check_stalls)

    def _check_stalls(self) -> None:
        """Calls running past the stall threshold give up their slot to the calls waiting behind them."""
        self._watch = None
        assert self._loop is not None
        now = self._loop.time()
        for call in list(self._running):
            if self._stalled >= self._max_stalled or call.started is None or now - call.started < self._stall_s:
                break   # oldest first: the rest started later
            del self._running[call]
            call.stalled = True
            self._stalled += 1
            log.warning("run() has been running for %.0f ms; the next request starts on another thread",
                        (now - call.started) * 1000)
        self._dispatch()

    def _finished(self, call: _Call, outcome: Outcome) -> None:
        call.finished = True
        self._admitted -= 1
        if call.stalled:
            self._stalled -= 1
        else:
            self._running.pop(call, None)
        if not call.future.done():
            call.future.set_result(outcome)
        if self._waiting:
            self._dispatch()

    def _expire(self, call: _Call) -> None:
        if call.future.done():
            return
        if call.started is None:  # still waiting: it will never run
            call.finished = True
            self._admitted -= 1
        else:
            assert self._loop is not None
            self._loop.call_later(self._timeout_s, self._check_wedged, call)
        call.future.set_exception(ScoringTimeout())

    def _check_wedged(self, call: _Call) -> None:
        if not call.finished:
            self._on_wedged()

    async def score(self, kwargs: dict[str, Any]) -> Outcome:
        """Call ``run(**kwargs)``; raises Busy (queue full) or ScoringTimeout (deadline)."""
        if self._admitted >= self._limit:
            raise Busy()
        loop = self._loop
        assert loop is not None, "init() must have run"
        self._admitted += 1
        call = _Call(loop.create_future(), kwargs)
        if len(self._running) < self._max_concurrent and not self._waiting:
            self._start(call)
        else:
            self._waiting.append(call)
            self._dispatch()
        timer = loop.call_later(self._timeout_s, self._expire, call)
        try:
            return await call.future
        finally:
            timer.cancel()

    def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
        self._pool.shutdown(wait=False, cancel_futures=True)
