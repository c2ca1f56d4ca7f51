"""End to end through the real `mlops` command on the real local provider, in a temporary git
repository: real virtualenvs, real detached processes, real HTTP on 127.0.0.1."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

import git
import pytest
from support import Hammer, copy_example, echo_manifest, make_project

from providers.local.processes import free_port

pytestmark = pytest.mark.slow

MANIFEST = echo_manifest("e2e", model="{path: model.txt, tags: {stage: dev}}")


def mlops(*args: str, cwd: Path, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "planner.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL, env=os.environ.copy())
    if check and proc.returncode not in (0,):
        raise AssertionError(f"mlops {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def processes_under(path: Path, *, keepers: bool = True) -> list[int]:
    """PIDs whose command line mentions ``path`` (our services and their workers, and port keepers
    unless ``keepers`` is false: they name their record in the state folder)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if not keepers and "providers.local.portkeeper" in cmdline:
                continue
            if str(path) in cmdline and stat[stat.rindex(")") + 2] != "Z":
                found.append(int(entry.name))
    return found


@pytest.fixture(autouse=True)
def _no_strays(tmp_path: Path):
    """Whatever a failing test left running under its folder is killed, so it cannot leak."""
    yield
    for pid in processes_under(tmp_path):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 9)


def status(cwd: Path) -> dict:
    return {r["service"]: r for r in json.loads(mlops("status", "--json", cwd=cwd).stdout)["services"]}


def commit(root: Path, message: str) -> None:
    repo = git.Repo(root)
    repo.git.add(A=True)
    repo.index.commit(message)


def test_lifecycle_on_the_local_target(tmp_path: Path):
    root = tmp_path / "repo"
    make_project(root, MANIFEST)
    try:
        assert mlops("validate", cwd=root).returncode == 0
        assert mlops("plan", "--detailed-exitcode", cwd=root, check=False).returncode == 2

        applied = mlops("apply", "--auto-approve", cwd=root)
        assert "Apply complete! Resources: 3 added, 0 changed, 0 destroyed." in applied.stdout
        assert "service.diabetes" not in applied.stdout
        st = status(root)["echo-api"]
        assert st["state"] == "Healthy" and st["models"][0].startswith("m:1@")
        assert st["git_commit"] == git.Repo(root).head.commit.hexsha

        called = json.loads(mlops("call", "echo-api", "--data", '{"x": 1}', cwd=root).stdout)
        assert called == {"model": "v1", "echo": {"x": 1}}
        assert json.loads(mlops("call", "echo-api", cwd=root).stdout)["echo"] == {"data": [1, 2, 3]}
        endpoint = st["endpoint"]
        assert mlops("plan", "--detailed-exitcode", cwd=root, check=False).returncode == 0

        # `logs --follow` streams new lines as they are written (one access line per request).
        follow = subprocess.Popen([sys.executable, "-m", "planner.cli", "logs", "echo-api", "--follow"], cwd=root,
                                  stdout=subprocess.PIPE, text=True)
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [lines.put(ln) for ln in follow.stdout], daemon=True).start()
        try:
            time.sleep(0.5)
            mlops("call", "echo-api", "--data", '{"follow": true}', cwd=root)
            deadline = time.monotonic() + 10
            seen = ""
            while "method=POST path=/score status=200" not in seen and time.monotonic() < deadline:
                with contextlib.suppress(queue.Empty):
                    seen = lines.get(timeout=max(0.01, deadline - time.monotonic()))
            assert "method=POST path=/score status=200" in seen
        finally:
            follow.kill()
            follow.wait()

        # A tag is an in-place update of the model only; the service keeps running untouched.
        (root / "ml.yaml").write_text(MANIFEST.replace("stage: dev", "stage: prod"))
        commit(root, "tag")
        plan = mlops("plan", cwd=root).stdout
        assert '~ tags.stage = "dev" -> "prod"' in plan and "Plan: 0 to add, 1 to change, 0 to destroy." in plan
        mlops("apply", "--auto-approve", cwd=root)
        assert mlops("plan", "--detailed-exitcode", cwd=root, check=False).returncode == 0

        # New model bytes: a new version, and the service is updated in place on the same endpoint.
        (root / "model.txt").write_text("v2\n")
        commit(root, "model v2")
        plan = mlops("plan", cwd=root).stdout
        assert "~ version = 1 -> 2" in plan and "# service.echo-api will be updated in-place" in plan
        mlops("apply", "--auto-approve", cwd=root)
        after = status(root)["echo-api"]
        assert after["endpoint"] == endpoint and after["models"][0].startswith("m:2@")
        assert json.loads(mlops("call", "echo-api", "--data", "{}", cwd=root).stdout)["model"] == "v2"
        models = json.loads(mlops("models", "--json", cwd=root).stdout)["models"]
        assert [v["version"] for v in models[0]["versions"]] == [1, 2]

        # A port change forces a replacement.
        new_port = free_port()
        (root / "ml.yaml").write_text(MANIFEST.replace("stage: dev", "stage: prod")
                                      .replace("port: auto", f"port: {new_port}"))
        commit(root, "port")
        plan = mlops("plan", cwd=root).stdout
        assert "# service.echo-api must be replaced" in plan
        assert f'~ deploy.port = "auto" -> {new_port} # forces replacement' in plan
        mlops("apply", "--auto-approve", cwd=root)
        assert status(root)["echo-api"]["endpoint"] == f"http://127.0.0.1:{new_port}/score"
        assert json.loads(mlops("call", "echo-api", "--data", "{}", cwd=root).stdout)["model"] == "v2"
        logs = mlops("logs", "echo-api", cwd=root).stdout
        assert "mlops: starting instance" in logs and f"listening on http://127.0.0.1:{new_port}" in logs
        assert mlops("plan", "--detailed-exitcode", cwd=root, check=False).returncode == 0

        destroyed = mlops("destroy", "--auto-approve", cwd=root)
        assert "Destroy complete! Resources: 0 added, 0 changed, 3 destroyed." in destroyed.stdout
        assert status(root)["echo-api"]["state"] == "NotDeployed"
        assert processes_under(root) == []
    finally:
        mlops("destroy", "--auto-approve", cwd=root, check=False)


