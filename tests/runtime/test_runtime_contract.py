"""The HTTP contract of the runtime, against a real server process on 127.0.0.1."""

from __future__ import annotations

import json
import re
import threading
import time
import uuid

import pytest

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
JSON = {"Content-Type": "application/json"}
RUN_FAILED = "An unexpected error occurred in scoring script. Check the logs for more info."


@pytest.fixture
def echo(runtime):
    return runtime("echo.py")


def test_liveness_is_healthy_as_html_like_azure(echo):
    reply = echo.request("GET", "/")
    assert (reply.status, reply.text) == (200, "Healthy")
    assert reply.headers["content-type"] == "text/html; charset=utf-8"
    assert "x-ms-run-function-failed" not in reply.headers


def test_head_on_liveness_has_no_body(echo):
    reply = echo.request("HEAD", "/")
    assert reply.status == 200
    assert reply.body == b""


def test_post_score_gets_raw_body_and_json_encodes_the_result(echo):
    reply = echo.request("POST", "/score", '{"x": [1, 2]}', JSON)
    assert reply.status == 200
    assert reply.headers["content-type"] == "application/json"
    assert reply.json() == {"raw": '{"x": [1, 2]}', "key_visible": False}
    assert UUID.match(reply.headers["x-request-id"])
    assert float(reply.headers["x-ms-run-fn-exec-ms"]) >= 0
    assert reply.headers["x-ms-run-function-failed"] == "False"


def test_post_without_content_type_is_accepted(echo):
    reply = echo.request("POST", "/score", '{"a": 1}')
    assert reply.status == 200
    assert reply.json()["raw"] == '{"a": 1}'


def test_get_score_passes_query_parameters_as_json_string(echo):
    reply = echo.request("GET", "/score?a=1&b=x&b=2&c=%5B1%2C2%5D&d=null")
    assert reply.status == 200
    assert json.loads(reply.json()["raw"]) == {"a": 1, "b": ["x", 2], "c": [1, 2], "d": None}


def test_request_id_is_echoed(echo):
    reply = echo.request("POST", "/score", "{}", {"x-request-id": "my-id-42"})
    assert reply.headers["x-request-id"] == "my-id-42"
    assert reply.headers["x-ms-request-id"] == "my-id-42"


def test_too_long_request_id_is_431(echo):
    reply = echo.request("POST", "/score", "{}", {"x-request-id": "x" * 101})
    assert reply.status == 431
    assert reply.json() == {"message": "x-request-id must not exceed 100 characters"}


def test_unknown_route_is_404_json(echo):
    reply = echo.request("GET", "/nope")
    assert reply.status == 404
    assert "was not found on the server" in reply.json()["message"]


def test_wrong_method_is_405_json_with_allow(echo):
    reply = echo.request("PUT", "/score", "{}")
    assert reply.status == 405
    assert reply.json() == {"message": "The method is not allowed for the requested URL."}
    assert reply.headers["allow"] == "GET, OPTIONS, POST"


def test_options_on_score_is_200(echo):
    assert echo.request("OPTIONS", "/score").status == 200


def test_invalid_utf8_body_is_400(echo):
    reply = echo.request("POST", "/score", b"\xff\xfe", JSON)
    assert reply.status == 400
    assert reply.json()["message"].startswith("Input cannot be decoded as UTF-8")


@pytest.mark.parametrize(
    ("query", "marker"),
    [
        ("", '"swagger": "2.0"'),
        ("?version=2", '"swagger": "2.0"'),
        ("?version=3", '"openapi": "3.0.3"'),
        ("?version=3.1", '"openapi": "3.1.0"'),
    ],
)
def test_swagger_versions(echo, query, marker):
    reply = echo.request("GET", f"/swagger.json{query}")
    assert reply.status == 200
    assert marker in reply.text
    assert reply.json()["paths"]["/score"]["post"]["operationId"] == "RunMLService"


def test_unknown_swagger_version_is_404(echo):
    reply = echo.request("GET", "/swagger.json?version=9")
    assert reply.status == 404
    assert reply.json() == {"message": "Swagger version [9] is not valid. Supported versions: [2, 3, 3.1]."}


