"""Targets are read in parallel threads and load their SDKs lazily. Two threads importing two SDKs
that share a dependency at the same moment deadlocked Python's import locks, which Python breaks
by handing one thread a partially initialised module: `mlops plan` on the ACI example failed with
"needs the Azure SDK" (requests.utils partially initialised) or "module 'requests' has no attribute
'exceptions'" whenever the kubernetes plugin, the docker client and the Azure SDK loaded at once.

Each trial is a fresh interpreter (nothing imported yet) whose threads start together."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

TRIAL = r"""
import threading, traceback
from providers import registry

barrier = threading.Barrier(3)
failed = []

def run(what):
    barrier.wait()
    try:
        what()
    except Exception:
        failed.append(traceback.format_exc(limit=3))

def docker_client():
    from providers.images import engine
    try:
        engine.client(timeout=1)
    except Exception as exc:      # no engine here is fine: the import is what is tested
        if "no Docker engine reachable" not in str(exc):
            raise

def azure_login():      # the ACI target's connect: imports the Azure SDK, then reads the cloud metadata
    from providers.aci import arm
    try:
        arm.connect({"arm_endpoint": "https://127.0.0.1:9", "subscription_id": "s"}, "target 't' (aci)")
    except Exception as exc:   # nothing listens there: the metadata read fails, after the imports
        if "cannot read the cloud metadata" not in str(exc):
            raise

threads = [threading.Thread(target=run, args=(f,)) for f in
           (lambda: registry.load("kubernetes"), docker_client, azure_login)]
for t in threads: t.start()
for t in threads: t.join()
print("FAILED" if failed else "OK")
print("\n".join(failed))
"""


@pytest.mark.parametrize("trial", range(6))
def test_sdks_imported_by_parallel_threads_load_whole(trial, tmp_path):
    pytest.importorskip("azure.mgmt.containerinstance")
    pytest.importorskip("kubernetes")
    done = subprocess.run([sys.executable, "-c", TRIAL], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "DOCKER_HOST": f"unix://{tmp_path}/none.sock",
                               "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("OK"), done.stdout[-3000:]
