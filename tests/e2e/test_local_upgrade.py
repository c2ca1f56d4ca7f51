"""An upgrade never orphans a running local service.

Versions before the per-user data folder (providers/userdata.py) kept the local engine's records,
port keepers and keys in the checkout's ``.mlops``. A service deployed by such a version (the real
code of the commit before that folder existed, taken from this repository's history) must be seen
by the new one: it is planned as it runs (not created again) and its keys still work; the next
apply that changes it takes it over on the same port with the same keys, moving its record to
the data folder; destroy leaves nothing running.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from io import BytesIO
from pathlib import Path

import pytest
from crash_harness import listeners, mlops, our_processes
from support import echo_manifest, make_project, project_data

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]

MANIFEST = echo_manifest("upgrade")


def _old_version(dest: Path) -> Path:
    """The planner and providers of the commit before the data folder was introduced."""
    def git(*args: str) -> bytes:
        return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, check=True).stdout

    try:
        added = git("log", "--diff-filter=A", "--format=%H", "--", "providers/userdata.py").split()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("needs this repository's git history")
    if not added:
        pytest.skip("providers/userdata.py is not committed yet")
    archive = git("archive", "--format=tar", f"{added[-1].decode()}^", "planner", "providers")
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(dest, filter="data")
    return dest


def _old_mlops(old: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "planner.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600, stdin=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(old)})


def _row(root: Path) -> dict:
    [row] = json.loads(mlops("status", "--json", cwd=root).stdout)["services"]
    return row


def _call(root: Path) -> str:
    result = mlops("call", "echo-api", "--data", '{"x": 1}', cwd=root)
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)["model"]


def test_a_service_deployed_by_an_earlier_version_is_kept_and_taken_over(tmp_path: Path):
    old = _old_version(tmp_path / "old")
    root = tmp_path / "repo"
    make_project(root, MANIFEST)
    legacy, data = root / ".mlops", project_data(root)
    try:
        deployed = _old_mlops(old, "apply", "--auto-approve", cwd=root)
        assert deployed.returncode == 0, deployed.stdout + deployed.stderr
        assert (legacy / "local" / "echo-api.json").exists() and not (data / "local").exists()
        keys = json.loads((legacy / "keys" / "echo-api.json").read_text())
        before = _row(root)

        # The new version sees the old service as it is (its keys still work): never a second one
        # beside it. (Nothing to do at all unless the scoring runtime changed between the versions.)
        plan = mlops("plan", "--json", cwd=root)
        changes = {c["address"]: c["change"]["actions"] for c in json.loads(plan.stdout)["resource_changes"]}
        assert changes["service.echo-api"] in (["no-op"], ["update"]), changes
        assert before["state"] == "Healthy" and _call(root) == "v1"

        # A change: the new instance takes the old one's port (its keeper) and keys; the record moves.
        (root / "model.txt").write_text("v2\n")
        applied = mlops("apply", "--auto-approve", cwd=root)
        assert applied.returncode == 0, applied.stdout + applied.stderr
        after = _row(root)
        assert after["state"] == "Healthy" and after["endpoint"] == before["endpoint"]
        assert _call(root) == "v2" and listeners(int(after["endpoint"].rsplit(":", 1)[1].split("/")[0])) == 1
        assert json.loads((data / "keys" / "echo-api.json").read_text()) == keys
        assert (data / "local" / "echo-api.json").exists() and not (legacy / "local" / "echo-api.json").exists()
        assert len(our_processes(legacy)["instances"]) == 1
        assert mlops("plan", "--detailed-exitcode", cwd=root).returncode == 0
    finally:
        mlops("destroy", "--auto-approve", cwd=root)
    assert our_processes(legacy) == {"instances": [], "keepers": []}
