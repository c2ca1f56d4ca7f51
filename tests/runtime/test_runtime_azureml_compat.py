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
