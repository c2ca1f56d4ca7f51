"""An unreachable, refusing or nonsensical registry: one line naming it, never a traceback, never a secret.

The refusing and the garbage registries are small HTTP servers on 127.0.0.1 started by the test.
"""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from support import make_project, run_cli

PASSWORD = "s3cr3t-pa55word-never-shown"
MANIFEST = """\
version: 1
project: failing
registry: {{url: "oci://{host}/team/models", settle_seconds: 1}}
models:
  m: {{path: model.txt}}
environments:
  e: {{python: "3.11"}}
services:
  echo-api: {{models: [m], environment: e, source_dir: src, entry_script: score.py}}
"""


class _Server:
    def __init__(self, handler: type[BaseHTTPRequestHandler]):
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        return f"127.0.0.1:{self.httpd.server_address[1]}"

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class Refusing(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        self.send_response(401)
        self.send_header("WWW-Authenticate", 'Basic realm="registry"')
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_HEAD = do_GET

    def log_message(self, *args):
        pass


class Garbage(BaseHTTPRequestHandler):
    body = b"<html>\x00\xff not a registry {"

    def do_GET(self):  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    do_HEAD = do_GET

    def log_message(self, *args):
        pass


class JsonGarbage(Garbage):
    body = b'{"tags": [1, {"x": null}]}'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_one_line(result, *needles: str) -> None:
    assert result.code == 1
    text = result.out + result.err
    assert "Traceback" not in text and PASSWORD not in text
    lines = [ln for ln in result.err.splitlines() if ln.strip()]
    assert len(lines) == 1, result.err
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.mark.parametrize("command", [["plan"], ["models"], ["apply", "--auto-approve"]])
def test_unreachable_registry_is_one_line_naming_it(command, tmp_path, monkeypatch):
    monkeypatch.setenv("MLOPS_REGISTRY_USERNAME", "ci")
    monkeypatch.setenv("MLOPS_REGISTRY_PASSWORD", PASSWORD)
    host = f"127.0.0.1:{free_port()}"
    manifest = make_project(tmp_path, MANIFEST.format(host=host))
    check_one_line(run_cli(*command, "-f", str(manifest)), f"oci://{host}/team/models", "unreachable",
                   "registry.url")


@pytest.mark.parametrize("with_credentials", [True, False])
def test_refusing_registry_says_which_credentials(with_credentials, tmp_path, monkeypatch):
    if with_credentials:
        monkeypatch.setenv("MLOPS_REGISTRY_USERNAME", "ci")
        monkeypatch.setenv("MLOPS_REGISTRY_PASSWORD", PASSWORD)
    else:
        monkeypatch.delenv("MLOPS_REGISTRY_USERNAME", raising=False)
        monkeypatch.delenv("MLOPS_REGISTRY_PASSWORD", raising=False)
    with _Server(Refusing) as host:
        manifest = make_project(tmp_path, MANIFEST.format(host=host))
        result = run_cli("plan", "-f", str(manifest))
    check_one_line(result, f"oci://{host}/team/models", "refused access (HTTP 401)", "MLOPS_REGISTRY_")
    assert ("were refused" in result.err) == with_credentials


@pytest.mark.parametrize("handler", [Garbage, JsonGarbage])
def test_garbage_answers_are_one_line(handler, tmp_path):
    with _Server(handler) as host:
        manifest = make_project(tmp_path, MANIFEST.format(host=host))
        for command in (["plan"], ["models", "--json"]):
            check_one_line(run_cli(*command, "-f", str(manifest)), f"oci://{host}/team/models", "not a registry")


def test_a_malformed_url_is_a_located_manifest_error(tmp_path):
    manifest = make_project(tmp_path, MANIFEST.format(host="127.0.0.1:5000").replace("oci://127.0.0.1:5000/team/models",
                                                                                      "oci://Bad Host/x"))
    result = run_cli("plan", "-f", str(manifest))
    assert result.code == 1 and "Traceback" not in result.err
    assert "registry.url" in result.err
