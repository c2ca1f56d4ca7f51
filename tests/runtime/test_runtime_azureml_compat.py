"""The same score.py files under this runtime and under Azure's azureml-inference-server-http
give the same answers (status, body, and the headers clients rely on).

Deliberate differences are pinned in their own tests below, so a change on either side shows.
Needs pip to install azureml-inference-server-http into a cached virtualenv (skipped, with the
reason, where it cannot).
"""

from __future__ import annotations

import json

import pytest

pytestmark = [pytest.mark.azureml, pytest.mark.slow]

JSON = {"Content-Type": "application/json"}


def _body(reply):
    if reply.headers.get("content-type", "").startswith("application/json") and reply.body:
        return json.loads(reply.body)
    return reply.body


def assert_same(pair, method, path, body=None, headers=None):
    ours, theirs = (server.request(method, path, body, headers) for server in pair)
    assert (ours.status, _body(ours)) == (theirs.status, _body(theirs)), (method, path, body, headers)
    if ours.status == 200 and method in ("GET", "POST") and path.startswith("/score"):
        assert ours.headers["content-type"] == theirs.headers["content-type"]
    for name in ("x-request-id", "x-ms-request-id", "x-ms-client-request-id"):
        if headers and name in {k.lower() for k in headers}:
            assert ours.headers.get(name) == theirs.headers.get(name), name
    return ours, theirs


ECHO_CASES = [
    ("POST", "/score", '{"data": [[1, 2]]}', JSON),
    ("POST", "/score", '{"data": [[1, 2]]}', None),
    ("POST", "/score", "not json at all", {"Content-Type": "text/plain"}),
    ("POST", "/score", b"\xff\xfe", JSON),
    ("GET", "/score?a=1&b=x&b=2&c=%5B1%2C2%5D&d=null&e=", None, None),
    ("GET", "/", None, None),
    ("OPTIONS", "/score", None, None),
    ("PUT", "/score", "{}", None),
    ("DELETE", "/", None, None),
    ("GET", "/score/", None, None),
    ("GET", "/nothing-here", None, None),
    ("GET", "/swagger.json", None, None),
    ("GET", "/swagger.json?version=2", None, None),
    ("GET", "/swagger.json?version=3", None, None),
    ("GET", "/swagger.json?version=3.1", None, None),
    ("GET", "/swagger.json?version=9", None, None),
    ("POST", "/score", "{}", {"x-request-id": "client-chosen-id"}),
    ("POST", "/score", "{}", {"x-ms-client-request-id": "client-id", "x-request-id": "rid"}),
    ("POST", "/score", "{}", {"x-request-id": "x" * 101}),
    ("POST", "/score", "{}", {"x-ms-client-request-id": "y" * 101}),
]


@pytest.mark.parametrize(("method", "path", "body", "headers"), ECHO_CASES)
def test_undecorated_run(server_pair, method, path, body, headers):
    assert_same(server_pair("echo.py"), method, path, body, headers)


def test_request_headers_parameter(server_pair):
    assert_same(server_pair("headers.py"), "POST", "/score", '{"a": 1}', {"X-Custom": "v1", **JSON})


SCHEMA_CASES = [
    ("POST", "/score", '{"data": [[1, 2]], "scale": 3}', JSON),
    ("POST", "/score", '{"data": [[1, 2]]}', JSON),
    ("POST", "/score", '{"scale": 3}', JSON),
    ("POST", "/score", "[1, 2]", JSON),
    ("POST", "/score", "", JSON),
    ("POST", "/score", "{not json", JSON),
    ("POST", "/score", '{"data": [[1]]}', {"Content-Type": "text/plain"}),
    ("GET", "/score?data=%5B%5B1%2C2%5D%5D&scale=2", None, None),
    ("GET", "/score?scale=2", None, None),
    ("GET", "/swagger.json", None, None),
    ("GET", "/swagger.json?version=3", None, None),
    ("GET", "/swagger.json?version=3.1", None, None),
]


@pytest.mark.parametrize(("method", "path", "body", "headers"), SCHEMA_CASES)
def test_schema_decorated_run(server_pair, method, path, body, headers):
    pytest.importorskip("inference_schema", reason="inference-schema is not installed in the dev environment")
    assert_same(server_pair("schema.py"), method, path, body, headers)


@pytest.mark.parametrize("body", ['{"boom": true}', '{"boom": false}'])
def test_exception_in_run(server_pair, body):
    assert_same(server_pair("failing_run.py"), "POST", "/score", body, JSON)


def test_difference_no_content_type_on_decorated_run(server_pair):
    """Ours takes a body without Content-Type as JSON; Azure's refuses it (415)."""
    pytest.importorskip("inference_schema", reason="inference-schema is not installed in the dev environment")
    ours, theirs = (s.request("POST", "/score", '{"data": [[1, 2]]}') for s in server_pair("schema.py"))
    assert (ours.status, ours.json()) == (200, [[1.0, 2.0]])
    assert theirs.status == 415