def test_failing_start_is_reported_and_next_plan_shows_it(tmp_path: Path):
    root = tmp_path / "repo"
    make_project(root, MANIFEST, score="def init():\n    raise ValueError('no model here')\n\n"
                                      "def run(data):\n    return data\n")
    try:
        result = mlops("apply", "--auto-approve", cwd=root, check=False)
        assert result.returncode == 1
        # One clean line: the exception, in the user's file (not the snapshot that ran), and where the rest is.
        error = next(ln for ln in result.stderr.splitlines() if "service.echo-api" in ln)
        assert "ValueError: no model here (src/score.py, line 2, in init)" in error, error
        assert "`mlops logs echo-api`" in error
        assert "^" not in error and " | " not in error and ".mlops" not in error
        logs = mlops("logs", "echo-api", cwd=root)
        assert "the log of its last start attempt (instance " in logs.stderr
        assert "ValueError: no model here" in logs.stdout and "Traceback" in logs.stdout
        assert "mlops: starting instance" not in logs.stdout   # that attempt only, after its start line
        plan = mlops("plan", cwd=root).stdout
        assert "# service.echo-api will be created" in plan and "Plan: 1 to add, 0 to change, 0 to destroy." in plan
        assert processes_under(root) == []
    finally:
        mlops("destroy", "--auto-approve", cwd=root, check=False)


def test_killed_process_shows_failed_and_is_replaced(tmp_path: Path):
    root = tmp_path / "repo"
    make_project(root, MANIFEST)
    try:
        mlops("apply", "--auto-approve", cwd=root)
        for pid in processes_under(root):
            os.kill(pid, 9)
        deadline = time.monotonic() + 10
        while processes_under(root) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert status(root)["echo-api"]["state"] == "Failed"
        plan = mlops("plan", cwd=root).stdout
        assert "# service.echo-api must be replaced" in plan and "live status is Failed" in plan
        mlops("apply", "--auto-approve", cwd=root)
        assert status(root)["echo-api"]["state"] == "Healthy"
    finally:
        mlops("destroy", "--auto-approve", cwd=root, check=False)


