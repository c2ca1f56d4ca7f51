"""Pieces of the runtime that need no server: settings, CLI errors, inputs, auth, packaging rules."""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from providers.runtime import REQUIREMENTS, cli, exitcodes, settings
from providers.runtime.auth import KeyCheck
from providers.runtime.inputs import InputError, arguments_for, query_values
from providers.runtime.script import EntryScript, ScriptError, analyse

PACKAGE = Path(__file__).resolve().parents[2] / "providers" / "runtime"
SCRIPTS = Path(__file__).resolve().parent / "scripts"


def test_requirements_are_pip_requirement_strings():
    assert REQUIREMENTS and all(isinstance(r, str) and r for r in REQUIREMENTS)
    assert any(r.startswith("uvicorn") for r in REQUIREMENTS)


def test_importing_the_package_does_not_import_the_server():
    code = "import providers.runtime, sys; print('uvicorn' in sys.modules, 'asyncio' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=PACKAGE.parents[1]
    )
    assert out.stdout.split() == ["False", "False"]


def _third_party_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return {name for name in found if name not in sys.stdlib_module_names and name != "__future__"}


RAW_HTTP_MODULES = {"aml_request.py", "aml_response.py", "rawhttp.py"}
"""The only modules that import werkzeug (loaded only for @rawhttp scripts)."""


def test_package_is_self_contained():
    """Only the stdlib, relative imports and the server: it is copied into venvs as mlops_runtime."""
    for module in PACKAGE.glob("*.py"):
        allowed = {"uvicorn", "httptools"} | ({"werkzeug"} if module.name in RAW_HTTP_MODULES else set())
        assert _third_party_imports(module) <= allowed, module.name


def test_every_third_party_import_is_a_requirement():
    names = {re.split(r"[<>=;! ]", r, maxsplit=1)[0].lower() for r in REQUIREMENTS}
    for module in PACKAGE.glob("*.py"):
        assert _third_party_imports(module) <= names, module.name


def test_runs_when_copied_as_mlops_runtime(tmp_path):
    shutil.copytree(PACKAGE, tmp_path / "mlops_runtime", ignore=shutil.ignore_patterns("__pycache__"))
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-m", "mlops_runtime", "--help"], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr
    assert "--entry-script" in out.stdout and "MLOPS_PRIMARY_KEY" in out.stdout


def test_settings_precedence_flags_over_environment(tmp_path):
    script = tmp_path / "score.py"
    script.write_text("def init(): pass\ndef run(d): return d\n")
    env = {
        "WORKER_COUNT": "3",
        "SCORING_TIMEOUT_MS": "1500",
        "AZUREML_ENTRY_SCRIPT": "score.py",
        "AML_APP_ROOT": str(tmp_path),
        "MLOPS_PRIMARY_KEY": "k1",
        "MLOPS_SECONDARY_KEY": "",
    }
    chosen = settings.load(env, workers=2)
    assert chosen.workers == 2 and chosen.scoring_timeout_ms == 1500
    assert chosen.entry_script == script and chosen.app_root == tmp_path
    assert chosen.keys == ("k1",) and chosen.auth_enabled
    assert "MLOPS_PRIMARY_KEY" not in env  # taken out of the environment the script will see
    assert "k1" not in repr(chosen)


def test_main_py_in_app_root_is_the_default_entry_script(tmp_path):
    (tmp_path / "main.py").write_text("def init(): pass\ndef run(d): return d\n")
    assert settings.load({"AML_APP_ROOT": str(tmp_path)}).entry_script == tmp_path / "main.py"


@pytest.mark.parametrize(
    ("env", "argv", "message"),
    [
        ({"SCORING_TIMEOUT_MS": "soon"}, [], "SCORING_TIMEOUT_MS must be an integer, got 'soon'"),
        ({"MLOPS_MAX_BODY_BYTES": "0"}, [], "MLOPS_MAX_BODY_BYTES must be at least 1"),
        ({}, ["--workers", "0"], "--workers must be at least 1"),
        ({}, ["--entry-script", "missing.py"], "does not exist"),
    ],
)
def test_configuration_errors_exit_2_with_one_line(monkeypatch, capsys, env, argv, message):
    for name in ("SCORING_TIMEOUT_MS", "MLOPS_MAX_BODY_BYTES", "AZUREML_ENTRY_SCRIPT", "WORKER_COUNT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    args = argv if "--entry-script" in argv else ["--entry-script", str(SCRIPTS / "echo.py"), *argv]
    assert cli.main(args) == exitcodes.USAGE
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_unknown_flag_is_usage_error(capsys):
    assert cli.main(["--bogus"]) == exitcodes.USAGE


def test_query_values_parse_json_and_repeat_into_lists():
    assert query_values(b"a=1&b=%5B1%2C2%5D&c=x&c=y&d=&e=true") == {
        "a": 1,
        "b": [1, 2],
        "c": ["x", "y"],
        "d": "",
        "e": True,
    }


def _script(run, decorated=False) -> EntryScript:
    script = analyse(Path("score.py"), lambda: None, run)
    return EntryScript(
        **{
            **script.__dict__,
            "schema_decorated": decorated,
            "input_names": script.input_names if not decorated else ("data", "scale"),
        }
    )


def test_run_signature_rules():
    def star(*args):
        return args

    def only_headers(request_headers):
        return request_headers

    with pytest.raises(ScriptError, match=r"\*args"):
        analyse(Path("s.py"), lambda: None, star)
    with pytest.raises(ScriptError, match="needs a parameter"):
        analyse(Path("s.py"), lambda: None, only_headers)

    def run(data, request_headers):
        return data

    assert analyse(Path("s.py"), lambda: None, run).wants_headers


def test_raw_post_arguments():
    script = _script(lambda raw: raw)
    assert arguments_for(script, "POST", b"", None, b'{"a": 1}') == {"raw": '{"a": 1}'}
    with pytest.raises(InputError) as err:
        arguments_for(script, "POST", b"", None, b"\xff")
    assert err.value.status == 400


@pytest.mark.parametrize(
    "content_type", [None, "application/json", "application/json; charset=utf-8", "application/vnd.api+json"]
)
def test_schema_post_accepts_json_content_types(content_type):
    def run(data, scale=2):
        return data

    script = _script(run, decorated=True)
    script = EntryScript(**{**script.__dict__, "defaults": {"scale": 2}})
    assert arguments_for(script, "POST", b"", content_type, b'{"data": 1}') == {"data": 1, "scale": 2}


def test_key_check():
    keys = KeyCheck(("alpha", "beta"))
    assert keys.problem(b"Bearer alpha") is None
    assert keys.problem(b"bearer beta") is None
    assert keys.problem(b"Bearer gamma") == "Invalid key"
    assert keys.problem(None) is not None
    assert KeyCheck(()).problem(None) is None
