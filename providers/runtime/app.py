"""The HTTP surface: a plain ASGI application (no web framework: it is the hot path).

Routes, status codes, error bodies and headers follow Azure's ``azureml-inference-server-http``:

* ``GET /`` -> ``Healthy`` (liveness; always open, answers even while ``init()`` runs)
* ``GET /ready`` -> 200 once ``init()`` finished in this worker, 503 before (readiness; open)
* ``POST /score``, ``GET /score?…`` -> ``run()``; ``OPTIONS /score`` -> 200 (a ``@rawhttp``
  ``run()`` gets GET, POST and OPTIONS as the request object and answers them itself)
* ``GET /swagger.json?version=2|3|3.1`` -> the OpenAPI document
* ``GET /metrics`` on the probe port only -> Prometheus text (see ``metrics``)

During a rollout (``routes``), the stable version has a share of the ``/score`` requests on its
public port answered by the candidate, and mirrors copies to it (see ``routes`` and ``_split``).

Every error body is JSON ``{"message": …}``; every answer but ``GET /`` carries
``x-ms-run-function-failed`` (``True`` only when ``run()`` failed or answered 5xx). Requests to
``/score`` that arrive before ``init()`` finished wait for it (as they would queue in front of
Azure's server), up to the scoring timeout.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

from . import __version__, logs
from .auth import KeyCheck
from .cors import ALLOW_ORIGIN, Cors
from .forward import ForwardFailed, Upstream
from .inputs import InputError, arguments_for
from .metrics import CONTENT_TYPE, Recorder, SharedMetrics
from .request import Headers, Request
from .routes import FORWARD, Route, Router
from .scorer import Busy, Outcome, Scorer, ScoringTimeout
from .script import EntryScript
from .swagger import Swagger, SwaggerNotFound

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

log = logging.getLogger("mlops.runtime")

NOT_FOUND = (
    "The requested URL was not found on the server. If you entered the URL manually please check "
    "your spelling and try again."
)
METHOD_NOT_ALLOWED = "The method is not allowed for the requested URL."
RUN_FAILED = "An unexpected error occurred in scoring script. Check the logs for more info."
_JSON = (b"content-type", b"application/json")
_TEXT = (b"content-type", b"text/plain; charset=utf-8")
_HTML = (b"content-type", b"text/html; charset=utf-8")
_RUN_FAILED_HEADER = b"x-ms-run-function-failed"
_NOT_FAILED = (_RUN_FAILED_HEADER, b"False")
_FAILED = (_RUN_FAILED_HEADER, b"True")
_SERVER_VERSION = (b"x-ms-server-version", f"mlops-runtime/{__version__}".encode())
_CLOSE = (b"connection", b"close")
MAX_MIRRORS_IN_FLIGHT = 32
"""Mirror copies one worker has on their way to the candidate at once; more are dropped (and
counted), so a slow candidate never costs the stable version memory or time."""
_ALLOWED = {
    "/": (b"GET, HEAD", ("GET", "HEAD")),
    "/ready": (b"GET, HEAD", ("GET", "HEAD")),
    "/score": (b"GET, OPTIONS, POST", ("GET", "POST", "OPTIONS", "HEAD")),
    "/swagger.json": (b"GET, HEAD", ("GET", "HEAD")),
}


def _replay(body: bytes) -> Receive:
    """A ``receive`` that gives the already-read body again (the request is answered here after all)."""

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


class ClientGone(Exception):
    """The connection closed before the request body was complete: nothing to answer, no run()."""


def _message(text: str) -> bytes:
    return json.dumps({"message": text}).encode()


class RuntimeApp:
    """The ASGI application of one worker; ``ready`` flips when ``init()`` has finished."""

    def __init__(
        self,
        script: EntryScript,
        scorer: Scorer,
        keys: KeyCheck,
        *,
        max_body_bytes: int,
        make_swagger: Callable[[], Swagger],
        on_init_failed: Callable[[BaseException], None],
        on_ready: Callable[[], Awaitable[None]] | None = None,
        cors: Cors | None = None,
        metrics: SharedMetrics | None = None,
        recorder: Recorder | None = None,
        probe_port: int | None = None,
        router: Router | None = None,
    ) -> None:
        self._script = script
        self._scorer = scorer
        self._keys = keys
        self._max_body = max_body_bytes
        self._make_swagger = make_swagger
        self._on_init_failed = on_init_failed
        self._on_ready = on_ready
        self._cors = cors
        self._metrics = metrics
        self._recorder = recorder
        self._probe_port = probe_port
        self._router = router
        self._upstream: Upstream | None = None
        self._mirrors: set[asyncio.Task[None]] = set()
        self._swagger: Swagger | None = None
        self._access = logs.AccessLog()
        self._ready = asyncio.Event()
        self._init_task: asyncio.Task[None] | None = None

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def mark_unready(self) -> None:
        """Readiness answers 503 from now on (the worker is being replaced)."""
        self._ready.clear()

    # -- lifecycle ---------------------------------------------------------------------------

    async def _initialise(self) -> None:
        try:
            seconds = await self._scorer.init()
            self._swagger = self._make_swagger()
        except BaseException as exc:  # noqa: BLE001 - reported, then the worker exits
            self._on_init_failed(exc)
            return
        self._ready.set()
        log.info("init() finished in %.2fs; worker ready", seconds)
        if self._on_ready is not None:
            await self._on_ready()

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                if self._router is not None:
                    self._router.watch(asyncio.get_running_loop())
                # Not awaited: the server must answer liveness while a long init() runs.
                self._init_task = asyncio.get_running_loop().create_task(self._initialise())
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._router is not None:
                    self._router.stop()
                self._scorer.close()
                self._access.flush()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # -- plumbing ----------------------------------------------------------------------------

    async def _respond(
        self, send: Send, request: Request, status: int, body: bytes, headers: Headers, started: float
    ) -> None:
        names = {name for name, _ in headers}
        if _RUN_FAILED_HEADER not in names and not (status == 200 and request.path == "/"):
            headers.append(_NOT_FAILED)
        if request.routed:
            headers.append(_SERVER_VERSION)
            if self._cors is not None and ALLOW_ORIGIN not in names:
                headers.extend(self._cors.headers(request.headers, request.method))
        headers.append((b"content-length", str(len(body)).encode()))
        headers.extend(request.id_headers())
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        seconds = time.perf_counter() - started
        if self._recorder is not None and request.path == "/score":
            self._recorder.record(status, seconds)
        self._access.write(request.method, request.path, status, len(body), seconds * 1000, request.request_id)

    async def _error(
        self,
        send: Send,
        request: Request,
        status: int,
        text: str,
        started: float,
        extra: Headers | None = None,
    ) -> None:
        await self._respond(send, request, status, _message(text), [_JSON, *(extra or [])], started)

    async def _body(self, receive: Receive) -> bytes | None:
        """The request body, or None once it grows past the limit (the rest is not read); raises
        ClientGone when the client (or the server's body deadline) closed the connection first,
        so a truncated body never reaches ``run()``."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientGone()
            chunk = message.get("body", b"")
            if chunk:
                size += len(chunk)
                if size > self._max_body:
                    return None
                chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    # -- routes --------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(receive, send)
            return
        if kind != "http":
            return
        started = time.perf_counter()
        request = Request(scope)
        allowed = _ALLOWED.get(request.path)
        if allowed is None:
            if request.path == "/metrics" and self._serves_metrics(scope):
                await self._metrics_route(request, send, started)
                return
            await self._error(send, request, 404, NOT_FOUND, started)
            return
        request.routed = True
        problem = request.id_problem()
        if problem is not None:
            await self._error(send, request, 431, problem, started)
            return
        path = request.path
        if path in ("/score", "/swagger.json"):
            denied = self._keys.problem(request.authorization)
            if denied is not None:
                await self._error(send, request, 401, denied, started, [(b"www-authenticate", b"Bearer")])
                return
        if request.method not in allowed[1]:
            request.routed = False  # a routing error: answered before Azure's route handlers
            await self._error(send, request, 405, METHOD_NOT_ALLOWED, started, [(b"allow", allowed[0])])
            return
        if path == "/score":
            if self._router is not None and self._router.splitting and self._public(scope):
                split = await self._split(self._router.route, request, receive, send, started)  # type: ignore[arg-type]
                if split is None:
                    return
                receive = split
            try:
                await self._score(request, receive, send, started)
            except ClientGone:
                log.info("client went away before its request body was complete (request_id=%s)", request.request_id)
        elif path == "/":
            await self._respond(send, request, 200, b"Healthy", [_HTML], started)
        elif path == "/ready":
            if self.ready:
                await self._respond(send, request, 200, b"Ready", [_TEXT], started)
            else:
                await self._error(send, request, 503, "Not ready: init() has not finished", started)
        else:
            await self._swagger_route(request, send, started)

    def _public(self, scope: Scope) -> bool:
        """Whether the request came to the public port (not the private probe port, where a
        stable version's forwarded and mirrored requests arrive at a candidate)."""
        server = scope.get("server")
        return self._probe_port is None or server is None or server[1] != self._probe_port

    # -- rollouts: the candidate answers a share, or gets a copy -----------------------------------

    async def _split(self, route: Route, request: Request, receive: Receive, send: Send,
                     started: float) -> Receive | None:
        """Forward this request to the candidate or mirror it there, as the route's shares say.

        Returns None when the request was answered (by the candidate, or a client that went away),
        else the ``receive`` the stable version answers it from (its body already read). A
        candidate that gives no answer is retried here, on the stable version, and counted as the
        candidate's 5xx: the client never sees the failure, the analysis does.
        """
        assert self._router is not None
        decision = self._router.decide()
        if decision is None:
            return receive
        if request.content_length is not None and request.content_length > self._max_body:
            return receive   # answered 413 here, as the candidate would
        try:
            body = await self._body(receive)
        except ClientGone:
            return None
        if body is None:
            await self._too_large(send, request, started)
            return None
        upstream = self._upstream_for(route)
        target = request.scope.get("raw_path") or request.path.encode()
        if request.query:
            target += b"?" + request.query
        if decision == FORWARD:
            try:
                status, headers, answer = await upstream.request(request.method, target, request.headers, body)
            except ForwardFailed as exc:
                if self._recorder is not None:
                    self._recorder.forward_failed()
                log.warning("the candidate did not answer (%s); answering here (request_id=%s)", exc,
                            request.request_id)
                return _replay(body)
            headers.append((b"content-length", str(len(answer)).encode()))
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": answer})
            self._access.write(request.method, request.path + " (answered by the candidate)", status, len(answer),
                               (time.perf_counter() - started) * 1000, request.request_id)
            return None
        if len(self._mirrors) >= MAX_MIRRORS_IN_FLIGHT:
            if self._recorder is not None:
                self._recorder.mirror_dropped()
        else:
            task = asyncio.get_running_loop().create_task(self._mirror(upstream, request, target, body))
            self._mirrors.add(task)
            task.add_done_callback(self._mirrors.discard)
        return _replay(body)

    async def _mirror(self, upstream: Upstream, request: Request, target: bytes, body: bytes) -> None:
        try:
            await upstream.request(request.method, target, request.headers, body)
        except ForwardFailed:
            if self._recorder is not None:
                self._recorder.forward_failed()

    def _upstream_for(self, route: Route) -> Upstream:
        upstream = self._upstream
        timeout_s = route.forward_timeout_s(self._scorer.timeout_ms)
        if upstream is None or (upstream.host, upstream.port) != (route.host, route.port):
            if upstream is not None:
                upstream.close()
            upstream = self._upstream = Upstream(route.host, route.port, timeout_s)
        upstream.timeout_s = timeout_s   # the candidate's own, as its route file entry says
        return upstream

    def _serves_metrics(self, scope: Scope) -> bool:
        """Only on the probe port, which is private: the public port answers 404 as for any path."""
        server = scope.get("server")
        return self._metrics is not None and server is not None and server[1] == self._probe_port

    async def _metrics_route(self, request: Request, send: Send, started: float) -> None:
        request.routed = True
        if request.method not in ("GET", "HEAD"):
            await self._error(send, request, 405, METHOD_NOT_ALLOWED, started, [(b"allow", b"GET, HEAD")])
            return
        assert self._metrics is not None
        route = self._router.route if self._router is not None else None
        text = self._metrics.render(route.candidate if route is not None else None)
        await self._respond(send, request, 200, text, [(b"content-type", CONTENT_TYPE)], started)

    async def _swagger_route(self, request: Request, send: Send, started: float) -> None:
        if not await self._wait_ready():
            await self._error(send, request, 503, "Not ready: init() has not finished", started)
            return
        assert self._swagger is not None
        version = None
        if request.query:
            version = parse_qs(request.query.decode("latin-1")).get("version", [None])[0]
        try:
            document = self._swagger.get(version)
        except SwaggerNotFound as exc:
            await self._error(send, request, 404, str(exc), started)
            return
        await self._respond(send, request, 200, document, [_JSON], started)

    async def _wait_ready(self) -> bool:
        if self._ready.is_set():
            return True
        try:
            await asyncio.wait_for(self._ready.wait(), self._scorer.timeout_ms / 1000)
        except TimeoutError:
            return False
        return True

    async def _score(self, request: Request, receive: Receive, send: Send, started: float) -> None:
        method = request.method
        script = self._script
        if script.raw:
            await self._score_raw(request, receive, send, started)
            return
        if method == "OPTIONS":
            await self._respond(send, request, 200, b"", [_HTML], started)
            return
        if method == "HEAD":
            await self._error(send, request, 405, "Method not allowed", started)
            return
        if request.content_length is not None and request.content_length > self._max_body:
            await self._too_large(send, request, started)
            return
        body = await self._body(receive) if method == "POST" else b""
        if body is None:
            await self._too_large(send, request, started)
            return
        if not await self._wait_ready():
            await self._error(send, request, 503, "Not ready: init() has not finished", started)
            return
        try:
            kwargs = arguments_for(script, method, request.query, request.content_type, body)
        except InputError as exc:
            await self._error(send, request, exc.status, exc.message, started)
            return
        await self._call_run(request, send, kwargs, started)

    async def _score_raw(self, request: Request, receive: Receive, send: Send, started: float) -> None:
        """``@rawhttp``: every method /score allows reaches ``run()`` as a werkzeug request."""
        if request.content_length is not None and request.content_length > self._max_body:
            await self._too_large(send, request, started)
            return
        body = await self._body(receive)
        if body is None:
            await self._too_large(send, request, started)
            return
        if not await self._wait_ready():
            await self._error(send, request, 503, "Not ready: init() has not finished", started)
            return
        from .rawhttp import make_request  # werkzeug: only in processes serving raw scripts

        kwargs = {self._script.input_names[0]: make_request(request.scope, body)}
        await self._call_run(request, send, kwargs, started)

    async def _call_run(self, request: Request, send: Send, kwargs: dict[str, Any], started: float) -> None:
        if self._script.wants_headers:
            kwargs["request_headers"] = request.headers_for_run(self._keys.enabled)
        try:
            outcome = await self._scorer.score(kwargs)
        except Busy:
            await self._error(
                send,
                request,
                503,
                "Server busy: too many requests queued, retry later",
                started,
                [(b"retry-after", b"1")],
            )
            return
        except ScoringTimeout:
            log.error("run() timed out after %d ms (request_id=%s)", self._scorer.timeout_ms, request.request_id)
            await self._error(
                send,
                request,
                504,
                f"Scoring timeout after {self._scorer.timeout_ms} ms",
                started,
                [_FAILED],
            )
            return
        await self._send_outcome(send, request, outcome, started)

    async def _send_outcome(self, send: Send, request: Request, outcome: Outcome, started: float) -> None:
        timing = (b"x-ms-run-fn-exec-ms", f"{outcome.run_ms:.3f}".encode())
        if outcome.failure is not None:
            log.error("run() raised (request_id=%s)", request.request_id, exc_info=outcome.failure)
            await self._error(
                send,
                request,
                500,
                RUN_FAILED,
                started,
                [_FAILED, timing],
            )
            return
        headers = list(outcome.headers)
        if outcome.status >= 500:  # kept as the response says (AMLResponse sets it), but True on 5xx
            headers = [h for h in headers if h[0] != _RUN_FAILED_HEADER]
            headers.append(_FAILED)
        headers.append(timing)
        await self._respond(send, request, outcome.status, outcome.body, headers, started)

    async def _too_large(self, send: Send, request: Request, started: float) -> None:
        await self._error(
            send,
            request,
            413,
            f"Request body is larger than the limit of {self._max_body} bytes",
            started,
            [_CLOSE],
        )