def test_bad_update_keeps_the_previous_version_serving(tmp_path: Path):
    root = tmp_path / "repo"
    make_project(root, MANIFEST)
    try:
        mlops("apply", "--auto-approve", cwd=root)
        before = status(root)["echo-api"]
        (root / "src" / "score.py").write_text("def init():\n    pass\n\ndef run(data):\n    raise RuntimeError('x')\n")
        result = mlops("apply", "--auto-approve", cwd=root, check=False)
        assert result.returncode == 1 and "smoke test failed: sample request answered 500" in result.stderr
        after = status(root)["echo-api"]
        assert after["state"] == "Healthy" and after["fingerprint"] == before["fingerprint"]
        assert json.loads(mlops("call", "echo-api", "--data", "{}", cwd=root).stdout)["model"] == "v1"
        assert mlops("plan", "--detailed-exitcode", cwd=root, check=False).returncode == 2
    finally:
        mlops("destroy", "--auto-approve", cwd=root, check=False)


def test_the_example_serves_real_predictions(tmp_path: Path):
    """The README's first command, on a copy of the repository's example (real scikit-learn model)."""
    manifest = copy_example(tmp_path)
    try:
        mlops("apply", "--auto-approve", "-f", manifest.name, cwd=tmp_path)
        reply = json.loads(mlops("call", "diabetes-api", "-f", manifest.name, cwd=tmp_path).stdout)
        predictions = reply["predictions"]
        assert len(predictions) == 2 and all(isinstance(p, float) for p in predictions)
        assert 50 < predictions[0] < 350  # diabetes progression scores live in 25..346
    finally:
        mlops("destroy", "--auto-approve", "-f", manifest.name, cwd=tmp_path, check=False)


MIGRATE_REQ = Path("/proc/sys/net/ipv4/tcp_migrate_req")


@pytest.fixture(params=["0", "1"], ids=["tcp_migrate_req=0", "tcp_migrate_req=1"])
def migrate_req(request):
    """Run with the kernel's connection migration off (most machines) and on; restored after."""
    try:
        before = MIGRATE_REQ.read_text().strip()
        MIGRATE_REQ.write_text(request.param)
    except OSError:
        if request.param == "1":
            pytest.skip("cannot set net.ipv4.tcp_migrate_req here (not root, or an old kernel)")
        before = None
    yield request.param
    if before is not None:
        MIGRATE_REQ.write_text(before)


def test_an_update_under_load_drops_no_request(tmp_path: Path, migrate_req: str):
    """Blue/green on one port: requests sent all through an update are all answered, whatever
    net.ipv4.tcp_migrate_req says (one listener, kept by the port keeper, shared by both versions)."""
    root = tmp_path / "repo"
    make_project(root, MANIFEST.replace("auth: key", "auth: none"))
    try:
        mlops("apply", "--auto-approve", cwd=root)
        endpoint = status(root)["echo-api"]["endpoint"]
        (root / "model.txt").write_text("v2\n")
        commit(root, "model v2")
        with Hammer(endpoint) as load:
            mlops("apply", "--auto-approve", cwd=root)
            time.sleep(0.3)
        assert load.failures == [], load.failures[:5]
        assert set(load.answers) == {"v1", "v2"} and load.answers[-1] == "v2"
        assert status(root)["echo-api"]["endpoint"] == endpoint
    finally:
        mlops("destroy", "--auto-approve", cwd=root, check=False)


def test_a_new_version_takes_no_public_request_before_its_smoke_test_passes(tmp_path: Path):
    """The new instance serves its probe port only until the smoke test passed (--hold-public): a
    release that fails it never answers a client, even while the test runs for seconds."""
    root = tmp_path / "repo"
    make_project(root, MANIFEST.replace("auth: key", "auth: none"))
    try:
        mlops("apply", "--auto-approve", cwd=root)
        endpoint = status(root)["echo-api"]["endpoint"]
        (root / "src" / "score.py").write_text(
            "import time\n\ndef init():\n    pass\n\n"
            "def run(data):\n"
            "    if 'data' in str(data):  # the sample request: fail it, slowly\n"
            "        time.sleep(2)\n"
            "        raise RuntimeError('broken release')\n"
            "    return {'model': 'broken'}\n")
        commit(root, "a broken release")
        with Hammer(endpoint) as load:
            result = mlops("apply", "--auto-approve", cwd=root, check=False)
            time.sleep(0.3)
        assert result.returncode == 1 and "smoke test failed" in result.stderr, result.stderr
        assert load.failures == [], load.failures[:5]
        assert load.answers and set(load.answers) == {"v1"}, "the broken release answered a client"
    finally:
        mlops("destroy", "--auto-approve", cwd=root, check=False)