def test_request_headers_parameter(runtime):
    server = runtime("headers.py")
    reply = server.request("POST", "/score", "{}", {"X-Custom": "hello", **JSON})
    assert reply.json() == {
        "data": "{}",
        "custom": "hello",
        "content_type": "application/json",
        "has_authorization": False,
    }


def test_returned_numpy_values_are_encoded(runtime):
    pytest.importorskip("numpy")
    server = runtime("returns.py")
    reply = server.request("POST", "/score", '{"kind": "numpy"}', JSON)
    assert reply.status == 200
    assert reply.json() == {"array": [0.0, 1.5, 3.0], "scalar": 7}


def test_returned_response_object_passes_through(runtime):
    pytest.importorskip("numpy")
    server = runtime("returns.py")
    reply = server.request("POST", "/score", '{"kind": "response"}', JSON)
    assert (reply.status, reply.body) == (201, b"created")
    assert reply.headers["x-from-script"] == "yes"
    assert reply.headers["content-type"] == "text/plain"


def test_model_dir_flag_reaches_the_script(runtime, tmp_path):
    (tmp_path / "model.pkl").write_bytes(b"weights")
    server = runtime("model_dir.py", "--model-dir", str(tmp_path))
    assert server.request("POST", "/score", "{}").json() == {"model_dir": str(tmp_path), "files": ["model.pkl"]}


class TestSchemaDecorated:
    """run() decorated with inference_schema: the JSON body is mapped onto its parameters."""

    @pytest.fixture
    def server(self, runtime):
        pytest.importorskip("inference_schema", reason="inference-schema is not installed")
        return runtime("schema.py")

    def test_body_is_mapped_to_parameters(self, server):
        reply = server.request("POST", "/score", '{"data": [[1, 2]], "scale": 3}', JSON)
        assert (reply.status, reply.json()) == (200, [[3, 6]])

    def test_default_parameter_is_used(self, server):
        assert server.request("POST", "/score", '{"data": [[1, 2]]}', JSON).json() == [[1.0, 2.0]]

    def test_no_content_type_is_taken_as_json(self, server):
        assert server.request("POST", "/score", '{"data": [[2, 2]]}').json() == [[2.0, 2.0]]

    def test_get_with_query_parameters(self, server):
        reply = server.request("GET", "/score?data=%5B%5B1%2C2%5D%5D&scale=2")
        assert (reply.status, reply.json()) == (200, [[2, 4]])

    @pytest.mark.parametrize(
        ("body", "message"),
        [
            ('{"scale": 2}', "A value is not provided for the 'data' parameter."),
            ("[1, 2]", "POST body should be a JSON dictionary."),
            ("", "POST body is empty. Expecting a JSON dictionary."),
        ],
    )
    def test_bad_bodies_are_400(self, server, body, message):
        reply = server.request("POST", "/score", body, JSON)
        assert (reply.status, reply.json()) == (400, {"message": message})

    def test_invalid_json_is_400(self, server):
        reply = server.request("POST", "/score", "{nope", JSON)
        assert reply.status == 400
        assert reply.json()["message"].startswith("POST body could not be decoded as JSON:")

    def test_other_content_type_is_415(self, server):
        reply = server.request("POST", "/score", '{"data": [[1]]}', {"Content-Type": "text/plain"})
        assert (reply.status, reply.json()) == (415, {"message": "Expects Content-Type to be application/json"})

    def test_swagger_carries_the_schemas(self, server):
        document = server.request("GET", "/swagger.json?version=3").json()
        schema = document["components"]["schemas"]["ServiceInput"]
        assert set(schema["properties"]) == {"data", "scale"}


