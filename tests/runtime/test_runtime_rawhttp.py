"""``@rawhttp`` entry scripts and Azure's response contract, against a real runtime on 127.0.0.1.

The scripts import ``azureml.contrib.services`` although no azureml package is installed here:
the runtime provides those modules, as Azure's server does.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from providers.runtime.rawhttp import environ

RUN_FAILED = "An unexpected error occurred in scoring script. Check the logs for more info."
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
REPO = Path(__file__).resolve().parents[2]


def multipart(fields: dict[str, str], files: dict[str, tuple[str, bytes]]) -> tuple[bytes, dict[str, str]]:
    """A multipart/form-data body built by hand, so the test does not share the parser under test."""
    boundary = f"mlops-{uuid.uuid4().hex}"
    parts: list[bytes] = []
    for name, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for name, (filename, data) in files.items():
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        )
        parts.append(head.encode() + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), {"Content-Type": f"multipart/form-data; boundary={boundary}"}


@pytest.fixture(scope="module")
def raw():
    from tests.runtime.conftest import _stop, start_runtime

    server = start_runtime("raw_echo.py")
    yield server
    _stop(server)


def test_azureml_imports_need_no_azureml_package():
    assert importlib.util.find_spec("azureml") is None  # the premise: nothing installed provides it
    code = (
        "from providers.runtime import compat; compat.install();"
        "from azureml.contrib.services.aml_request import AMLRequest, rawhttp;"
        "from azureml.contrib.services.aml_response import AMLResponse;"
        "from azureml_inference_server_http.api.aml_request import rawhttp as r2;"
        "import sys; print(rawhttp is r2, 'werkzeug' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.split() == ["True", "True"]


def test_non_raw_scripts_never_load_werkzeug():
    code = (
        "from pathlib import Path; from providers.runtime import script, app, request, cors;"
        "script.load(Path('tests/runtime/scripts/echo.py'), Path('.'));"
        "import sys; print('werkzeug' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.split() == ["False"]


def test_get_reaches_run_with_the_query(raw):
    reply = raw.request("GET", "/score?a=1&a=2&b=x%20y")
    assert reply.status == 200
    assert reply.json() == {
        "full_path": "/score?a=1&a=2&b=x%20y",
        "path": "/score",
        "args": {"a": ["1", "2"], "b": ["x y"]},
    }
    assert reply.headers["x-ms-run-function-failed"] == "False"


def test_get_without_query_has_full_path_with_question_mark(raw):
    assert raw.request("GET", "/score").json()["full_path"] == "/score?"


def test_options_reaches_run_which_answers_the_preflight(raw):
    reply = raw.request("OPTIONS", "/score", headers={"Origin": "https://app.example"})
    assert reply.status == 200
    assert reply.headers["access-control-allow-origin"] == "https://app.example"
    assert reply.header_values("access-control-allow-methods") == ["GET", "POST", "OPTIONS"]  # split as Azure does
    assert reply.headers["x-ms-run-function-failed"] == "False"


def test_multipart_file_and_fields(raw):
    data = bytes(range(256)) * 40
    body, headers = multipart({"note": "hello", "tag": "a"}, {"image": ("cat.png", data)})
    reply = raw.request("POST", "/score?do=file", body, headers)
    assert reply.status == 200, reply.body
    assert reply.json() == {
        "filename": "cat.png",
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "fields": {"note": ["hello"], "tag": ["a"]},
        "files": ["image"],
    }


def test_missing_file_part_is_500_with_azures_message(raw):
    body, headers = multipart({"note": "hello"}, {})
    reply = raw.request("POST", "/score?do=file", body, headers)
    assert (reply.status, reply.json()) == (500, {"message": RUN_FAILED})
    assert reply.headers["x-ms-run-function-failed"] == "True"
    assert raw.log.wait_for("BadRequestKeyError", timeout=10)


def test_binary_response_is_returned_untouched(raw):
    reply = raw.request("POST", "/score?do=image", b"")
    assert (reply.status, reply.headers["content-type"], reply.body) == (200, "image/png", PNG)


def test_custom_status_with_text_body(raw):
    reply = raw.request("POST", "/score?do=reject", b"{}")
    assert (reply.status, reply.text) == (422, "bad input: missing field 'x'")
    assert reply.headers["content-type"] == "text/html; charset=utf-8"
    assert reply.headers["x-ms-run-function-failed"] == "False"


def test_non_utf8_body_reaches_run_untouched(raw):
    body = b"\xff\xfe\x00\x80binary\xc3("
    reply = raw.request("POST", "/score?do=echo", body, {"Content-Type": "application/octet-stream"})
    assert (reply.status, reply.body) == (200, body)


def test_chunked_body_reaches_run(raw):
    reply = raw.request("POST", "/score?do=echo", b"x" * 5000, {"Content-Type": "text/plain"}, chunked=True)
    assert (reply.status, reply.body) == (200, b"x" * 5000)


def test_json_body(raw):
    reply = raw.request("POST", "/score?do=json", '{"a": [1, 2]}', {"Content-Type": "application/json"})
    assert (reply.status, reply.json()) == (200, {"a": [1, 2]})


def test_json_with_wrong_content_type_is_500_as_under_flask(raw):
    reply = raw.request("POST", "/score?do=json", '{"a": 1}', {"Content-Type": "text/plain"})
    assert (reply.status, reply.json()) == (500, {"message": RUN_FAILED})


def test_request_surface(raw):
    reply = raw.request("POST", "/score", "abc", {"Content-Type": "text/plain; charset=utf-8", "X-Custom": "v"})
    assert reply.json() == {
        "method": "POST",
        "content_type": "text/plain; charset=utf-8",
        "mimetype": "text/plain",
        "length": 3,
        "header": "v",
    }


def test_exception_is_500_and_the_server_keeps_serving(raw):
    reply = raw.request("POST", "/score?do=fail", b"")
    assert (reply.status, reply.json()) == (500, {"message": RUN_FAILED})
    assert "boom" not in reply.text
    assert raw.request("GET", "/score?a=1").status == 200


def test_5xx_response_marks_the_run_failed(raw):
    reply = raw.request("POST", "/score?do=server-error", b"")
    assert (reply.status, reply.json()) == (503, {"error": "model unavailable"})
    assert reply.headers["x-ms-run-function-failed"] == "True"


def test_raw_and_schema_decorators_together_are_refused(runtime, tmp_path):
    pytest.importorskip("inference_schema")
    script = tmp_path / "both.py"
    script.write_text(
        "from azureml.contrib.services.aml_request import rawhttp\n"
        "from inference_schema.schema_decorators import input_schema\n"
        "from inference_schema.parameter_types.standard_py_parameter_type import StandardPythonParameterType\n"
        "def init():\n    pass\n"
        "@rawhttp\n@input_schema('data', StandardPythonParameterType([1]))\ndef run(data):\n    return data\n"
    )
    with pytest.raises(AssertionError, match="cannot be decorated with both @rawhttp and @input_schema"):
        runtime(script)


# -- the response contract for every script ---------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body", "headers", "status"),
    [
        ("POST", "/score", b"\xff", None, 400),
        ("GET", "/swagger.json", None, None, 200),
        ("GET", "/swagger.json?version=9", None, None, 404),
        ("GET", "/nothing", None, None, 404),
        ("PUT", "/score", b"{}", None, 405),
        ("OPTIONS", "/score", None, None, 200),
        ("POST", "/score", b"{}", {"x-request-id": "x" * 101}, 431),
        ("POST", "/score", b"{}", None, 200),
    ],
)
def test_every_answer_but_liveness_says_whether_run_failed(runtime, method, path, body, headers, status):
    server = runtime("echo.py")
    reply = server.request(method, path, body, headers)
    assert reply.status == status
    assert reply.headers["x-ms-run-function-failed"] == "False"


def test_cors_from_environment(runtime):
    server = runtime("echo.py", env={"AML_CORS_ORIGINS": "https://a.example, https://b.example"})
    reply = server.request("POST", "/score", "{}", {"Origin": "https://b.example"})
    assert reply.headers["access-control-allow-origin"] == "https://b.example"
    assert reply.headers["vary"] == "Origin"
    denied = server.request("POST", "/score", "{}", {"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in denied.headers
    preflight = server.request(
        "OPTIONS",
        "/score",
        headers={
            "Origin": "https://a.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type, authorization",
        },
    )
    assert preflight.status == 200
    assert preflight.headers["access-control-allow-origin"] == "https://a.example"
    assert preflight.headers["access-control-allow-methods"] == "GET, POST"
    assert preflight.headers["access-control-allow-headers"] == "authorization, content-type"


def test_cors_flag_with_azure_spelling(runtime):
    server = runtime("echo.py", "--access_control_allow_origins", "*")
    reply = server.request("POST", "/score", "{}", {"Origin": "https://any.example"})
    assert reply.headers["access-control-allow-origin"] == "https://any.example"
    assert "access-control-allow-origin" not in server.request("GET", "/nowhere", headers={"Origin": "x"}).headers


def test_azmlinfsrv_flag_spellings(runtime, tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    server = runtime(
        Path(__file__).parent / "scripts" / "model_dir.py",
        "--model_dir",
        str(models),
        "--worker_count",
        "2",
    )
    assert server.log.wait_for(r"workers 2", timeout=10)
    assert json.loads(server.request("POST", "/score", "{}").body)


def test_environ_joins_repeated_headers_and_sets_the_real_length():
    scope = {
        "method": "POST",
        "path": "/score",
        "query_string": b"a=1",
        "headers": [
            (b"x-a", b"1"),
            (b"x-a", b"2"),
            (b"cookie", b"a=1"),
            (b"cookie", b"b=2"),
            (b"transfer-encoding", b"chunked"),
            (b"content-type", b"t/p"),
        ],
    }
    env = environ(scope, b"hello")
    assert (env["HTTP_X_A"], env["CONTENT_LENGTH"], env["CONTENT_TYPE"]) == ("1,2", "5", "t/p")
    assert env["HTTP_COOKIE"] == "a=1; b=2"
    assert "HTTP_TRANSFER_ENCODING" not in env and env["wsgi.input"].read() == b"hello"


def test_raw_script_when_the_runtime_is_copied_as_mlops_runtime(tmp_path):
    """What targets run: the package copied into an environment under another name."""
    import shutil

    from tests.runtime.conftest import _stop, start_runtime

    package = REPO / "providers" / "runtime"
    shutil.copytree(package, tmp_path / "mlops_runtime", ignore=shutil.ignore_patterns("__pycache__"))
    server = start_runtime("raw_echo.py", module="mlops_runtime", env={"PYTHONPATH": str(tmp_path)}, cwd=tmp_path)
    try:
        reply = server.request("GET", "/score?x=1")
        assert (reply.status, reply.json()["args"]) == (200, {"x": ["1"]})
        assert server.request("POST", "/score?do=image", b"").body == PNG
    finally:
        _stop(server)


@pytest.mark.slow
def test_raw_script_in_an_environment_built_by_the_local_target(shared_cache):
    """The venv a local target builds (only the runtime's requirements) serves a raw script: the
    azureml imports resolve, werkzeug is there, and no azureml package or Flask is installed."""
    from providers.local.venvs import ensure_venv, venv_python
    from tests.runtime.conftest import _stop, start_runtime

    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    venv = ensure_venv(shared_cache, {"python": version, "pip": []}, lambda _line: None)
    python = str(venv_python(venv))
    probe = "import importlib.util as u; print([u.find_spec(m) is None for m in ('azureml', 'flask')])"
    assert subprocess.run([python, "-c", probe], capture_output=True, text=True).stdout.strip() == "[True, True]"
    server = start_runtime("raw_echo.py", python=python, module="mlops_runtime", env={"PYTHONPATH": ""})
    try:
        body, headers = multipart({"note": "n"}, {"image": ("a.bin", b"\x00\x01")})
        reply = server.request("POST", "/score?do=file", body, headers)
        assert (reply.status, reply.json()["size"]) == (200, 2)
    finally:
        _stop(server)


def test_amlresponse_semantics():
    from providers.runtime.aml_response import AMLResponse

    image = AMLResponse(b"\x89PNG", 200, {"Content-Type": "image/png", "Access-Control-Allow-Origin": "*"})
    assert (image.get_data(), image.content_type, image.headers["Access-Control-Allow-Origin"]) == (
        b"\x89PNG",
        "image/png",
        "*",
    )
    assert image.headers.getlist("Content-Type") == ["image/png"]  # the default is replaced, not doubled
    text = AMLResponse("bad input", 422)
    assert (text.status_code, text.content_type, text.headers["x-ms-run-function-failed"]) == (
        422,
        "text/html; charset=utf-8",
        "False",
    )
    assert AMLResponse({"a": 1}, 200, json_str=True).get_data() == b'{"a": 1}'
    assert AMLResponse(None, 200).get_data() == b"{}"
    assert AMLResponse("x", 200, headers={"X-A": "1, 2"}).headers.getlist("X-A") == ["1", "2"]
