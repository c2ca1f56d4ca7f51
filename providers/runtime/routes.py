"""Where a service's requests go during a rollout, as the stable version's runtime reads it.

The split is per request, made by the stable version: keep-alive clients stay on one connection
for their whole life, so a split of connections would send one such client 0 % or 100 % of its
requests to the candidate. The deployer keeps a route file (``--routes`` / ``MLOPS_ROUTES_FILE``),
replaced atomically, holding where the rollout stands::

    {"rollout": {"candidate": "<version>", "stable": "<version>", "phase": "canary",
                 "weight": 10.0, "mirror": 0.0, ...},
     "candidate": {"version": "<version>", "host": "127.0.0.1", "port": 41234, ...}, ...}

Every worker checks the file's identity (inode, size, mtime) every ``CHECK_S`` seconds from its
event loop (one ``stat`` call, nothing on the request path) and rereads it when it changed. A
runtime whose own version the file names as candidate when it starts (``names_candidate``) is the
candidate: it serves its private port only and joins the public one on GO_LIVE (promote) alone,
never by the ``--hold-public`` timer, whatever the file says later (aborted, removed by a clear
after an interrupted abort): a rejected version never serves public requests. Any
other runtime answering the public port is the stable one and splits: of its ``/score``
requests, exactly ``weight`` percent (per block of 20 per worker, in shuffled order: see
``Share``) are answered by the candidate, and ``mirror`` percent are copied to it with the answer thrown away.
A forwarded request waits as long as the candidate's own scoring timeout allows (its entry's
``scoring_timeout_ms``; the stable version's when the entry has none), plus ``FORWARD_SLACK_S``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import random
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("mlops.runtime")

CHECK_S = 0.2
"""How often a worker looks at the route file (a ``stat``); a new weight applies within this."""
FORWARD_SLACK_S = 5.0
"""How much longer than the candidate's scoring timeout a forwarded request may take (its queue,
the network): a slower answer is the candidate's failure, and the request is answered here."""
IDLE_PHASES = ("aborted",)
"""Phases in which the stable version answers everything itself and the candidate holds no route."""


@dataclass(frozen=True)
class Route:
    """The part of a route file a runtime acts on."""

    candidate: str
    """The candidate's version (its spec fingerprint, the ``--revision`` it runs with)."""
    host: str
    port: int
    """The candidate's private port: forwarded and mirrored requests go there, never to the public one."""
    weight: float
    """Percent of ``/score`` requests the candidate answers."""
    mirror: float
    """Percent of the requests the stable version answers that are copied to the candidate."""
    active: bool
    """False once the rollout was aborted: nothing is forwarded."""
    stopped: bool = False
    """The deployer stopped the candidate (or its start failed): it runs no more."""
    timeout_ms: int | None = None
    """The candidate's scoring timeout; None: the file does not say (the stable version's applies)."""

    def forward_timeout_s(self, own_timeout_ms: int) -> float:
        """How long a request forwarded to the candidate may take; ``own_timeout_ms`` (the stable
        version's) stands in when the file does not give the candidate's."""
        return (self.timeout_ms or own_timeout_ms) / 1000 + FORWARD_SLACK_S


def parse(data: object) -> Route | None:
    """The route a file's JSON describes; None when it routes nothing (or is not a route file,
    or a value in it is out of range: NaN and infinite shares, a port that is no port)."""
    if not isinstance(data, dict):
        return None
    state, candidate = data.get("rollout"), data.get("candidate")
    if not isinstance(state, dict) or not isinstance(candidate, dict):
        return None
    try:
        weight, mirror = _percent(state.get("weight")), _percent(state.get("mirror"))
        port = int(candidate.get("port") or 0)
        timeout = candidate.get("scoring_timeout_ms")
        timeout_ms = None if timeout is None else int(timeout)
        if not 0 <= port <= 65535 or (timeout_ms is not None and timeout_ms <= 0):
            return None
        stopped = bool(candidate.get("stopped"))
        return Route(
            candidate=str(state["candidate"]),
            host=str(candidate.get("host") or "127.0.0.1"),
            port=port,
            weight=weight,
            mirror=mirror,
            active=str(state.get("phase")) not in IDLE_PHASES and not stopped,
            stopped=stopped,
            timeout_ms=timeout_ms,
        )
    except (KeyError, TypeError, ValueError, OverflowError):
        return None


def _percent(value: object) -> float:
    """A share in percent, clamped to 0..100; raises ValueError for NaN and infinities (a share
    no ``Share`` can take, on every request)."""
    number = float(value or 0.0)   # type: ignore[arg-type]
    if not math.isfinite(number):
        raise ValueError(f"not a finite share: {value!r}")
    return min(max(number, 0.0), 100.0)