class TestAuth:
    """Keys come from the environment; /score and /swagger.json need Bearer <key>."""

    @pytest.fixture
    def server(self, runtime):
        return runtime("headers.py", env={"MLOPS_PRIMARY_KEY": "primary-k3y", "MLOPS_SECONDARY_KEY": "second-k3y"})

    @pytest.mark.parametrize(
        "headers",
        [
            {},
            {"Authorization": "Bearer wrong"},
            {"Authorization": "primary-k3y"},
            {"Authorization": "Basic primary-k3y"},
        ],
    )
    def test_missing_or_wrong_key_is_401(self, server, headers):
        reply = server.request("POST", "/score", "{}", headers)
        assert reply.status == 401
        assert set(reply.json()) == {"message"}
        assert "k3y" not in reply.text
        assert reply.headers["www-authenticate"] == "Bearer"

    @pytest.mark.parametrize("key", ["primary-k3y", "second-k3y"])
    def test_primary_and_secondary_keys_work(self, server, key):
        reply = server.request("POST", "/score", "{}", {"Authorization": f"Bearer {key}"})
        assert reply.status == 200
        assert reply.json()["has_authorization"] is False  # the key is not handed to run()

    def test_the_key_passes_in_x_mlops_authorization_when_a_proxy_dropped_authorization(self, server):
        # A Kubernetes API server's service proxy removes Authorization; mlops sends the key in both.
        reply = server.request("POST", "/score", "{}", {"X-Mlops-Authorization": "Bearer primary-k3y"})
        assert reply.status == 200 and reply.json()["has_authorization"] is False
        assert server.request("POST", "/score", "{}", {"X-Mlops-Authorization": "Bearer wrong"}).status == 401

    def test_probes_stay_open(self, server):
        assert server.request("GET", "/").status == 200
        assert server.request("GET", "/ready").status == 200

    def test_swagger_needs_a_key(self, server):
        assert server.request("GET", "/swagger.json").status == 401
        assert server.request("GET", "/swagger.json", headers={"Authorization": "Bearer second-k3y"}).status == 200

    def test_keys_are_not_logged(self, server):
        server.request("POST", "/score", "{}", {"Authorization": "Bearer primary-k3y"})
        server.request("POST", "/score", "{}", {"Authorization": "Bearer wrong"})
        assert server.stop() == 0
        assert "k3y" not in server.log.text

    def test_script_cannot_read_the_keys(self, runtime):
        server = runtime("echo.py", env={"MLOPS_PRIMARY_KEY": "primary-k3y"})
        reply = server.request("POST", "/score", "{}", {"Authorization": "Bearer primary-k3y"})
        assert reply.json()["key_visible"] is False


def test_body_over_the_limit_is_413(runtime):
    server = runtime("echo.py", env={"MLOPS_MAX_BODY_BYTES": "1000"})
    assert server.request("POST", "/score", "x" * 1000).status == 200
    reply = server.request("POST", "/score", "x" * 1001)
    assert reply.status == 413
    assert "1000 bytes" in reply.json()["message"]


def test_chunked_body_over_the_limit_is_413(runtime):
    server = runtime("echo.py", env={"MLOPS_MAX_BODY_BYTES": "1000"})
    reply = server.request("POST", "/score", "x" * 5000, chunked=True)
    assert reply.status == 413
    assert server.request("POST", "/score", "{}").status == 200


def test_exception_in_run_is_500_without_details_and_server_survives(runtime):
    server = runtime("failing_run.py")
    reply = server.request("POST", "/score", '{"boom": true}', {"x-request-id": "req-boom", **JSON})
    assert reply.status == 500
    assert reply.json() == {"message": RUN_FAILED}
    assert "secret-detail" not in reply.text and "Traceback" not in reply.text
    assert reply.headers["x-ms-run-function-failed"] == "True"
    assert server.request("POST", "/score", "{}", JSON).json() == "ok"
    assert server.log.wait_for("secret-detail-from-run", timeout=5)
    assert server.log.wait_for(r"run\(\) raised \(request_id=req-boom\)", timeout=5)
    assert "Traceback" in server.log.text


def test_scoring_timeout_is_504_and_worker_keeps_serving(runtime):
    server = runtime("slow.py", env={"SCORING_TIMEOUT_MS": "500"})
    started = time.monotonic()
    reply = server.request("POST", "/score", '{"sleep": 0.7}')
    assert time.monotonic() - started < 0.7
    assert (reply.status, reply.json()) == (504, {"message": "Scoring timeout after 500 ms"})
    assert server.request("POST", "/score", '{"sleep": 0}').status == 200
    assert "replacing" not in server.log.text


