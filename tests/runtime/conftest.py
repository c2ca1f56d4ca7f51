"""Fixtures for the scoring runtime: real server processes on 127.0.0.1, talked to over real HTTP.

``runtime`` starts ``python -m providers.runtime`` (this interpreter, so uvicorn & co. must be in
the dev install) on a port the kernel picks (``--port 0``), reads the address from its log, and
stops it at the end of the test. ``azureml_server`` does the same with Azure's
``azureml-inference-server-http`` from a cached virtualenv, for the compatibility tests.
"""

from __future__ import annotations

import http.client
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import venv
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = Path(__file__).resolve().parent / "scripts"
LISTENING = re.compile(r"listening on http://(\S+):(\d+)")
AZUREML_PACKAGE = "azureml-inference-server-http"
AZUREML_VENV = Path(
    os.environ.get("MLOPS_AZUREML_VENV")
    or Path(os.environ.get("MLOPS_TEST_CACHE") or Path.home() / ".cache" / "mlops" / "venvs")
    / "azureml-inference-server-http"
)
"""Where the compatibility tests keep Azure's server: ``MLOPS_AZUREML_VENV``, else inside the
test cache (``MLOPS_TEST_CACHE``, as CI sets it), else ``~/.cache/mlops/venvs``."""


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes
    all_headers: list[tuple[str, str]] = field(default_factory=list)
    """Every header line in order (``headers`` keeps the last of repeated names)."""

    def header_values(self, name: str) -> list[str]:
        return [v for k, v in self.all_headers if k == name.lower()]

    @property
    def text(self) -> str:
        return self.body.decode()

    def json(self) -> object:
        import json

        return json.loads(self.body)


def http_request(
    port: int,
    method: str,
    path: str,
    body: bytes | str | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 30,
    chunked: bool = False,
) -> Reply:
    """One request on a fresh connection; no header is added beyond Host/Accept-Encoding/length."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        data = body.encode() if isinstance(body, str) else body
        if chunked and data is not None:
            conn.request(method, path, body=iter([data]), headers=headers or {}, encode_chunked=True)
        else:
            conn.request(method, path, body=data, headers=headers or {})
        response = conn.getresponse()
        lines = [(k.lower(), v) for k, v in response.getheaders()]
        return Reply(response.status, dict(lines), response.read(), lines)
    finally:
        conn.close()


class LogReader:
    """Collects a process's stderr lines in a thread, so the pipe never fills up."""

    def __init__(self, stream) -> None:
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def _pump(self, stream) -> None:
        for raw in stream:
            with self._changed:
                self.lines.append(raw.decode(errors="replace").rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self.lines.append("")  # end marker: the stream closed
            self._changed.notify_all()

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, pattern: re.Pattern[str] | str, timeout: float) -> re.Match[str] | None:
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in self.lines:
                    found = regex.search(line)
                    if found:
                        return found
                left = deadline - time.monotonic()
                if left <= 0 or (self.lines and self.lines[-1] == "" and not self._thread.is_alive()):
                    return None
                self._changed.wait(min(left, 0.2))

    def join(self, timeout: float = 5) -> None:
        self._thread.join(timeout)


class Server:
    """A running server process with its port and log."""

    def __init__(self, process: subprocess.Popen, log: LogReader, port: int) -> None:
        self.process = process
        self.log = log
        self.port = port

    def request(self, method: str, path: str, body=None, headers=None, port: int | None = None, **kwargs) -> Reply:
        return http_request(port or self.port, method, path, body, headers, **kwargs)

    def wait_ready(self, path: str = "/ready", timeout: float = 30, port: int | None = None) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"server exited with {self.process.returncode}:\n{self.log.text}")
            try:
                if self.request("GET", path, timeout=2, port=port).status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"server not ready after {timeout}s:\n{self.log.text}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        code = self.process.wait(timeout)
        self.log.join()
        return code


