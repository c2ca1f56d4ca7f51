"""Test helpers shared by every folder: temporary git projects, an in-process CLI runner, goldens.

A plain module (not conftest) so that `from support import ...` means the same file whichever
folder pytest collects first (tests/runtime has a conftest of its own)."""

from __future__ import annotations

import io
import os
import shutil
from collections.abc import Mapping, Sequence
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import git
import pytest

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).resolve().parent / "golden"


def check_golden(name: str, actual: str) -> None:
    """Compare with tests/golden/<name>; UPDATE_GOLDEN=1 rewrites the file instead."""
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN") == "1" or not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(actual)
        if os.environ.get("UPDATE_GOLDEN") != "1":
            pytest.fail(f"golden file {path} did not exist; written now, check it in")
    assert actual == path.read_text(), f"output differs from golden file {path} (UPDATE_GOLDEN=1 to accept)"


@dataclass
class Result:
    code: int
    out: str
    err: str


def run_cli(*args: str, cwd: Path | None = None) -> Result:
    """Run `mlops ARGS` in this process (fast); stdin is not a terminal, as in CI."""
    from planner.cli import main

    out, err = io.StringIO(), io.StringIO()
    old = Path.cwd()
    try:
        if cwd:
            os.chdir(cwd)
        with redirect_stdout(out), redirect_stderr(err):
            try:
                code = main(list(args))
            except SystemExit as exc:
                code = int(exc.code or 0)
    finally:
        os.chdir(old)
    return Result(code, out.getvalue(), err.getvalue())


ECHO_SCORE = '''\
import json, os

def init():
    global prefix
    prefix = open(os.path.join(os.environ["AZUREML_MODEL_DIR"], "model.txt")).read().strip()

def run(raw_data):
    return {"model": prefix, "echo": json.loads(raw_data)}
'''


def make_project(root: Path, manifest: str, *, score: str = ECHO_SCORE, model: str = "v1\n") -> Path:
    """A git repository with a manifest, a one-file model and an entry script; returns the manifest."""
    (root / "src").mkdir(parents=True, exist_ok=True)
    (root / "src" / "score.py").write_text(score)
    (root / "model.txt").write_text(model)
    (root / "sample.json").write_text('{"data": [1, 2, 3]}\n')
    (root / "ml.yaml").write_text(manifest)
    repo = git.Repo.init(root)
    repo.git.add(A=True)
    repo.index.commit("initial")
    return root / "ml.yaml"


def echo_manifest(project: str, *, deploy: str = "{port: auto, auth: key}", model: str = "{path: model.txt}",
                  targets: Mapping[str, str] | None = None, target: str | None = None, service: str = "echo-api",
                  environment: str = '{python: "3.11"}', public_vars: Sequence[str] = (), rollout: str = "") -> str:
    """ml.yaml of the project most end-to-end tests and benchmarks deploy: one service (``echo-api``
    unless ``service`` names it; model ``m``, environment ``e``, src/score.py, sample.json: the files
    ``make_project`` writes).

    ``targets``: name -> settings in flow style (none: the default local target); ``target``: the
    service's own ``target:`` line; ``deploy``, ``model`` and ``environment``: their flow-style settings;
    ``public_vars``: the manifest's list; ``rollout``: the service's ``rollout:``
    block, as YAML already indented under the service.
    """
    lines = ["version: 1", f"project: {project}"]
    if public_vars:
        lines.append(f"public_vars: [{', '.join(public_vars)}]")
    if targets:
        lines += ["targets:", *(f"  {name}: {config}" for name, config in targets.items())]
    lines += ["models:", f"  m: {model}", "environments:", f"  e: {environment}", "services:", f"  {service}:",
              "    models: [m]", "    environment: e", "    source_dir: src", "    entry_script: score.py",
              "    sample_request: sample.json"]
    if target:
        lines.append(f"    target: {target}")
    lines.append(f"    deploy: {deploy}")
    return "\n".join(lines) + "\n" + rollout


