"""Hostile manifests (issue 9, findings 3, 4, 6, 7, 8, 11): each one is refused with one
``file:line:col: what; how to fix`` line, fast, with no traceback and no secret in the output.

Every case runs `mlops validate` in this process on a copy of the example project; a guard
fails a case that does not finish (a hang), it does not measure time.
"""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import pytest
from support import copy_example, run_cli

from planner.errors import LockedError, ManifestError
from planner.hashing import ContentHasher, UnsafeFile, iter_files
from planner.manifest import load_manifest
from providers.base import KindSchema

LOCATED = re.compile(r"^ml\.yaml:\d+:\d+: \S.*$")
SECRET = "S3cr3t-shortk"


@contextmanager
def no_hang(seconds: int = 30) -> Iterator[None]:
    """Fail (not time) a call that never returns: a FIFO read or an endless expansion."""
    def expired(signum: int, frame: Any) -> None:
        raise AssertionError(f"still running after {seconds}s: a hang")

    old = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    copy_example(tmp_path)
    (tmp_path / "ml.yaml").write_text((tmp_path / "ml.yaml.example").read_text())
    monkeypatch.chdir(tmp_path)
    return tmp_path


EXAMPLE_DEPLOY = "    deploy:\n      port: auto"


def with_deploy(project: Path, extra: str) -> None:
    """The example manifest with lines added under the service's ``deploy:``."""
    text = (project / "ml.yaml").read_text()
    assert EXAMPLE_DEPLOY in text
    (project / "ml.yaml").write_text(text.replace(EXAMPLE_DEPLOY, "    deploy:\n" + extra + "\n      port: auto"))


def replace(project: Path, old: str, new: str) -> None:
    text = (project / "ml.yaml").read_text()
    assert old in text, old
    (project / "ml.yaml").write_text(text.replace(old, new, 1))


def refused(project: Path, *needles: str, command: str = "validate") -> str:
    """Run a command; it must fail with only located one-line problems; return stderr."""
    with no_hang():
        result = run_cli(command, "-f", "ml.yaml", cwd=project)
    assert result.code == 1, (result.out, result.err)
    lines = result.err.rstrip("\n").split("\n")
    assert lines[-1].startswith("Error: the manifest has"), result.err
    for line in lines[:-1]:
        assert LOCATED.match(line), line
        assert "Traceback" not in line and len(line) < 1200
    for needle in needles:
        assert needle in result.err, (needle, result.err)
    return result.err


def accepted(project: Path) -> None:
    with no_hang():
        result = run_cli("validate", "-f", "ml.yaml", cwd=project)
    assert result.code == 0, result.err


# -- finding 3: pip entries are requirements, the index is its own setting ------------------------
@pytest.mark.parametrize("entry", ["-r/proc/self/environ", "-r/etc/passwd", "--index-url=https://evil.example/s",
                                   "-e .", "pkg @ file:///etc/passwd", "pkg @ http://evil.example/p.whl",
                                   "numpy==1 --hash=sha256:00", "numpy\\n-r /etc/passwd",
                                   "numpy; python_version == ' -r/etc/passwd'", "numpy; os_name == ' #x'",
                                   "pkg @ https://example.org/$${AWS_SECRET}.whl",
                                   "pkg @ git+https://github.com/acme/pkg@v1", "pkg @ https://example.org/pkg-1.0-py3-none-any.whl",
                                   "pkg[extra] @ https://example.org/pkg.tar.gz ; python_version >= '3.8'"])
def test_pip_entries_must_be_pep508_requirements(project: Path, entry: str):
    replace(project, "      - joblib>=1.3", f'      - "{entry}"')
    err = refused(project, "environments.sklearn.pip[1]")
    assert "/proc/self/environ" not in err or "pip option" in err


def test_pip_requirements_with_markers_and_extras_pass(project: Path):
    replace(project, "      - joblib>=1.3", "      - joblib[x]>=1.3; python_version >= '3.8'")
    accepted(project)


def test_url_requirements_are_refused_on_one_line_naming_file_line_and_field(project: Path):
    """As the README says: `name @ git+https://…` and `name @ https://….whl` never reach pip."""
    replace(project, "      - joblib>=1.3", '      - "pkg @ git+https://github.com/acme/pkg@v1"')
    err = refused(project, "environments.sklearn.pip[1]")
    [line] = [x for x in err.splitlines() if "pip[1]" in x]
    assert re.match(r"^ml\.yaml:\d+:\d+: environments\.sklearn\.pip\[1\]: .*URL requirement", line), line


