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
