"""Distinctive secret values in every secret-bearing field, then a scan of everything a user, a log
collector or another process on the machine can see: 0 hits.

Fields: explicit primary/secondary keys, a key taken from `${VAR}`, environment variable values, a
secret target setting (`writeOnly`, on the in-memory target). Outputs: validate (with a key that
is too short), plan text/JSON/markdown, apply, status, models, logs, call, error messages, every
file under .mlops/ except the key store, and the command lines of every process we started.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
from support import make_project

pytestmark = pytest.mark.slow

SECRETS = {
    "primary": "PRIMARYk3y-9f8e7d6c5b4a3210",
    "secondary": "SECONDk3y-0a1b2c3d4e5f6789",
    "from_env": "ENVk3y-5555aaaa6666bbbb",
    "env_value": "dbpass-Zq8Wm2Rt7Yp4",
    "token": "tok-Hh3Jj4Kk5Ll6Mm7",
}

MANIFEST = f"""\
version: 1
project: scan
targets:
  dev: {{provider: local}}
  mem: {{provider: memory, token: {SECRETS["token"]}}}
models:
  m: {{path: model.txt}}
environments:
  e: {{python: "3.11"}}
services:
  keyed-api:
    models: [m]
    environment: e
    source_dir: src
    entry_script: score.py
    sample_request: sample.json
    target: dev
    deploy:
      port: auto
      auth: key
      primary_key: {SECRETS["primary"]}
      secondary_key: {SECRETS["secondary"]}
      environment_variables: {{DB_PASSWORD: {SECRETS["env_value"]}}}
  env-api:
    models: [m]
    environment: e
    source_dir: src
    entry_script: score.py
    target: mem
    deploy: {{auth: key, primary_key: "${{SCAN_KEY}}"}}