@pytest.mark.parametrize("url, ok", [("https://pypi.example/simple", True), ("http://127.0.0.1:3141/simple", True),
                                     ("http://pypi.example/simple", False), ("file:///srv/wheels", False),
                                     ("https://user:hunter2@pypi.example/simple", False), ("https://a b", False)])
def test_pip_index_url_is_https_without_credentials(project: Path, url: str, ok: bool):
    replace(project, "    python: \"3.11\"\n", f"    python: \"3.11\"\n    pip_index_url: \"{url}\"\n")
    if ok:
        accepted(project)
        assert load_manifest(project / "ml.yaml").section("environments")["sklearn"]["pip_index_url"] == url
    else:
        err = refused(project, "environments.sklearn.pip_index_url")
        assert "hunter2" not in err


def test_pip_errors_show_the_failing_requirement_never_file_contents(tmp_path: Path):
    from providers.local.venvs import _run

    noisy = ("import sys\n"
             "print('Collecting nope==1', file=sys.stderr)\n"
             "print('ERROR: Invalid requirement: AWS_SECRET=leaked (from line 3 of /proc/self/environ)', "
             "file=sys.stderr)\n"
             "print('AWS_SECRET=leaked', file=sys.stderr)\n"
             "print('ERROR: No matching distribution found for nope==1', file=sys.stderr)\n"
             "sys.exit(1)\n")
    with pytest.raises(Exception) as info:
        _run([sys.executable, "-c", noisy], "pip install")
    message = str(info.value)
    assert "leaked" not in message and "nope==1" in message and "\n" not in message


# -- finding 4: hash regular files only, bounded YAML, bounded size ------------------------------
def test_symlink_to_dev_zero_in_a_model_folder_is_refused_not_hashed(project: Path):
    folder = project / "examples" / "diabetes" / "model"
    folder.mkdir()
    (folder / "weights.bin").write_bytes(b"w")
    (folder / "zero").symlink_to("/dev/zero")
    replace(project, "path: examples/diabetes/model.pkl", "path: examples/diabetes/model")
    refused(project, "models.ridge.path", "examples/diabetes/model/zero", "symbolic link")
    refused(project, "models.ridge.path", command="plan")


def test_fifo_in_source_dir_is_refused_not_read(project: Path):
    os.mkfifo(project / "examples" / "diabetes" / "src" / "pipe")
    refused(project, "services.diabetes-api.source_dir", "FIFO")


def test_symlink_out_of_the_repository_in_source_dir_is_refused(project: Path):
    (project / "examples" / "diabetes" / "src" / "helper.py").symlink_to("/etc/hostname")
    refused(project, "services.diabetes-api.source_dir", "src/helper.py", "symbolic link")


def test_hashing_refuses_links_fifos_and_devices_without_reading_them(tmp_path: Path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "ok.txt").write_text("ok")
    assert iter_files(tmp_path / "a") == [tmp_path / "a" / "ok.txt"]
    for make in (lambda p: p.symlink_to("/dev/zero"), os.mkfifo, lambda p: p.symlink_to("ok.txt")):
        bad = tmp_path / "a" / "bad"
        make(bad)
        with no_hang(), pytest.raises(UnsafeFile):
            ContentHasher().tree_hash(tmp_path / "a")
        bad.unlink()
    with no_hang(), pytest.raises(UnsafeFile):
        ContentHasher().file_hash(Path("/dev/zero"))


def test_a_link_that_appears_after_validation_is_refused_at_plan_time_with_a_position(project: Path):
    from planner.project import Project

    manifest = load_manifest(project / "ml.yaml")
    (project / "examples" / "diabetes" / "src" / "late.py").symlink_to("/dev/zero")
    with no_hang(), pytest.raises(ManifestError) as info:
        Project(manifest).desired()
    (problem,) = info.value.problems
    assert LOCATED.match(str(problem)) and "services.diabetes-api.source_dir" in str(problem)


