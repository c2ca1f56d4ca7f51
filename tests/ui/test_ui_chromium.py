"""`mlops ui` in a real headless Chromium (Debian's `chromium`), against real local services:
the rows, the failing one first with its reason, the detail (plan diff, live object, log lines),
the drawn graph, no secret in the page or its JSON, and a screenshot in the test output folder."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support import copy_example, make_project, project_data

from providers.http import request

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed "
                                                              "(apt-get install chromium; .ci/run does)")
PRIMARY = "good-primary-key-0123456789abcdef"
ROTATED = "rotated-primary-key-fedcba9876543210"
TOKEN_VALUE = "env-token-very-secret-987654321"
MANIFEST = """\
version: 1
project: uidemo
models:
  m: {path: model.txt}
environments:
  e: {python: "3.11"}
services:
  alpha-api:
    models: [m]
    environment: e
    source_dir: src
    entry_script: score.py
    sample_request: sample.json
    deploy: {port: auto, auth: key, primary_key: "${ALPHA_KEY}", environment_variables: {API_TOKEN: "${API_TOKEN}"}}
  broken-api:
    models: [m]
    environment: e
    source_dir: src
    entry_script: score.py
    sample_request: sample.json
    deploy: {port: auto, auth: key}
  later-api:
    models: [m]
    environment: e
    source_dir: src
    entry_script: score.py
    deploy: {port: auto, auth: none}
"""


def _env(**extra: str) -> dict[str, str]:
    root = str(Path(__file__).resolve().parents[2])
    return {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]),
            "ALPHA_KEY": PRIMARY, "API_TOKEN": TOKEN_VALUE, **extra}


def mlops(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "planner.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600, stdin=subprocess.DEVNULL, env=_env())
    if check and proc.returncode != 0:
        raise AssertionError(f"mlops {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


@contextlib.contextmanager
def ui(cwd: Path, *args: str, **env: str):
    """`mlops ui --port 0` as a real process; yields its URL (with the token if one was given)."""
    proc = subprocess.Popen([sys.executable, "-m", "planner.cli", "ui", "--port", "0", *args], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(**env))
    try:
        line = proc.stdout.readline()
        assert "Serving the status page" in line, line + proc.stderr.read()
        yield line.split(" on ", 1)[1].split(" ", 1)[0]
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0


def chromium(url: str, profile: Path, *extra: str) -> str:
    """Chromium headless, talking to 127.0.0.1 only; returns the DOM after the page's scripts ran."""
    args = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
            f"--user-data-dir={profile}", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-pings", "--disable-domain-reliability", "--disable-features=Translate",
            "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1", "--virtual-time-budget=10000",
            "--window-size=1400,1000", *(extra or ("--dump-dom",)), url]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


_DATA_HOME: dict[str, str] = {}
"""The module's deployment outlives each test, so does its per-user data folder (records, keys, registry)."""