def read(path: str) -> Route | None:
    """The route the file at ``path`` describes now; None when there is none or it is unusable."""
    try:
        with open(path, "rb") as fh:
            return parse(json.loads(fh.read()))
    except (OSError, ValueError):
        return None


def names_candidate(path: str, version: str) -> bool:
    """Whether the file names ``version`` a rollout's candidate that runs (or is about to start):
    read once when a runtime starts, it makes that runtime a candidate for the whole of its life."""
    route = read(path)
    return route is not None and route.candidate == version and not route.stopped


class Share:
    """Says yes to exactly ``percent`` of calls: of every ``BLOCK`` calls, exactly that share (the
    fractions carried over to the next block), at places shuffled within the block.

    Exact per worker, so exact overall, and never more than one block away from it. Shuffled,
    not periodic: with a strict period (every other call at 50 %), two clients that take turns
    would get 100 % and 0 % of the candidate; shuffling breaks any such lockstep.
    """

    __slots__ = ("_percent", "_carry", "_pending", "_rng")
    BLOCK = 20

    def __init__(self, percent: float = 0.0, rng: random.Random | None = None) -> None:
        self._percent = percent
        self._carry = 0.0
        self._pending: list[bool] = []
        self._rng = rng or random.Random()

    @property
    def percent(self) -> float:
        return self._percent

    @percent.setter
    def percent(self, value: float) -> None:
        if value != self._percent:
            self._percent, self._carry, self._pending = value, 0.0, []

    def take(self) -> bool:
        pending = self._pending
        if not pending:
            if self._percent <= 0.0:
                return False
            exact = self._percent * self.BLOCK / 100.0 + self._carry
            count = min(int(exact), self.BLOCK)
            self._carry = exact - count
            pending += [True] * count + [False] * (self.BLOCK - count)
            self._rng.shuffle(pending)
        return pending.pop()


FORWARD, MIRROR = "forward", "mirror"


class Router:
    """One worker's view of the route file, and its split decisions."""

    def __init__(self, path: str, own_version: str, on_candidate_change: Callable[[str | None], None] | None = None):
        self.path = path
        self.own_version = own_version
        self.route: Route | None = None
        """The route this worker splits by (None: it answers everything itself)."""
        self.held = False
        """This runtime is the active candidate: it must not join the public port."""
        self.splitting = False
        """Some share goes to the candidate (the one check a request pays while it is False)."""
        self._seen: tuple[int, int, int] | None = None
        self._weight = Share()
        self._mirror = Share()
        self._on_candidate_change = on_candidate_change
        self._candidate: str | None = None
        self._handle: asyncio.TimerHandle | None = None

    def check(self) -> None:
        """Reread the file if it changed since the last look (a ``stat`` otherwise)."""
        try:
            st = os.stat(self.path)
            seen: tuple[int, int, int] | None = (st.st_ino, st.st_size, st.st_mtime_ns)
        except OSError:
            seen = None
        if seen == self._seen:
            return
        route = None
        if seen is not None:
            try:
                with open(self.path, "rb") as fh:
                    route = parse(json.loads(fh.read()))
            except (OSError, ValueError):
                return   # unreadable now: keep the last route and look again (``_seen`` unchanged)
        self._seen = seen
        self._apply(route)

    def _apply(self, route: Route | None) -> None:
        mine = route is not None and route.candidate == self.own_version
        self.held = bool(mine and route is not None and route.active)
        routed = route if route is not None and route.active and not mine and route.port else None
        if routed != self.route:
            log.info("route: %s", f"candidate {routed.candidate[:12]} on {routed.host}:{routed.port} answers "
                                  f"{routed.weight:g}%, mirror {routed.mirror:g}%" if routed else "none")
        self.route = routed
        self.splitting = routed is not None and (routed.weight > 0 or routed.mirror > 0)
        self._weight.percent = routed.weight if routed else 0.0
        self._mirror.percent = routed.mirror if routed else 0.0
        candidate = routed.candidate if routed else None
        if candidate != self._candidate:
            self._candidate = candidate
            if self._on_candidate_change is not None:
                self._on_candidate_change(candidate)

    def decide(self) -> str | None:
        """For one ``/score`` request on the public port: FORWARD (the candidate answers), MIRROR
        (a copy goes to the candidate, stable answers) or None."""
        if self._weight.take():
            return FORWARD
        if self._mirror.take():
            return MIRROR
        return None

    def watch(self, loop: asyncio.AbstractEventLoop) -> None:
        """Check now and every ``CHECK_S`` seconds from ``loop``."""
        self.check()

        def tick() -> None:
            with contextlib.suppress(Exception):   # a watch must never take the worker down
                self.check()
            self._handle = loop.call_later(CHECK_S, tick)

        self._handle = loop.call_later(CHECK_S, tick)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
