"""What a service process can see and use on the local target: no keys in its environment, the
source it runs is the applied snapshot (not the work tree), and memory_gb caps its memory."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from support import make_project

pytestmark = pytest.mark.slow

SCORE = '''\
import json, os, resource

def init():
    pass

def run(raw):
    request = json.loads(raw)
    if request.get("grow_mb"):
        blob = bytearray(request["grow_mb"] << 20)     # more than memory_gb allows
        return {"grew": len(blob)}
    environ = open("/proc/self/environ", "rb").read().decode(errors="replace")
    return {"environ": environ, "cwd": os.getcwd(), "here": os.path.dirname(os.path.abspath(__file__)),
            "data_limit": resource.getrlimit(resource.RLIMIT_DATA)[0]}
'''

MANIFEST = """\
version: 1
project: secrets
models:
  m: {path: model.txt}
environments:
  e: {python: "3.11"}
services:
  probe-api:
    models: [m]
    environment: e
    source_dir: src
    entry_script: score.py
    deploy: {port: auto, auth: key, primary_key: "pk-7f3a9c1e5b2d4f6a8c0e", memory_gb: 0.5}
"""


def mlops(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "planner.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600, stdin=subprocess.DEVNULL)


def test_keys_are_not_in_the_environment_and_the_snapshot_runs(tmp_path: Path):
    root = tmp_path / "repo"
    make_project(root, MANIFEST, score=SCORE)
    try:
        applied = mlops("apply", "--auto-approve", cwd=root)
        assert applied.returncode == 0, applied.stderr
        called = mlops("call", "probe-api", "--data", "{}", cwd=root)
        assert called.returncode == 0, called.stderr
        answer = json.loads(called.stdout)
        assert "pk-7f3a9c1e5b2d4f6a8c0e" not in answer["environ"]
        assert "MLOPS_PRIMARY_KEY" not in answer["environ"]
        assert answer["here"].startswith(str(root / ".mlops" / "sources")), answer["here"]
        assert not (root / "src" / "__pycache__").exists(), "the work tree must stay clean"
        assert answer["data_limit"] == int(0.5 * (1 << 30))
        # An edit that was never applied is not what runs, even after the worker restarts.
        (root / "src" / "score.py").write_text(SCORE.replace("def init():", "def init():\n    raise SystemExit(9)"))
        grown = mlops("call", "probe-api", "--data", '{"grow_mb": 2048}', cwd=root)
        assert grown.returncode == 1 and "HTTP 500" in grown.stderr   # the allocation fails: MemoryError
        again = mlops("call", "probe-api", "--data", "{}", cwd=root)
        assert again.returncode == 0, again.stderr
    finally:
        mlops("destroy", "--auto-approve", cwd=root)


# -- credentials in URLs ---------------------------------------------------------------------------

URL_SECRETS = {"path": "Ab12Cd34Ef56Gh78Ij90", "query": "qTok-5566778899", "user": "tokUser7788",
               "arm": "armPASS-4455"}


def url_hits(text: str) -> list[str]:
    return [name for name, value in URL_SECRETS.items() if value in text]


def test_index_and_arm_urls_are_masked_in_every_output(tmp_path: Path):
    """A token in an index URL's path or query, and a password in arm_endpoint: never printed."""
    root = tmp_path / "repo"
    make_project(root, f"""\
version: 1
project: urls
models:
  m: {{path: model.txt}}
environments:
  e: {{python: "3.11", pip_index_url: "https://pypi.fury.io/{URL_SECRETS['path']}/acme/?token={URL_SECRETS['query']}"}}
services:
  url-api: {{models: [m], environment: e, source_dir: src, entry_script: score.py}}
""")
    outputs = {}
    for fmt in ("text", "json", "markdown"):
        proc = mlops("plan", "--format", fmt, cwd=root)
        assert proc.returncode == 0, proc.stderr
        outputs[f"plan-{fmt}"] = proc.stdout + proc.stderr
    assert mlops("plan", "-o", "plan.json", cwd=root).returncode == 0
    outputs["plan-file"] = (root / "plan.json").read_text()
    assert "https://pypi.fury.io/(sensitive)/acme/?token=(sensitive)" in outputs["plan-text"]
    # A bad index URL is refused without echoing its credentials.
    (root / "ml.yaml").write_text((root / "ml.yaml").read_text().replace(
        "https://pypi.fury.io", f"http://{URL_SECRETS['user']}@pypi.fury.io"))
    outputs["validate-index"] = mlops("validate", cwd=root).stderr
    assert "pip_index_url" in outputs["validate-index"]
    # An arm_endpoint with a password: the error that names it (nothing listens on port 9) masks it.
    (root / "aci.yaml").write_text(f"""\
version: 1
project: urls
targets:
  cloud: {{provider: aci, subscription_id: "00000000-0000-0000-0000-000000000000", resource_group: rg,
          location: westeurope, registry: "127.0.0.1:5000",
          arm_endpoint: "https://deployer:{URL_SECRETS['arm']}@127.0.0.1:9/"}}
models:
  m: {{path: model.txt}}
environments:
  e: {{python: "3.11"}}
services:
  url-api: {{models: [m], environment: e, source_dir: src, entry_script: score.py, target: cloud}}
""")
    proc = mlops("plan", "-f", "aci.yaml", cwd=root)
    assert proc.returncode == 1 and "arm_endpoint" in proc.stderr, proc.stderr
    outputs["arm"] = proc.stdout + proc.stderr
    (root / "aci.yaml").write_text((root / "aci.yaml").read_text().replace("https://", "ftp://"))
    outputs["validate-arm"] = mlops("validate", "-f", "aci.yaml", cwd=root).stderr
    assert "arm_endpoint" in outputs["validate-arm"]
    leaks = {label: url_hits(text) for label, text in outputs.items() if url_hits(text)}
    assert not leaks, leaks


def test_import_warnings_mask_index_passwords(tmp_path: Path, monkeypatch):
    from planner.importers.azureml_v1 import import_v1

    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "score.py").write_text("def init(): pass\ndef run(raw): return raw\n")
    (tmp_path / "model.pkl").write_text("m")
    entry = f"--extra-index-url https://deployer:{URL_SECRETS['arm']}@pkgs.example.test/simple"
    (tmp_path / "inferenceconfig.json").write_text(json.dumps({
        "entryScript": "score.py", "sourceDirectory": "./src",
        "environment": {"name": "env", "python": {"condaDependencies": {"dependencies": [
            "python=3.11", {"pip": ["numpy", entry, f"private-pkg @ https://pkgs.example.test/"
                                                     f"{URL_SECRETS['path']}/p-1.0-py3-none-any.whl"]}]}}}}))
    (tmp_path / "deploymentconfig.json").write_text(json.dumps({"computeType": "local", "port": 32267}))
    monkeypatch.chdir(tmp_path)
    result = import_v1(inference_config=Path("inferenceconfig.json"), deploy_configs=[Path("deploymentconfig.json")],
                       models=["m=model.pkl"], service="url-api", output=tmp_path / "ml.yaml",
                       deploy_fields=lambda config: frozenset({"port"}))
    shown = "\n".join(result.warnings)
    assert "pkgs.example.test" in shown and "(sensitive)" in shown
    assert not url_hits(shown + result.text), shown