def test_a_service_on_a_removed_target_is_found_and_moved(tmp_path: Path):
    """Live state comes from the targets, not the manifest: renaming a target must not orphan."""
    root = tmp_path / "repo"
    make_project(root, MANIFEST.replace("models:", "targets:\n  dev: {provider: local}\nmodels:", 1))
    try:
        mlops("apply", "--auto-approve", cwd=root)
        endpoint = status(root)["echo-api"]["endpoint"]
        old_pids = processes_under(root, keepers=False)
        assert old_pids
        (root / "ml.yaml").write_text(MANIFEST.replace("models:", "targets:\n  prod: {provider: local}\nmodels:", 1))
        commit(root, "rename target")
        plan = mlops("plan", cwd=root).stdout
        assert "# (because its target changes from dev to prod)" in plan, plan
        mlops("apply", "--auto-approve", cwd=root)
        st = status(root)["echo-api"]
        assert st["target"] == "prod" and st["state"] == "Healthy"
        assert not set(old_pids) & set(processes_under(root, keepers=False)), "the instance on the old target is gone"
        assert st["endpoint"] == endpoint, "a move keeps the port: the keeper goes with the service"
        assert mlops("plan", "--detailed-exitcode", cwd=root, check=False).returncode == 0
    finally:
        mlops("destroy", "--auto-approve", cwd=root, check=False)


def _sdist(folder: Path) -> None:
    """An sdist with an in-tree build backend that fails as a broken setup.py does: with a traceback
    in a build subprocess, and no ERROR: line from pip."""
    import io
    import tarfile

    files = {
        "pyproject.toml": '[build-system]\nrequires = []\nbuild-backend = "backend"\nbackend-path = ["."]\n'
                          '[project]\nname = "mlops-broken-probe"\nversion = "0.2"\n',
        "backend.py": "def get_requires_for_build_wheel(config_settings=None):\n"
                      "    import numpy_missing_for_mlops_test  # noqa\n",
        "PKG-INFO": "Metadata-Version: 2.1\nName: mlops-broken-probe\nVersion: 0.2\n",
    }
    folder.mkdir(parents=True)
    with tarfile.open(folder / "mlops_broken_probe-0.2.tar.gz", "w:gz") as tar:
        for name, text in files.items():
            info = tarfile.TarInfo(f"mlops_broken_probe-0.2/{name}")
            info.size = len(text.encode())
            tar.addfile(info, io.BytesIO(text.encode()))


def test_a_pip_failure_shows_pips_reason_and_keeps_the_whole_log(tmp_path: Path):
    from functools import partial
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    _sdist(tmp_path / "index" / "simple" / "mlops-broken-probe")
    handler = type("Quiet", (SimpleHTTPRequestHandler,), {"log_message": lambda *a: None})
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(tmp_path / "index")))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    index = f"http://127.0.0.1:{server.server_address[1]}/simple"
    root = tmp_path / "repo"
    make_project(root, MANIFEST.replace('e: {python: "3.11"}',
                                        f'e: {{python: "3.11", pip: [mlops-broken-probe==0.2], '
                                        f'pip_index_url: "{index}"}}'))
    cache = tmp_path / "cache"   # a build of our own: the shared cache must not keep this environment
    try:
        result = subprocess.run([sys.executable, "-m", "planner.cli", "apply", "--auto-approve"], cwd=root,
                                capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL,
                                env={**os.environ, "MLOPS_CACHE_DIR": str(cache)})
        assert result.returncode == 1
        error = next(ln for ln in result.stderr.splitlines() if "service.echo-api" in ln)
        assert "pip install failed: Getting requirements to build wheel did not run successfully" in error, error
        assert "(for mlops-broken-probe==0.2)" in error, error
        assert "ModuleNotFoundError: No module named 'numpy_missing_for_mlops_test'" in error, error
        assert "`mlops logs --build echo-api`" in error, error
        log = mlops("logs", "--build", "echo-api", cwd=root).stdout
        assert log.startswith("--- mlops: building virtualenv ") and "Traceback" in log
        assert "numpy_missing_for_mlops_test" in log and "--- pip install" in log
    finally:
        server.shutdown()
        server.server_close()