def test_billion_laughs_is_refused_fast(project: Path):
    rows = ["lol0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    rows += [f"lol{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]" for i in range(1, 10)]
    text = (project / "ml.yaml").read_text().replace("version: 1\n", "version: 1\nx-laughs:\n" +
                                                      "".join(f"  {r}\n" for r in rows))
    (project / "ml.yaml").write_text(text)
    refused(project, "expands to more than")


def test_an_oversized_manifest_is_refused_before_parsing(project: Path):
    text = (project / "ml.yaml").read_text()
    (project / "ml.yaml").write_text(text + "#" + "x" * (20 * 1024 * 1024) + "\n")
    refused(project, "over the limit")


def test_a_fifo_as_manifest_is_refused_not_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    os.mkfifo(tmp_path / "ml.yaml")
    refused(tmp_path, "not a regular file")


# -- finding 6: links in model folders and a linked entry_script ---------------------------------
def test_symlink_inside_a_model_folder_is_refused(project: Path):
    folder = project / "examples" / "diabetes" / "model"
    folder.mkdir()
    (folder / "shadow").symlink_to("/etc/shadow")
    replace(project, "path: examples/diabetes/model.pkl", "path: examples/diabetes/model")
    refused(project, "models.ridge.path", "symbolic link")


def test_a_symlinked_model_file_is_refused(project: Path):
    (project / "examples" / "diabetes" / "linked.pkl").symlink_to(project / "examples" / "diabetes" / "model.pkl")
    replace(project, "path: examples/diabetes/model.pkl", "path: examples/diabetes/linked.pkl")
    refused(project, "models.ridge.path", "symbolic link")


def test_a_symlinked_entry_script_is_refused(project: Path):
    src = project / "examples" / "diabetes" / "src"
    (src / "real.py").write_text((src / "score.py").read_text())
    (src / "linked.py").symlink_to("real.py")
    replace(project, "entry_script: score.py", "entry_script: linked.py")
    refused(project, "services.diabetes-api.entry_script", "symbolic link")


@pytest.mark.parametrize("entry", ["../../../ml.yaml", "/etc/passwd"])
def test_entry_script_outside_source_dir_is_refused(project: Path, entry: str):
    replace(project, "entry_script: score.py", f"entry_script: {entry}")
    refused(project, "services.diabetes-api.entry_script", "outside source_dir")


# -- finding 7: secrets in messages, environment variables -----------------------------------------
@pytest.mark.parametrize("key", [SECRET, "S3cr3t\\nshortk", "S3cr3t\\rshortk"])
def test_a_too_short_key_is_never_echoed(project: Path, key: str):
    with_deploy(project, f'      primary_key: "{key}"')
    err = refused(project, "services.diabetes-api.deploy.primary_key", "too short")
    assert "S3cr3t" not in err and "shortk" not in err


def test_a_too_short_key_from_the_environment_is_never_echoed(project: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HOSTILE_KEY", SECRET)
    with_deploy(project, "      primary_key: ${HOSTILE_KEY}")
    err = refused(project, "too short")
    assert "S3cr3t" not in err


def test_interpolated_values_are_never_echoed_even_where_not_secret(project: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HOSTILE_AUTH", "conn=S3cr3t-value")
    replace(project, "auth: key", "auth: ${HOSTILE_AUTH}")
    err = refused(project, "services.diabetes-api.deploy.auth")
    assert "S3cr3t" not in err


@pytest.mark.parametrize("field", ["source_dir: examples/diabetes/src", "entry_script: score.py",
                                   "sample_request: examples/diabetes/sample-request.json",
                                   "path: examples/diabetes/model.pkl", "environment: sklearn"])
def test_paths_and_references_from_the_environment_are_never_echoed(project: Path, monkeypatch: pytest.MonkeyPatch,
                                                                    field: str):
    monkeypatch.setenv("HOSTILE_PART", "S3cr3t-part")
    key, value = field.split(": ")
    replace(project, field, f"{key}: ${{HOSTILE_PART}}{value}")
    err = refused(project)
    assert "S3cr3t" not in err


def test_a_secret_target_setting_is_never_echoed(project: Path, host_provider: type):
    replace(project, "    provider: local\n", "    provider: hostmem\n    token: S3cr3t-shortk\n")
    err = refused(project, "targets.dev.token", "too short")
    assert "S3cr3t" not in err


@pytest.mark.parametrize("name", ["MLOPS_PRIMARY_KEY", "MLOPS_ANYTHING", "PATH", "LD_PRELOAD", "LD_LIBRARY_PATH",
                                  "PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "DYLD_INSERT_LIBRARIES", "path",
                                  "AZUREML_MODEL_DIR", "1BAD", "A-B"])
def test_reserved_and_loader_environment_variables_are_refused(project: Path, name: str):
    with_deploy(project, f"      environment_variables:\n        {name}: value-S3cr3t")
    err = refused(project, "services.diabetes-api.deploy.environment_variables", name)
    assert "value-S3cr3t" not in err


def test_environment_variable_values_print_as_sensitive_in_plans(project: Path):
    with_deploy(project, "      environment_variables:\n        FEATURE_FLAG: plain-S3cr3t-value")
    accepted(project)
    for args in (("plan",), ("plan", "--json"), ("plan", "--format", "markdown")):
        result = run_cli(*args, "-f", "ml.yaml", cwd=project)
        assert result.code == 0, result.err
        assert "plain-S3cr3t-value" not in result.out + result.err
        assert "(sensitive)" in result.out


def test_desired_marks_every_environment_variable_sensitive(project: Path):
    from planner.project import Project

    with_deploy(project, "      environment_variables:\n        A_VAR: one\n        B_VAR: two")
    desired = Project.load(project / "ml.yaml").desired()
    service = next(r for a, r in desired.items() if a.kind == "service")
    assert {"deploy.environment_variables.A_VAR", "deploy.environment_variables.B_VAR"} <= service.sensitive


# -- finding 8: tracebacks -> located lines -------------------------------------------------------
def test_invalid_utf8_is_located(project: Path):
    raw = (project / "ml.yaml").read_bytes().replace(b"Ridge regression", b"Ridge \xff\xfe regression")
    (project / "ml.yaml").write_bytes(raw)
    refused(project, "invalid UTF-8")


def test_nul_byte_is_located(project: Path):
    raw = (project / "ml.yaml").read_bytes().replace(b"Ridge regression", b"Ridge \x00 regression")
    (project / "ml.yaml").write_bytes(raw)
    refused(project, "NUL")


@pytest.mark.parametrize("deep", ["[" * 5000 + "]" * 5000, "{a: " * 3000 + "1" + "}" * 3000])
def test_deep_nesting_is_located(project: Path, deep: str):
    replace(project, "description: Ridge regression on scikit-learn's diabetes data", f"description: {deep}")
    refused(project, "nested more than")


def test_deep_block_nesting_is_located(project: Path):
    block = "".join("  " * (i + 2) + f"k{i}:\n" for i in range(200)) + "  " * 202 + "v\n"
    replace(project, "    tags: {area: health, framework: scikit-learn}\n", "    tags:\n" + block)
    refused(project, "nested more than")


def test_a_5000_digit_integer_is_located(project: Path):
    replace(project, "workers: 1", "workers: " + "9" * 5000)
    refused(project, "5000 digits")


def test_merge_of_a_scalar_is_located(project: Path):
    replace(project, "project: diabetes", "project: &p diabetes\nx-defaults:\n  <<: *p")
    refused(project, "`<<` merges a mapping")


def test_merge_keys_still_work(project: Path):
    replace(project, "    deploy:\n      port: auto",
            "    deploy:\n      <<: {workers: 2, port: 9000}\n      port: auto")
    accepted(project)
    deploy = load_manifest(project / "ml.yaml").section("services")["diabetes-api"]["deploy"]
    assert deploy["port"] == "auto" and deploy["workers"] == 1


@pytest.mark.parametrize("tag", ["!!python/name:os.system", "!!python/object/apply:os.system ['id']", "!secret x",
                                 "!!binary aGVsbG8=", "!!set {a, b}"])
def test_unknown_tags_are_located(project: Path, tag: str):
    replace(project, "description: Ridge regression on scikit-learn's diabetes data", f"description: {tag}")
    refused(project, "unsupported YAML tag")


def test_a_3000_character_entry_script_is_located(project: Path):
    replace(project, "entry_script: score.py", "entry_script: " + "a" * 3000 + ".py")
    err = refused(project, "services.diabetes-api.entry_script", "too long")
    assert "a" * 200 not in err


@pytest.mark.parametrize("field", ["source_dir: examples/diabetes/src", "path: examples/diabetes/model.pkl"])
def test_a_path_with_an_overlong_component_is_located(project: Path, field: str):
    key = field.split(":")[0]
    replace(project, field, f"{key}: examples/{'b' * 300}/x")
    refused(project, "cannot be used")


def test_a_nul_in_a_path_is_located(project: Path):
    replace(project, "source_dir: examples/diabetes/src", 'source_dir: "examples/\\0/src"')
    refused(project, "services.diabetes-api.source_dir")


# -- finding 11: validation gaps ------------------------------------------------------------------
class _HostProvider:
    """Mixin: services share one host's ports (like processes on 127.0.0.1)."""

    kind: ClassVar[str] = "hostmem"

    @classmethod
    def schema(cls) -> KindSchema:
        return dataclasses.replace(
            super().schema(),   # type: ignore[misc]   # the memory provider's, after this mixin in the MRO
            port_scope=lambda config: "127.0.0.1",
            target={"type": "object", "additionalProperties": False, "properties": {
                "provider": {"const": "hostmem"}, "token": {"type": "string", "writeOnly": True, "minLength": 16}}})


@pytest.fixture
def host_provider() -> Iterator[type]:
    from memory_provider import STATE, MemoryProvider

    from providers import registry

    cls = type("HostMemoryProvider", (_HostProvider, MemoryProvider), {})
    registry.register("hostmem", cls)
    yield cls
    registry.unregister("hostmem")
    STATE.clear()


def two_services(project: Path, port_a: Any, port_b: Any) -> None:
    text = (project / "ml.yaml").read_text()
    service = text[text.index("  diabetes-api:"):]
    text = text.replace("port: auto", f"port: {port_a}")
    text += service.replace("diabetes-api", "second-api").replace("port: auto", f"port: {port_b}")
    (project / "ml.yaml").write_text(text)


def on_host_provider(project: Path) -> None:
    replace(project, "    provider: local\n", "    provider: hostmem\n")
    replace(project, "      workers: 1\n", "")


def test_two_services_on_one_port_of_one_host_are_refused(project: Path, host_provider: type):
    on_host_provider(project)
    two_services(project, 9001, 9001)
    refused(project, "services.second-api.deploy.port", "already taken by services.diabetes-api")


def test_two_services_on_different_ports_pass(project: Path, host_provider: type):
    on_host_provider(project)
    two_services(project, 9001, 9002)
    accepted(project)


def test_two_local_services_on_one_port_are_refused(project: Path):
    two_services(project, 9001, 9001)
    refused(project, "services.second-api.deploy.port", "already taken by services.diabetes-api")


def test_two_local_targets_share_the_machine_s_ports(project: Path):
    replace(project, "    provider: local\n", "    provider: local\n  box:\n    provider: local\n")
    two_services(project, 9001, 9001)
    text = (project / "ml.yaml").read_text()
    head, second = text.split("  second-api:")
    (project / "ml.yaml").write_text(head + "  second-api:" + second.replace("target: dev", "target: box"))
    refused(project, "services.second-api.deploy.port")


@pytest.mark.parametrize("path", ["../elsewhere", "/tmp/mlops-registry", ".", "examples/diabetes/src/state"])
def test_registry_path_outside_the_folder_or_inside_a_hashed_folder_is_refused(project: Path, path: str):
    replace(project, "project: diabetes", f"project: diabetes\nregistry:\n  path: {path}")
    refused(project, "registry.path")
    assert not (project.parent / "elsewhere").exists()


@pytest.mark.parametrize("target", ["/tmp", "examples/diabetes/src"])
def test_a_committed_mlops_link_out_of_the_folder_or_into_a_hashed_one_is_refused(project: Path, target: str):
    (project / ".mlops").symlink_to(target if target.startswith("/") else project / target)
    refused(project, ".mlops")
    refused(project, ".mlops", command="plan")  # before anything is written through the link


def test_registry_path_inside_the_folder_passes(project: Path):
    replace(project, "project: diabetes", "project: diabetes\nregistry:\n  path: state/registry")
    accepted(project)


@pytest.mark.parametrize("quoted", [False, True])
def test_an_interpolated_port_is_typed(project: Path, monkeypatch: pytest.MonkeyPatch, quoted: bool):
    monkeypatch.setenv("HOSTILE_PORT", "8123")
    replace(project, "port: auto", 'port: "${HOSTILE_PORT}"' if quoted else "port: ${HOSTILE_PORT}")
    accepted(project)
    assert load_manifest(project / "ml.yaml").section("services")["diabetes-api"]["deploy"]["port"] == 8123


def test_a_digit_only_key_from_the_environment_stays_text(project: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HOSTILE_KEY", "12345678901234567890")
    with_deploy(project, "      primary_key: ${HOSTILE_KEY}")
    accepted(project)
    deploy = load_manifest(project / "ml.yaml").section("services")["diabetes-api"]["deploy"]
    assert deploy["primary_key"] == "12345678901234567890"


def test_an_interpolated_port_that_is_not_a_number_is_refused(project: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HOSTILE_PORT", "eighty")
    replace(project, "port: auto", "port: ${HOSTILE_PORT}")
    err = refused(project, "services.diabetes-api.deploy.port")
    assert "eighty" not in err


@pytest.mark.parametrize("length", [40, 500, 5000])
def test_a_long_service_name_gets_a_clear_error(project: Path, length: int):
    replace(project, "  diabetes-api:", "  " + "d" * length + ":")
    err = refused(project)
    assert "d" * 100 not in err
    assert "characters" in err or "3-32" in err


def test_the_lock_message_never_reads_question_marks(tmp_path: Path):
    import fcntl

    from planner.lock import apply_lock

    (tmp_path / "apply.lock").touch()
    with (tmp_path / "apply.lock").open("a") as holder:
        fcntl.flock(holder, fcntl.LOCK_EX)  # a holder that has not written its record (yet)
        (tmp_path / "apply.lock.json").write_text('{"pid": ')  # and a torn record from nobody
        with pytest.raises(LockedError) as info, apply_lock(tmp_path, "apply"):
            pass
        assert "?" not in str(info.value) and "holds the lock" in str(info.value)
        dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True).stdout.strip()
        (tmp_path / "apply.lock.json").write_text(
            f'{{"pid": {dead}, "host": "{socket.gethostname()}", "operation": "apply", "since": "then"}}')
        with pytest.raises(LockedError) as info, apply_lock(tmp_path, "apply"):
            pass
        assert f"pid {dead}" not in str(info.value) and "?" not in str(info.value)
    with apply_lock(tmp_path, "destroy"):
        record = (tmp_path / "apply.lock.json").read_text()
        assert f'"pid": {os.getpid()}' in record and '"operation": "destroy"' in record
    assert not (tmp_path / "apply.lock.json").exists()


# -- validation gaps that used to fail later (issue 22, item 9) ------------------------------------
def test_registry_path_that_is_a_file_is_refused_at_validate(project: Path):
    (project / "registry.txt").write_text("not a folder")
    replace(project, "project: diabetes", "project: diabetes\nregistry: {path: registry.txt}")
    err = refused(project, "registry.path", "is a file, not a folder")
    for command in ("plan", "status"):
        assert "Traceback" not in refused(project, "registry.path", command=command)
    assert "Traceback" not in err


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf", ".NaN"])
def test_not_a_number_is_refused_at_validate(project: Path, value: str):
    with_deploy(project, f"      memory_gb: {value}")
    refused(project, "services.diabetes-api.deploy.memory_gb", "not a usable number")


@pytest.mark.parametrize("path", [".", "./", "examples/.."])
def test_a_model_that_is_the_project_folder_is_refused(project: Path, path: str):
    text = (project / "ml.yaml").read_text()
    old = next(line for line in text.splitlines() if line.strip().startswith("path:") and ".pkl" in line)
    replace(project, old, old.split("path:")[0] + f'path: "{path}"')
    refused(project, "models.ridge.path", "the project folder itself")


def test_import_refuses_a_conda_file_outside_the_source_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from planner.errors import MlopsError
    from planner.importers.azureml_v1 import import_v1

    secret = tmp_path / "outside.yml"
    secret.write_text("dependencies:\n  - pip:\n    - host-secret-package\n")
    project = tmp_path / "project"
    (project / "src").mkdir(parents=True)
    (project / "src" / "score.py").write_text("def init(): pass\ndef run(raw): return raw\n")
    (project / "model.pkl").write_text("m")
    (project / "deploymentconfig.json").write_text('{"computeType": "local", "port": 32267}')
    (project / "inferenceconfig.json").write_text(
        '{"entryScript": "score.py", "sourceDirectory": "./src", "environment": {"python": '
        '{"condaDependenciesFile": "../../outside.yml"}}}')
    monkeypatch.chdir(project)
    with pytest.raises(MlopsError) as caught:
        import_v1(inference_config=Path("inferenceconfig.json"), deploy_configs=[Path("deploymentconfig.json")],
                  models=["m=model.pkl"], service="conda-api", output=project / "ml.yaml",
                  deploy_fields=lambda config: frozenset({"port"}))
    message = str(caught.value)
    assert "condaDependenciesFile" in message and "outside the project folder" in message
    assert message.startswith("inferenceconfig.json:") and "\n" not in message


# -- a cloud SDK that is not installed: the pip command, never a traceback (item 19) ----------------
EXTRA_MANIFEST = """\
version: 1
project: extras
targets:
  edge: {provider: iotedge, hub: "HostName=127.0.0.1:9;SharedAccessKeyName=owner;SharedAccessKey=c2VjcmV0c2VjcmV0",
         device_id: dev1, registry: "127.0.0.1:5000"}
  k8s: {provider: kubernetes, context: none-such, registry: "127.0.0.1:5000"}
models:
  m: {path: model.txt}
environments:
  e: {python: "3.11"}
services:
  edge-api: {models: [m], environment: e, source_dir: src, entry_script: score.py, target: TARGET}
"""


@pytest.mark.parametrize("target, module, extra", [("edge", "azure.core", "iotedge"),
                                                   ("k8s", "kubernetes", "kubernetes")])
def test_a_missing_extra_names_the_pip_command(tmp_path: Path, target: str, module: str, extra: str):
    """The SDK is made unimportable in a fresh process (``sys.modules[name] = None``), as if not installed."""
    from support import make_project

    make_project(tmp_path, EXTRA_MANIFEST.replace("TARGET", target))
    code = (f"import sys; sys.modules[{module!r}] = None\n"
            "from planner.cli import main\nsys.exit(main(['plan']))\n")
    with no_hang(120):
        proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert f"pip install 'mlops[{extra}]'" in proc.stderr, proc.stderr


def test_no_message_sends_users_to_our_ci_scripts():
    """`.ci/…` exists only in mlops's repository: a message a user sees tells what to run in theirs."""
    import ast

    root = Path(__file__).resolve().parents[2]
    found = []
    for path in [*root.glob("planner/**/*.py"), *root.glob("providers/**/*.py")]:
        tree = ast.parse(path.read_text())
        docstrings = {id(node.value) for node in ast.walk(tree)   # bare strings: docstrings, attribute docs
                      if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)}
        found += [f"{path.relative_to(root)}:{node.lineno}" for node in ast.walk(tree)
                  if isinstance(node, ast.Constant) and isinstance(node.value, str) and ".ci/" in node.value
                  and id(node) not in docstrings]
    assert not found, found


def test_a_10000_service_platform_manifest_is_accepted_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Issue 22, item 23: 10,000 services (about 1.3 MB) fit the default limits, no variable needed."""
    monkeypatch.delenv("MLOPS_MAX_MANIFEST_KIB", raising=False)
    lines = ["version: 1", "project: platform", "models:"] + [f"  m{i}: {{path: model.txt}}" for i in range(10)]
    lines += ["environments:"] + [f'  e{i}: {{python: "3.11", pip: [numpy]}}' for i in range(5)] + ["services:"]
    lines += [f"  s{i:05d}: {{models: [m{i % 10}], environment: e{i % 5}, source_dir: src, entry_script: score.py, "
              f"sample_request: sample.json, deploy: {{port: auto}}}}" for i in range(10_000)]
    from support import make_project

    make_project(tmp_path, "\n".join(lines) + "\n")
    assert (tmp_path / "ml.yaml").stat().st_size > 1_200_000
    with no_hang(300):
        result = run_cli("validate", cwd=tmp_path)
    assert result.code == 0, result.err[:500]
    assert "10000 services" in result.out