"""


def shim(tmp_path: Path) -> Path:
    from gitops_shim_path import install

    return install(tmp_path)


def run(cmd: Path, *args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([str(cmd), *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=600,
                          stdin=subprocess.DEVNULL)


def hits(text: str) -> list[str]:
    return [name for name, value in SECRETS.items() if value in text]


def test_no_secret_reaches_any_output_file_or_command_line(tmp_path: Path):
    root = tmp_path / "repo"
    make_project(root, MANIFEST)
    mlops = shim(tmp_path)
    env = {**os.environ, "SCAN_KEY": SECRETS["from_env"], "MLOPS_TEST_MEMORY_STATE": str(tmp_path / "mem.pickle")}
    seen: dict[str, str] = {}

    def record(label: str, proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
        seen[label] = proc.stdout + proc.stderr
        return proc

    try:
        # A too-short key is reported without its value (with and without a newline in it).
        short = MANIFEST.replace(SECRETS["primary"], '"S3cr3t-sh\\nortk"')
        (root / "bad.yaml").write_text(short.replace(f"token: {SECRETS['token']}", "token: 12"))
        record("validate-bad", run(mlops, "validate", "-f", "bad.yaml", cwd=root, env=env))
        assert "S3cr3t" not in seen["validate-bad"] and "ortk" not in seen["validate-bad"]
        assert record("validate", run(mlops, "validate", cwd=root, env=env)).returncode == 0
        record("plan", run(mlops, "plan", cwd=root, env=env))
        record("plan-json", run(mlops, "plan", "--json", cwd=root, env=env))
        record("plan-md", run(mlops, "plan", "--format", "markdown", cwd=root, env=env))
        assert record("apply", run(mlops, "apply", "--auto-approve", cwd=root, env=env)).returncode == 0, \
            seen["apply"]
        record("status", run(mlops, "status", cwd=root, env=env))
        record("status-json", run(mlops, "status", "--json", cwd=root, env=env))
        record("models", run(mlops, "models", "--json", cwd=root, env=env))
        record("logs", run(mlops, "logs", "keyed-api", cwd=root, env=env))
        record("call", run(mlops, "call", "keyed-api", cwd=root, env=env))
        assert json.loads(seen["call"])["echo"] == {"data": [1, 2, 3]}
        # `mlops endpoint`: the URL, and a curl line that reads the key from a variable: no key printed...
        record("endpoint", run(mlops, "endpoint", "keyed-api", cwd=root, env=env))
        assert seen["endpoint"].startswith("http://127.0.0.1:") and "--show-key" in seen["endpoint"]
        curl = record("endpoint-curl", run(mlops, "endpoint", "keyed-api", "--curl", cwd=root, env=env)).stdout
        assert "$MLOPS_KEY" in curl and "--data-binary @sample.json" in curl
        answer = subprocess.run(["bash", "-c", curl], cwd=root, capture_output=True, text=True, timeout=60,
                                env={**env, "PATH": f"{mlops.parent}:{env['PATH']}"})
        assert json.loads(answer.stdout)["echo"] == {"data": [1, 2, 3]}, answer.stdout + answer.stderr
        # ...unless asked for: then the key itself, and a line that works as printed.
        key = run(mlops, "endpoint", "keyed-api", "--show-key", cwd=root, env=env).stdout
        assert key == SECRETS["primary"] + "\n"
        shown = run(mlops, "endpoint", "keyed-api", "--curl", "--show-key", cwd=root, env=env).stdout
        assert f"Authorization: Bearer {SECRETS['primary']}" in shown
        answer = subprocess.run(["bash", "-c", shown], cwd=root, capture_output=True, text=True, timeout=60)
        assert json.loads(answer.stdout)["echo"] == {"data": [1, 2, 3]}, answer.stdout + answer.stderr
        # An error that would carry the target's secret: the memory target made unreachable.
        (root / "ml.yaml").write_text(MANIFEST.replace("token:", "unreachable: true, token:"))
        record("unreachable", run(mlops, "plan", cwd=root, env=env))
        assert "unreachable" in seen["unreachable"]
        (root / "ml.yaml").write_text(MANIFEST)
        # After a change of key the plan says so, masked.
        (root / "ml.yaml").write_text(MANIFEST.replace(SECRETS["primary"], SECRETS["primary"] + "X"))
        record("plan-rotated", run(mlops, "plan", cwd=root, env=env))
        assert "(sensitive, changed)" in run(mlops, "plan", "--json", cwd=root, env=env).stdout \
            or "(sensitive)" in seen["plan-rotated"]
        (root / "ml.yaml").write_text(MANIFEST)

        leaks = {label: hits(text) for label, text in seen.items() if hits(text)}
        assert not leaks, leaks

        state = root / ".mlops"
        files = [p for p in state.rglob("*") if p.is_file() and "keys" not in p.relative_to(state).parts]
        assert files
        leaked_files = {str(p.relative_to(state)): hits(p.read_bytes().decode(errors="replace")) for p in files
                        if hits(p.read_bytes().decode(errors="replace"))}
        assert not leaked_files, leaked_files

        from providers.base import ProjectContext
        from providers.local import processes
        from providers.local.provider import MARKER, owner_of

        context = ProjectContext(project="scan", root=root, state_dir=state, cache_dir=state)
        ours = [pid for pid, _s, _v in processes.find_marked(MARKER, owner_of(context) + "/")]
        assert ours
        for pid in ours:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            environ = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
            assert not hits(cmdline), cmdline
            assert SECRETS["primary"] not in environ and SECRETS["secondary"] not in environ
    finally:
        run(mlops, "destroy", "--auto-approve", cwd=root, env=env)


# -- values taken from the environment (${VAR}) ------------------------------------------------------

FROM_ENV = {
    "SCAN_DESCRIPTION": "descr-Cc3Dd4Ee5Ff6",
    "SCAN_TAG": "tag-Gg7Hh8Ii9Jj0",
    "SCAN_INDEX_PATH": "idxtok-Pp9Qq8Rr7",
    "SCAN_PIN": "7.3.11",
    "SCAN_BASE": "base-Ss1Tt2Uu3",
    "SCAN_REGION": "region-Vv4Ww5Xx6",
    "SCAN_PORT": "47321",
    "SCAN_REPLICAS": "3",
    "SCAN_SCRIPT": "score.py",
}
"""One variable per kind of place a ``${VAR}`` can stand: model description and tags, an environment's
pip entry, index URL and base image, a target setting, deploy settings (typed and text), a service's
entry script. ``SCAN_PIN`` and ``SCAN_REPLICAS`` are short: masked where the manifest put them."""

ENV_MANIFEST = """\
version: 1
project: scan-env
public_vars: [SCAN_PUBLIC]
targets:
  mem: {provider: memory, region: "${SCAN_REGION}"}
models:
  m: {path: model.txt, description: "${SCAN_DESCRIPTION}", tags: {note: "${SCAN_TAG}", open: "${SCAN_PUBLIC}"}}
environments:
  e:
    python: "3.11"
    pip: ["scanpkg==${SCAN_PIN}"]
    pip_index_url: "https://pkgs.example.test/${SCAN_INDEX_PATH}/simple"
    base_image: "python:${SCAN_BASE}"
services:
  env-api:
    models: [m]
    environment: e
    source_dir: src
    entry_script: "${SCAN_SCRIPT}"
    target: mem
    deploy: {port: "${SCAN_PORT}", replicas: "${SCAN_REPLICAS}"}