def _wheel(folder: Path, project: str, version: str) -> None:
    """A minimal pure-Python wheel whose module knows its version."""
    import base64
    import hashlib
    import zipfile

    module = project.replace("-", "_")
    dist = f"{module}-{version}.dist-info"
    files = {
        f"{module}/__init__.py": f"VERSION = {version!r}\n",
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {project}\nVersion: {version}\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: mlops-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = [f"{p},sha256={base64.urlsafe_b64encode(hashlib.sha256(t.encode()).digest()).rstrip(b'=').decode()},"
              f"{len(t.encode())}" for p, t in files.items()] + [f"{dist}/RECORD,,"]
    files[f"{dist}/RECORD"] = "\n".join(record) + "\n"
    (folder / project).mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(folder / project / f"{module}-{version}-py3-none-any.whl", "w") as zf:
        for path, text in files.items():
            zf.writestr(path, text)


def test_a_changed_pin_reuses_the_nearest_virtualenv_and_installs_only_the_difference(tmp_path: Path):
    from functools import partial
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    from providers.local.venvs import ensure_venv, venv_python

    simple = tmp_path / "index" / "simple"
    for project, version in (("mlops-probe-a", "0.1"), ("mlops-probe-b", "0.1"), ("mlops-probe-b", "0.2")):
        _wheel(simple, project, version)
    fetched: list[str] = []
    handler = type("Logged", (SimpleHTTPRequestHandler,), {"log_message": lambda self, *a: fetched.append(self.path)})
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(tmp_path / "index")))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    index = f"http://127.0.0.1:{server.server_address[1]}/simple"
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    cache = tmp_path / "cache"

    def build(pins: list[str]) -> tuple[Path, list[str]]:
        steps: list[str] = []
        venv = ensure_venv(cache, {"python": python, "pip": pins, "pip_index_url": index}, steps.append)
        return venv, steps

    def versions(venv: Path) -> dict[str, str]:
        code = ("import importlib.metadata as m, json; print(json.dumps({d.metadata['Name']: d.version "
                "for d in m.distributions() if d.metadata['Name'].startswith('mlops-probe')}))")
        return json.loads(subprocess.run([str(venv_python(venv)), "-c", code], capture_output=True, text=True,
                                         check=True).stdout)

    try:
        first, steps = build(["mlops-probe-a==0.1", "mlops-probe-b==0.1"])
        assert not any("copying virtualenv" in s for s in steps)
        fetched.clear()
        second, steps = build(["mlops-probe-a==0.1", "mlops-probe-b==0.2"])
        assert any(f"copying virtualenv {first.name}" in s for s in steps), steps
        assert versions(second) == {"mlops-probe-a": "0.1", "mlops-probe-b": "0.2"}
        assert not any("mlops_probe_a-" in p for p in fetched), f"an unchanged package was fetched again: {fetched}"
        assert versions(first) == {"mlops-probe-a": "0.1", "mlops-probe-b": "0.1"}, "the copied venv is untouched"
        # A package dropped from the list is removed: the copy ends as a fresh build would.
        third, steps = build(["mlops-probe-a==0.1"])
        assert any("copying virtualenv" in s for s in steps) and versions(third) == {"mlops-probe-a": "0.1"}
        out = subprocess.run([str(venv_python(third)), "-c", "import mlops_runtime, uvicorn"], capture_output=True)
        assert out.returncode == 0, out.stderr
    finally:
        server.shutdown()
        server.server_close()