@pytest.fixture
def unused_port() -> int:
    return free_port()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_runtime(
    script: str | Path,
    *args: str,
    env: dict[str, str] | None = None,
    wait_ready: bool = True,
    cwd: Path | None = None,
    python: str = sys.executable,
    module: str = "providers.runtime",
) -> Server:
    """Start the runtime on a kernel-chosen port; returns once it listens (and is ready)."""
    script_path = Path(script) if Path(script).is_absolute() else SCRIPTS / script
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("MLOPS_", "AZUREML_", "AML_"))}
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), environment.get("PYTHONPATH")]))
    environment.update(env or {})
    process = subprocess.Popen(
        [python, "-m", module, "--entry-script", str(script_path), "--port", "0", *args],
        cwd=cwd or REPO,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    log = LogReader(process.stdout)
    found = log.wait_for(LISTENING, timeout=30)
    if found is None:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.join()
        raise AssertionError(f"runtime did not start (exit {process.returncode}):\n{log.text}")
    server = Server(process, log, int(found.group(2)))
    if wait_ready:
        server.wait_ready()
    return server


@pytest.fixture
def runtime() -> Iterator[Callable[..., Server]]:
    """Factory: ``runtime("echo.py", env={...})``; every server started is stopped afterwards."""
    started: list[Server] = []

    def start(script: str | Path, *args: str, **kwargs) -> Server:
        server = start_runtime(script, *args, **kwargs)
        started.append(server)
        return server

    yield start
    for server in started:
        _stop(server)


def _stop(server: Server) -> None:
    """SIGTERM (the supervisor stops its workers), SIGKILL only if that hangs."""
    if server.process.poll() is None:
        server.process.terminate()
        try:
            server.process.wait(15)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()


def _venv_python(root: Path) -> Path:
    return root / ("Scripts" if os.name == "nt" else "bin") / "python"


@pytest.fixture(scope="session")
def azureml_python() -> Path:
    """A Python with azureml-inference-server-http (and inference-schema) installed, cached."""
    python = _venv_python(AZUREML_VENV)
    marker = AZUREML_VENV / ".mlops-ready"
    if marker.exists() and python.exists():
        return python
    AZUREML_VENV.parent.mkdir(parents=True, exist_ok=True)
    venv.EnvBuilder(with_pip=True, clear=True).create(AZUREML_VENV)
    result = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", AZUREML_PACKAGE, "numpy"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["(no output)"]
        pytest.skip(f"pip could not install {AZUREML_PACKAGE}: {tail[0]}")
    marker.write_text("ok\n")
    return python


def start_azureml(python: Path, script: str | Path, env: dict[str, str] | None = None) -> Server:
    """Start Azure's server (``azmlinfsrv``) on a free port and wait until it answers ``GET /``
    (it calls init() before serving, so that is its readiness)."""
    script_path = Path(script) if Path(script).is_absolute() else SCRIPTS / script
    port = free_port()
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("MLOPS_", "AZUREML_", "AML_"))}
    environment.update(env or {})
    process = subprocess.Popen(
        [str(python.parent / "azmlinfsrv"), "--entry_script", str(script_path), "--port", str(port)],
        cwd=str(SCRIPTS),
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    server = Server(process, LogReader(process.stdout), port)
    server.wait_ready("/", timeout=60)
    return server


@pytest.fixture
def azureml_server(azureml_python: Path) -> Iterator[Callable[..., Server]]:
    """Factory like ``runtime`` for Azure's server."""
    started: list[Server] = []

    def start(script: str | Path, env: dict[str, str] | None = None) -> Server:
        server = start_azureml(azureml_python, script, env)
        started.append(server)
        return server

    yield start
    for server in started:
        _stop(server)


@pytest.fixture(scope="module")
def server_pair(azureml_python: Path) -> Iterator[Callable[..., tuple[Server, Server]]]:
    """Factory: ``server_pair("echo.py", env)`` -> (this runtime, Azure's server) on the same
    script and environment, started once per module and script."""
    pairs: dict[tuple[str, tuple[tuple[str, str], ...]], tuple[Server, Server]] = {}

    def start(script: str, env: dict[str, str] | None = None) -> tuple[Server, Server]:
        key = (script, tuple(sorted((env or {}).items())))
        if key not in pairs:
            pairs[key] = (start_runtime(script, env=env), start_azureml(azureml_python, script, env))
        return pairs[key]

    yield start
    for pair in pairs.values():
        for server in pair:
            _stop(server)