@pytest.fixture(autouse=True)
def _module_data_home(_isolated_cache, monkeypatch):
    if "home" in _DATA_HOME:
        monkeypatch.setenv("XDG_DATA_HOME", _DATA_HOME["home"])


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    _DATA_HOME["home"] = str(tmp_path_factory.mktemp("ui-data"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_DATA_HOME", _DATA_HOME["home"])
        yield from _deploy(tmp_path_factory)
    _DATA_HOME.clear()


def _deploy(tmp_path_factory):
    root = tmp_path_factory.mktemp("ui") / "repo"
    make_project(root, MANIFEST)
    try:
        mlops("apply", "--auto-approve", cwd=root)
        record = json.loads((project_data(root) / "local" / "broken-api.json").read_text())
        os.killpg(record["pid"], signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            rows = {r["service"]: r for r in json.loads(mlops("status", "--json", cwd=root).stdout)["services"]}
            if rows["broken-api"]["state"] == "Failed":
                break
            time.sleep(0.2)
        # later-api: a desired change not applied yet (changes pending).
        (root / "ml.yaml").write_text(MANIFEST.replace("deploy: {port: auto, auth: none}",
                                                       "deploy: {port: auto, auth: none, workers: 2}"))
        yield root
    finally:   # also when the apply itself failed: what it started goes
        mlops("destroy", "--auto-approve", cwd=root, check=False)


def secrets(root: Path) -> list[str]:
    found = [PRIMARY, ROTATED, TOKEN_VALUE]
    for keys in (project_data(root) / "keys").glob("*.json"):
        found += [v for v in json.loads(keys.read_text()).values() if isinstance(v, str) and len(v) >= 8]
    return found


def output_folder(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("MLOPS_TEST_OUTPUT") or tmp_path) / "ui"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@needs_chromium
def test_the_page_lists_every_service_failing_first_with_detail_and_no_secret(deployed: Path, tmp_path: Path):
    # The page's own process sees a rotated key: alpha-api has a pending change of a secret value.
    with ui(deployed, ALPHA_KEY=ROTATED) as url:
        dom = chromium(f"{url}#service=broken-api", tmp_path / "profile")
        state = json.loads(request(f"{url}api/state").body)
        details = {s["name"]: request(f"{url}api/service/{s['name']}").body.decode() for s in state["services"]}
        svg = request(f"{url}api/graph.svg").body.decode()
        shot = output_folder(tmp_path) / "status-page.png"
        chromium(f"{url}#service=broken-api", tmp_path / "profile2", f"--screenshot={shot}")
    # Every service, in the page, with its state; the failing one first, with its one-line reason.
    rows = [r for r in dom.split('<tr class="service')[1:]]
    names = [r.split('data-service="', 1)[1].split('"', 1)[0] for r in rows]
    assert names == ["broken-api", "alpha-api", "later-api"], (
        names, [(s["name"], s["health"], s["sync"], s["reason"]) for s in state["services"]])
    assert 'data-health="Failed"' in rows[0] and "failing" in rows[0].split(">", 1)[0]
    assert '<div class="reason">process exited' in rows[0]
    assert all('data-sync="changes pending"' in r and 'data-health="Healthy"' in r for r in rows[1:])
    assert "uidemo" in dom and "ml.yaml" in dom and 'data-count="Failed">Failed: 1' in dom
    # The detail of the failing row: its plan diff, the live object, its log lines.
    detail = dom.split('data-detail="broken-api"', 1)[1]
    assert "# service.broken-api must be replaced" in detail and "live status is Failed" in detail
    assert "&quot;status&quot;: &quot;Failed&quot;" in detail or '"status": "Failed"' in detail
    logs = detail.split('<pre class="logs">', 1)[1].split("</pre>", 1)[0]
    assert "mlops: starting" in logs
    # The graph is drawn by the server (an SVG, no CDN) with every service in it.
    assert svg.startswith("<svg") and all(f'data-address="service.{n}"' in svg for n in names)
    assert "http" not in svg.replace("http://www.w3.org/2000/svg", "")
    # No secret anywhere: page, JSON, graph.
    for text in (dom, json.dumps(state), svg, *details.values()):
        for secret in secrets(deployed):
            assert secret not in text
    # The secret change is in the plan diff, masked by the plan renderer.
    alpha = json.loads(details["alpha-api"])
    assert any("deploy.primary_key" in line and "(sensitive) -> (sensitive)" in line for line in alpha["plan"])
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


@needs_chromium
def test_the_example_manifest_is_listed_before_anything_is_deployed(tmp_path: Path):
    root = tmp_path / "example"
    root.mkdir()
    manifest = copy_example(root)
    with ui(root, "-f", manifest.name) as url:
        dom = chromium(url, tmp_path / "profile")
    assert 'data-service="diabetes-api"' in dom and 'data-health="Missing"' in dom
    assert 'data-sync="not deployed"' in dom and "diabetes" in dom


def test_a_token_guards_every_route(tmp_path: Path):
    root = tmp_path / "repo"
    make_project(root, MANIFEST.split("  broken-api:")[0])
    with ui(root, "--token", "let-me-in-0123") as url:
        assert "?token=let-me-in-0123" in url
        base = url.split("?", 1)[0]
        for path in ("", "api/state", "api/graph.svg", "api/service/alpha-api"):
            assert request(base + path).status == 401
        assert request(f"{base}api/state?token=wrong").status == 401
        assert request(f"{base}api/state", headers={"Authorization": "Bearer let-me-in-0123"}).status == 200
        assert json.loads(request(f"{base}api/state?token=let-me-in-0123").body)["project"] == "uidemo"


def test_binding_beyond_loopback_without_a_token_is_refused(tmp_path: Path):
    root = tmp_path / "repo"
    make_project(root, MANIFEST.split("  broken-api:")[0])
    env = {k: v for k, v in _env().items() if k != "MLOPS_UI_TOKEN"}
    proc = subprocess.run([sys.executable, "-m", "planner.cli", "ui", "--host", "0.0.0.0", "--port", "0"], cwd=root,
                          capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "a token is required when the page is bound beyond loopback" in proc.stderr