def test_difference_timeout_status(server_pair):
    """Same message; ours answers 504 (a gateway-style timeout), Azure's answers 500."""
    ours, theirs = (
        s.request("POST", "/score", '{"sleep": 1}') for s in server_pair("slow.py", {"SCORING_TIMEOUT_MS": "300"})
    )
    assert ours.json() == theirs.json() == {"message": "Scoring timeout after 300 ms"}
    assert (ours.status, theirs.status) == (504, 500)


# -- @rawhttp scripts and the rest of the response contract --------------------------------------

CONTRACT_HEADERS = ("content-type", "x-ms-run-function-failed")


def assert_same_contract(pair, method, path, body=None, headers=None, extra=()):
    """Status, body, content type and x-ms-run-function-failed (plus ``extra`` headers) agree."""
    ours, theirs = (server.request(method, path, body, headers) for server in pair)
    assert (ours.status, _body(ours)) == (theirs.status, _body(theirs)), (method, path)
    for name in (*CONTRACT_HEADERS, *extra):
        assert ours.header_values(name) == theirs.header_values(name), (name, method, path)
    return ours, theirs


def _multipart(with_file: bool) -> tuple[bytes, dict[str, str]]:
    boundary = "mlops-compat-boundary"
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="note"\r\n\r\nhello\r\n'.encode()]
    if with_file:
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="cat.png"\r\n'
            "Content-Type: image/png\r\n\r\n".encode()
            + bytes(range(256)) * 64
            + b"\r\n"
        )
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), {"Content-Type": f"multipart/form-data; boundary={boundary}"}


RAW_CASES = [
    ("GET", "/score?a=1&a=2&b=x%20y", None, None),
    ("GET", "/score", None, None),
    ("OPTIONS", "/score", None, {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}),
    ("POST", "/score?do=file", *_multipart(True)),
    ("POST", "/score?do=file", *_multipart(False)),
    ("POST", "/score?do=image", b"", None),
    ("POST", "/score?do=reject", b"{}", JSON),
    ("POST", "/score?do=echo", b"\xff\xfe\x00\x80binary\xc3(", {"Content-Type": "application/octet-stream"}),
    ("POST", "/score?do=json", '{"a": [1, 2]}', JSON),
    ("POST", "/score?do=json", '{"a": 1}', {"Content-Type": "text/plain"}),
    ("POST", "/score", "abc", {"Content-Type": "text/plain; charset=utf-8", "X-Custom": "v"}),
    ("POST", "/score?do=fail", b"", None),
    ("POST", "/score?do=server-error", b"", None),
    ("PUT", "/score", b"{}", None),
    ("HEAD", "/score", None, None),
]


@pytest.mark.parametrize(("method", "path", "body", "headers"), RAW_CASES)
def test_rawhttp_run(server_pair, method, path, body, headers):
    extra = ("access-control-allow-origin", "access-control-allow-methods") if method == "OPTIONS" else ()
    assert_same_contract(server_pair("raw_echo.py"), method, path, body, headers, extra)


CONTRACT_CASES = [
    ("GET", "/", None, None),
    ("POST", "/score", b"\xff\xfe", JSON),
    ("GET", "/swagger.json", None, None),
    ("GET", "/swagger.json?version=9", None, None),
    ("GET", "/nothing-here", None, None),
    ("PUT", "/score", "{}", None),
    ("OPTIONS", "/score", None, None),
    ("POST", "/score", "{}", {"x-request-id": "x" * 101}),
]


@pytest.mark.parametrize(("method", "path", "body", "headers"), CONTRACT_CASES)
def test_response_contract_headers(server_pair, method, path, body, headers):
    ours, theirs = assert_same_contract(server_pair("echo.py"), method, path, body, headers)
    # Same answers carry a server version (the value names each server).
    assert ("x-ms-server-version" in ours.headers) == ("x-ms-server-version" in theirs.headers)


CORS_HEADERS = (
    "access-control-allow-origin",
    "access-control-allow-methods",
    "access-control-allow-headers",
    "vary",
)
CORS_CASES = [
    ("POST", "/score", "{}", {"Origin": "https://b.example"}),
    ("POST", "/score", "{}", {"Origin": "https://evil.example"}),
    ("POST", "/score", "{}", None),
    ("GET", "/", None, {"Origin": "https://a.example"}),
    (
        "OPTIONS",
        "/score",
        None,
        {
            "Origin": "https://a.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type, authorization",
        },
    ),
    ("OPTIONS", "/score", None, {"Origin": "https://a.example", "Access-Control-Request-Method": "PUT"}),
    ("GET", "/nothing-here", None, {"Origin": "https://a.example"}),
]


@pytest.mark.parametrize("origins", ["https://a.example, https://b.example", "*"])
@pytest.mark.parametrize(("method", "path", "body", "headers"), CORS_CASES)
def test_cors(server_pair, origins, method, path, body, headers):
    pair = server_pair("echo.py", {"AML_CORS_ORIGINS": origins})
    assert_same_contract(pair, method, path, body, headers, CORS_HEADERS)