"""


def env_hits(text: str, values: dict[str, str]) -> list[str]:
    """Which values appear: long ones anywhere, short ones as a whole word.

    ``3`` (SCAN_REPLICAS) is in every plan's summary and ``score.py`` is also the file the runtime
    names: those two are checked where they would stand (the attribute), below.
    """

    found = []
    for name, value in values.items():
        if name in ("SCAN_SCRIPT", "SCAN_REPLICAS"):
            continue
        pattern = re.escape(value) if len(value) >= 6 else rf"(?<![\w.]){re.escape(value)}(?![\w.])"
        if re.search(pattern, text):
            found.append(name)
    return found


def test_no_value_from_the_environment_reaches_any_output(tmp_path: Path):
    root = tmp_path / "repo"
    make_project(root, ENV_MANIFEST)
    mlops = shim(tmp_path)
    from github_double import GitHubDouble  # beside the shim, in tests/gitops
    summary = tmp_path / "summary.md"
    env = {**os.environ, **FROM_ENV, "SCAN_PUBLIC": "public-Yy7Zz8", "GITHUB_STEP_SUMMARY": str(summary),
           "MLOPS_TEST_MEMORY_STATE": str(tmp_path / "mem.pickle")}
    seen: dict[str, str] = {}

    def record(label: str, proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
        seen[label] = proc.stdout + proc.stderr
        return proc

    # Validation errors (a wrong type, a bad pip entry) do not echo the value either.
    (root / "bad.yaml").write_text(ENV_MANIFEST.replace('"${SCAN_REPLICAS}"', '"x${SCAN_REGION}"')
                                   .replace('"scanpkg==${SCAN_PIN}"', '"scanpkg @ ${SCAN_DESCRIPTION}"'))
    assert record("validate-bad", run(mlops, "validate", "-f", "bad.yaml", cwd=root, env=env)).returncode == 1
    assert record("validate", run(mlops, "validate", cwd=root, env=env)).returncode == 0, seen["validate"]
    record("plan", run(mlops, "plan", cwd=root, env=env))
    record("plan-json", run(mlops, "plan", "--json", cwd=root, env=env))
    record("plan-md", run(mlops, "plan", "--format", "markdown", cwd=root, env=env))
    assert record("plan-out", run(mlops, "plan", "-o", str(tmp_path / "plan.json"), cwd=root, env=env)).returncode == 0
    seen["plan-file"] = (tmp_path / "plan.json").read_text()
    # What the reviewer sees: the reference, and the public variable's value.
    assert '"${SCAN_DESCRIPTION}"' in seen["plan"] and '"scanpkg==${SCAN_PIN}"' in seen["plan"]
    assert "${SCAN_PORT}" in seen["plan"] and "${SCAN_REPLICAS}" in seen["plan"]
    assert '"entry_script": "${SCAN_SCRIPT}"' in seen["plan-json"]
    assert "public-Yy7Zz8" in seen["plan"]
    # The comment a pull request gets, through the real client against the GitHub double.
    with GitHubDouble(token="ghs-double-token") as github:
        comment_env = {**env, "GITHUB_API_URL": github.url, "GITHUB_TOKEN": "ghs-double-token"}
        proc = run(mlops, "comment", str(tmp_path / "plan.json"), "--repo", github.repository, "--pr", "5",
                   cwd=root, env=comment_env)
        assert proc.returncode == 0, proc.stderr
        seen["comment"] = "\n".join(c["body"] for c in github.comments[5])
    assert "${SCAN_TAG}" in seen["comment"]

    assert record("apply", run(mlops, "apply", "--auto-approve", cwd=root, env=env)).returncode == 0, seen["apply"]
    seen["job-summary"] = summary.read_text()
    record("status", run(mlops, "status", cwd=root, env=env))
    record("status-json", run(mlops, "status", "--json", cwd=root, env=env))
    assert "${SCAN_REGION}" in seen["status"]
    record("models", run(mlops, "models", "--json", cwd=root, env=env))
    # An error that echoes a target setting (the SDK names the region it could not reach).
    (root / "ml.yaml").write_text(ENV_MANIFEST.replace("region:", "unreachable: true, region:"))
    assert record("unreachable", run(mlops, "plan", cwd=root, env=env)).returncode == 1
    assert "${SCAN_REGION}" in seen["unreachable"]
    (root / "ml.yaml").write_text(ENV_MANIFEST)

    # A new value is still a change, shown as one, and neither value is printed.
    rotated = {**env, "SCAN_DESCRIPTION": "descr-Kk1Ll2Mm3Nn4", "SCAN_PORT": "47322"}
    proc = record("plan-rotated", run(mlops, "plan", "--detailed-exitcode", cwd=root, env=rotated))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert '~ description = "(earlier value)" -> "${SCAN_DESCRIPTION}"' in proc.stdout
    assert "deploy.port" in proc.stdout and "# forces replacement" in proc.stdout
    record("plan-rotated-json", run(mlops, "plan", "--json", cwd=root, env=rotated))
    assert run(mlops, "plan", "--detailed-exitcode", cwd=root, env=env).returncode == 0

    values = {**FROM_ENV, "ROTATED": "descr-Kk1Ll2Mm3Nn4"}
    leaks = {label: env_hits(text, values) for label, text in seen.items() if env_hits(text, values)}
    assert not leaks, leaks
    plans = [text for label, text in seen.items() if label.startswith(("plan", "comment"))]
    assert not any('"score.py"' in text for text in plans)
    assert not any(re.search(r'(replicas"?\s*[:=]\s*"?3)', text) for text in plans)
    run(mlops, "destroy", "--auto-approve", cwd=root, env=env)