def memory_manifest(project: str, ports: Mapping[str, int] | None = None) -> str:
    """ml.yaml of one-line services on the in-memory target ``mem`` (the ``memory_target`` fixture), each
    on its own fixed port: by default ``one-api`` on 8001 and ``two-api`` on 8002."""
    ports = {"one-api": 8001, "two-api": 8002} if ports is None else ports
    services = "".join(f"  {name}: {{models: [m], environment: e, source_dir: src, entry_script: score.py, "
                       f"deploy: {{port: {port}}}}}\n" for name, port in ports.items())
    return (f"version: 1\nproject: {project}\ntargets:\n  mem: {{provider: memory}}\n"
            f'models:\n  m: {{path: model.txt}}\nenvironments:\n  e: {{python: "3.11"}}\nservices:\n{services}')


def copy_example(dest: Path) -> Path:
    for rel in ("ml.yaml.example", "examples"):
        src = ROOT / rel
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, dest / rel)
    return dest / "ml.yaml.example"


class Background:
    """Runs ``once()`` in a loop on a thread from ``with`` to its end: the traffic every load client sends
    while something else happens (an update, a rollout), written once."""

    def __init__(self) -> None:
        import threading

        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def once(self) -> None:
        raise NotImplementedError

    def pause(self, seconds: float) -> None:
        """Sleep ``seconds``, or less when the ``with`` block ends meanwhile."""
        self._stop.wait(seconds)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.once()

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


class Hammer(Background):
    """Scores an endpoint in a loop on a thread while something else happens (an update).

    ``answers`` holds each reply's ``model`` field; ``failures`` each error or non-200 status;
    ``statuses`` each reply's status (0: no reply). ``interval``: the pause after each reply.
    """

    def __init__(self, endpoint: str, body: bytes = b'{"x": 1}', interval: float = 0.0):
        super().__init__()
        self.endpoint, self.body, self.interval = endpoint, body, interval
        self.failures: list[str] = []
        self.answers: list[str] = []
        self.statuses: list[int] = []

    def once(self) -> None:
        from providers.http import request

        try:
            reply = request(self.endpoint, data=self.body, headers={"Content-Type": "application/json"})
        except OSError as exc:
            self.failures.append(str(exc))
            self.statuses.append(0)
            return
        self.statuses.append(reply.status)
        if reply.status != 200:
            self.failures.append(f"HTTP {reply.status}")
        else:
            self.answers.append(reply.json()["model"])
        if self.interval:
            self.pause(self.interval)


FAILS_ONE_IN_FIVE = '''

count = 0
_run = run


def run(raw_data):
    global count
    count += 1
    if count % 5 == 0:
        raise RuntimeError("one in five fails")
    return _run(raw_data)
'''
"""Appended to a score.py: its ``run`` raises (a 500) on every fifth call: the candidate a rollout rolls back."""


def apply_interrupted(*args: str, cwd: Path, once: str, timeout: float = 300) -> tuple[int, str, str]:
    """``mlops apply --auto-approve ARGS`` in its own process, sent SIGINT (Ctrl-C) once a line of its output
    says ``once``: (its exit code, all its output, its errors). For the tests of a rollback on Ctrl-C."""
    import signal
    import subprocess
    import sys
    import time

    proc = subprocess.Popen([sys.executable, "-m", "planner.cli", "apply", "--auto-approve", *args], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    try:
        seen = []
        deadline = time.monotonic() + timeout
        for line in proc.stdout:   # type: ignore[union-attr]
            seen.append(line)
            if once in line or time.monotonic() > deadline:
                break
        assert any(once in ln for ln in seen), "".join(seen)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, "".join(seen) + out, err


def project_data(where: Path) -> Path:
    """The per-user data folder of the project of manifest ``where`` (or of ``where/ml.yaml``): where
    the local engines keep records (``local/``), port keepers (``ports/``), logs and keys (``keys/``)."""
    import yaml

    from providers.userdata import project_data_dir

    manifest = where if where.is_file() else where / "ml.yaml"
    return project_data_dir(yaml.safe_load(manifest.read_text())["project"])
