"""A PEP 503 "simple" package index on 127.0.0.1 that lists file names only (no files to download).

What it emulates: ``GET /simple/<normalized-name>/`` answers an HTML page with one anchor per
release file, ``data-requires-python`` (HTML-escaped) and ``data-yanked`` as PyPI sends them; an
unknown project answers 404; with ``credentials`` every request needs that HTTP Basic login (a
private index such as Azure Artifacts). The catalogue holds real releases with the Python tags
and Requires-Python their wheels carry, trimmed to a few per project; the platform tag is a
manylinux one for this machine's CPU, so the wheels are ones pip would take here.
"""

from __future__ import annotations

import base64
import html
import platform
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOST = "127.0.0.1"
ARCH = platform.machine()
LINUX = f"manylinux_2_17_{ARCH}.manylinux2014_{ARCH}"


def _cp(project: str, version: str, pythons: Sequence[str], plat: str = LINUX) -> list[str]:
    return [f"{project}-{version}-cp{p}-cp{p}{'m' if p in ('35', '36', '37') else ''}-{plat}.whl" for p in pythons]


File = tuple[str, str | None]  # (file name, Requires-Python)

CATALOGUE: dict[str, list[File]] = {
    "scikit-learn": [
        *((f, ">=3.5") for f in _cp("scikit_learn", "0.22", ["35", "36", "37", "38"])),
        ("scikit-learn-0.22.tar.gz", ">=3.5"),
        *((f, ">=3.6") for f in _cp("scikit_learn", "0.24.2", ["36", "37", "38", "39"])),
        *((f, ">=3.7") for f in _cp("scikit_learn", "1.0.2", ["37", "38", "39", "310"])),
        *((f, ">=3.8") for f in _cp("scikit_learn", "1.1.3", ["38", "39", "310", "311"])),
        *((f, ">=3.9") for f in _cp("scikit_learn", "1.5.2", ["39", "310", "311", "312", "313"])),
    ],
    "numpy": [
        *((f, ">=3.5") for f in _cp("numpy", "1.17.3", ["35", "36", "37", "38"])),
        ("numpy-1.17.3.zip", ">=3.5"),
        *((f, ">=3.7,<3.11") for f in _cp("numpy", "1.21.6", ["37", "38", "39", "310"])),
        *((f, ">=3.8") for f in _cp("numpy", "1.23.2", ["38", "39", "310", "311"])),
        *((f, ">=3.9") for f in _cp("numpy", "1.26.4", ["39", "310", "311", "312"])),
    ],
    "scipy": [
        *((f, ">=3.5") for f in _cp("scipy", "1.3.1", ["35", "36", "37"])),
        ("scipy-1.3.1.tar.gz", ">=3.5"),
        *((f, ">=3.8") for f in _cp("scipy", "1.9.3", ["38", "39", "310", "311"])),
        *((f, ">=3.9") for f in _cp("scipy", "1.13.1", ["39", "310", "311", "312"])),
    ],
    "pandas": [
        *((f, ">=3.5.3") for f in _cp("pandas", "0.25.3", ["35", "36", "37", "38"])),
        ("pandas-0.25.3.tar.gz", ">=3.5.3"),
        *((f, ">=3.8") for f in _cp("pandas", "1.5.3", ["38", "39", "310", "311"])),
        *((f, ">=3.9") for f in _cp("pandas", "2.2.3", ["39", "310", "311", "312", "313"])),
    ],
    "joblib": [("joblib-0.14.0-py2.py3-none-any.whl", None), ("joblib-1.4.2-py3-none-any.whl", ">=3.8")],
    "azureml-sdk": [("azureml_sdk-1.0.74-py3-none-any.whl", None), ("azureml_sdk-1.57.0-py3-none-any.whl", None)],
    "azureml-model-management-sdk": [("azureml_model_management_sdk-1.0.1b6.post1-py2.py3-none-any.whl", None)],
    "inference-schema": [("inference_schema-1.7.2-py3-none-any.whl", None)],
    "nltk": [("nltk-3.9.1-py3-none-any.whl", ">=3.8")],
    "onnxruntime": [
        (f"onnxruntime-1.19.2-cp311-cp311-manylinux_2_27_{ARCH}.manylinux_2_28_{ARCH}.whl", None),
        (f"onnxruntime-1.19.2-cp312-cp312-manylinux_2_27_{ARCH}.manylinux_2_28_{ARCH}.whl", None),
    ],
}


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass
class Index:
    url: str
    requests: list[str]


def _page(files: Sequence[File], yanked: set[str]) -> bytes:
    rows = []
    for name, requires in files:
        attrs = f' data-requires-python="{html.escape(requires)}"' if requires else ""
        attrs += ' data-yanked=""' if name in yanked else ""
        rows.append(f'<a href="../../packages/{name}#sha256={"0" * 64}"{attrs}>{html.escape(name)}</a><br/>')
    return ("<!DOCTYPE html>\n<html><body>\n" + "\n".join(rows) + "\n</body></html>\n").encode()


@contextmanager
def serve(
    catalogue: Mapping[str, Sequence[File]] = CATALOGUE,
    *,
    credentials: tuple[str, str] | None = None,
    yanked: Sequence[str] = (),
) -> Iterator[Index]:
    """Run the index on 127.0.0.1 (a free port) for the ``with`` block; yields its /simple URL."""
    pages = {_normalized(k): v for k, v in catalogue.items()}
    seen: list[str] = []
    expected = "Basic " + base64.b64encode(":".join(credentials).encode()).decode() if credentials else None

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            seen.append(self.path)
            if expected and self.headers.get("Authorization") != expected:
                self._answer(401, b"login required\n", {"WWW-Authenticate": 'Basic realm="index"'})
                return
            match = re.fullmatch(r"/simple/([^/]+)/", self.path)
            files = pages.get(match.group(1)) if match else None
            if files is None:
                self._answer(404, b"not found\n")
                return
            self._answer(200, _page(files, set(yanked)), {"Content-Type": "text/html; charset=utf-8"})

        def _answer(self, status: int, body: bytes, headers: Mapping[str, str] | None = None) -> None:
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer((HOST, 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield Index(f"http://{HOST}:{server.server_address[1]}/simple", seen)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