def test_liveness_answers_while_run_is_busy(runtime):
    server = runtime("slow.py")
    slow = threading.Thread(target=server.request, args=("POST", "/score", '{"sleep": 1.0}'))
    slow.start()
    time.sleep(0.2)
    started = time.monotonic()
    assert server.request("GET", "/").status == 200
    assert time.monotonic() - started < 0.5
    slow.join()


def test_full_queue_is_503(runtime):
    server = runtime("slow.py", env={"MLOPS_MAX_CONCURRENT_REQUESTS": "1", "MLOPS_MAX_QUEUED_REQUESTS": "0"})
    replies = []
    slow = threading.Thread(target=lambda: replies.append(server.request("POST", "/score", '{"sleep": 1.0}')))
    slow.start()
    time.sleep(0.3)
    busy = server.request("POST", "/score", '{"sleep": 0}')
    slow.join()
    assert busy.status == 503
    assert busy.headers["retry-after"] == "1"
    assert replies[0].status == 200


def test_concurrent_requests_use_the_thread_pool(runtime):
    server = runtime("slow.py", env={"MLOPS_MAX_CONCURRENT_REQUESTS": "4"})
    replies = []
    threads = [
        threading.Thread(target=lambda: replies.append(server.request("POST", "/score", '{"sleep": 0.5}')))
        for _ in range(4)
    ]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [r.status for r in replies] == [200] * 4
    assert time.monotonic() - started < 1.5


def test_one_access_line_per_request_and_no_bodies(echo):
    marker = uuid.uuid4().hex
    echo.request("POST", "/score", json.dumps({"secret": marker}), {"x-request-id": "one-line"})
    assert echo.stop() == 0
    lines = [line for line in echo.log.lines if "request_id=one-line" in line]
    assert len(lines) == 1
    assert "method=POST path=/score status=200" in lines[0]
    assert marker not in echo.log.text


def _in_background(server, body: str) -> tuple[threading.Thread, list]:
    replies: list = []
    thread = threading.Thread(target=lambda: replies.append(server.request("POST", "/score", body, timeout=60)))
    thread.start()
    return thread, replies


def test_a_hanging_run_does_not_hold_up_a_concurrent_request(runtime):
    """Issue 22.5: with the default settings (one run() at a time, 60 s scoring timeout), a request
    behind a hung run() on the same worker waited for the timeout. Now the hung call gives up its
    slot after the stall threshold and the next request runs on another thread."""
    server = runtime("slow.py")
    hung, hung_replies = _in_background(server, '{"sleep": 6}')
    time.sleep(1.0)  # let the hung call start first
    reply = server.request("POST", "/score", '{"sleep": 0}', timeout=60)
    still_hung = hung.is_alive()
    hung.join()
    assert reply.status == 200
    assert still_hung, "the second request was answered only after the hung run() returned"
    assert server.log.wait_for("the next request starts on another thread", timeout=5)
    assert hung_replies[0].status == 200


def test_stalls_add_at_most_max_concurrent_threads(runtime):
    server = runtime("slow.py", env={"MLOPS_STALL_MS": "200"})
    calls = [_in_background(server, '{"sleep": 1.5}') for _ in range(3)]
    for thread, _ in calls:
        thread.join()
    replies = [replies[0] for _, replies in calls]
    assert [r.status for r in replies] == [200] * 3
    assert max(r.json()["most_at_once"] for r in replies) == 2  # the one slot plus one extra thread


def test_stall_threshold_zero_keeps_one_run_at_a_time(runtime):
    server = runtime("slow.py", env={"MLOPS_STALL_MS": "0"})
    calls = [_in_background(server, '{"sleep": 1.5}') for _ in range(3)]
    for thread, _ in calls:
        thread.join()
    replies = [replies[0] for _, replies in calls]
    assert [r.status for r in replies] == [200] * 3
    assert max(r.json()["most_at_once"] for r in replies) == 1
