"""Plans that tell the truth on any machine (issue 18), end to end.

Checkout A applies. Checkout B of the same commit (a new folder, an empty HOME, data folder and
cache, no .mlops/) reads the same registry: it plans no model or environment change and lists the
same versions. B changes the model's bytes: it plans ``ridge: 1 -> 2``.

- Local process engine: B applies (its service runs the files pulled from the registry by digest);
  A, after pulling, plans nothing for the model. This engine keeps each checkout's processes apart
  on purpose (providers/local: owner_of), so each side's own service is its only other change.
- Docker engine, whose containers every checkout sees: B's plan is empty (exit 0). The port keeper
  of a service belongs to the checkout that started it (providers/local/ports.py), so here A (the
  deployer) applies B's commit, and then both A and B plan nothing (exit 0).
- ACI and IoT Edge (real SDKs against their doubles) and Kubernetes (a real control plane), set up
  as in the provider contract: B's plan is empty, B applies version 2, A after pulling plans nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

import git
import pytest
from registry_fixtures import remote_url
from support import make_project, run_cli

ECHO = '''\
import json, os

def init():
    global prefix
    prefix = open(os.path.join(os.environ["AZUREML_MODEL_DIR"], "model.txt")).read().strip()

def run(raw_data):
    return {"model": prefix}
'''


def manifest(project: str, url: str, target: str, deploy: str = "{auth: none}") -> str:
    return f"""\
version: 1
project: {project}
registry: {{url: "{url}", settle_seconds: 1}}
targets:
  box: {target}
models:
  ridge: {{path: model.txt, description: the model}}
environments:
  e: {{python: "3.11"}}
services:
  echo-api: {{models: [ridge], environment: e, source_dir: src, entry_script: score.py, sample_request: sample.json,
             target: box, deploy: {deploy}}}
"""


class Machine:
    """A checkout and the per-user folders of whoever runs it (HOME, data, cache)."""

    def __init__(self, root: Path, home: Path, monkeypatch, venv_cache: Path):
        self.root, self.home, self.monkeypatch, self.venv_cache = root, home, monkeypatch, venv_cache

    def use(self, *, empty_cache: bool = False) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self.monkeypatch.setenv("HOME", str(self.home))
        self.monkeypatch.setenv("XDG_DATA_HOME", str(self.home / ".local" / "share"))
        self.monkeypatch.setenv("MLOPS_CACHE_DIR", str(self.home / ".cache" / "mlops") if empty_cache
                                else str(self.venv_cache))

    def cli(self, *args: str, empty_cache: bool = False):
        self.use(empty_cache=empty_cache)
        return run_cli(*args, "-f", str(self.root / "ml.yaml"))

    def plan(self, *, empty_cache: bool = False) -> tuple[int, dict[str, list[str]], str]:
        result = self.cli("plan", "--detailed-exitcode", "--json", empty_cache=empty_cache)
        assert result.code in (0, 2), result.err
        data = json.loads(result.out)
        return result.code, {c["address"]: c["change"]["actions"] for c in data["resource_changes"]}, result.out

    def models(self) -> dict:
        result = self.cli("models", "--json", empty_cache=True)
        assert result.code == 0, result.err
        return json.loads(result.out)


def changed(actions: dict[str, list[str]]) -> set[str]:
    return {address for address, steps in actions.items() if steps != ["no-op"]}


def two_checkouts(tmp_path: Path, monkeypatch, text: str, venv_cache: Path) -> tuple[Machine, Machine]:
    a_root = tmp_path / "a"
    make_project(a_root, text, score=ECHO, model="one\n")
    git.Repo(a_root).git.branch("-M", "main")
    b_root = tmp_path / "b"
    git.Repo.clone_from(a_root, b_root)
    assert not (b_root / ".mlops").exists()
    return (Machine(a_root, tmp_path / "home-a", monkeypatch, venv_cache),
            Machine(b_root, tmp_path / "home-b", monkeypatch, venv_cache))


def scenario(tmp_path: Path, monkeypatch, shared_cache: Path, project: str, target: str, *,
             services_shared: bool, b_applies: bool = True, deploy: str = "{auth: none}") -> None:
    a, b = two_checkouts(tmp_path, monkeypatch, manifest(project, remote_url(), target, deploy), shared_cache)
    try:
        assert a.cli("apply", "--auto-approve").code == 0
        a_models = a.models()
        assert [(m["name"], m["current_version"]) for m in a_models["models"]] == [("ridge", 1)]

        # B: same commit, nothing of A's on disk.
        code, actions, _ = b.plan(empty_cache=True)
        assert actions["model.ridge"] == ["no-op"] and actions["environment.e"] == ["no-op"]
        if services_shared:
            assert code == 0 and changed(actions) == set()
        else:
            assert changed(actions) == {"service.echo-api"}
        assert b.models() == a_models

        # B changes the model's bytes: ridge 1 -> 2, applied from B.
        (b.root / "model.txt").write_text("two\n")
        repo_b = git.Repo(b.root)
        repo_b.git.add(A=True)
        repo_b.index.commit("new model bytes")
        code, actions, text = b.plan(empty_cache=True)
        assert code == 2 and actions["model.ridge"] == ["update"]
        change = next(c for c in json.loads(text)["resource_changes"] if c["address"] == "model.ridge")
        assert (change["change"]["before"]["version"], change["change"]["after"]["version"]) == (1, 2)
        if b_applies:
            result = b.cli("apply", "--auto-approve")
            assert result.code == 0, result.err
            assert b.cli("plan", "--detailed-exitcode").code == 0
            answer = b.cli("call", "echo-api")
            assert answer.code == 0 and '"two"' in answer.out, answer.out + answer.err

        # A pulls B's commit: its plan agrees with what B applied.
        git.Repo(a.root).git.pull(str(b.root), "main")
        if not b_applies:
            # The docker engine's port keeper of a service belongs to the checkout that started it
            # (providers/local/ports.py), so the deployer applies; B must then plan nothing.
            result = a.cli("apply", "--auto-approve")
            assert result.code == 0, result.err
            answer = a.cli("call", "echo-api")
            assert answer.code == 0 and '"two"' in answer.out, answer.out + answer.err
            code, actions, _ = b.plan(empty_cache=True)
            assert code == 0 and changed(actions) == set()
        code, actions, _ = a.plan()
        assert actions["model.ridge"] == ["no-op"] and actions["environment.e"] == ["no-op"]
        if services_shared:
            assert code == 0 and changed(actions) == set()
        else:
            assert changed(actions) == {"service.echo-api"}     # A's own process still runs version 1
        assert a.models() == b.models()
        versions = a.models()["models"][0]["versions"]
        assert [v["version"] for v in versions] == [1, 2]
        assert versions[1]["git_commit"] == repo_b.head.commit.hexsha
    finally:
        for machine in (a, b):
            machine.cli("destroy", "--auto-approve")


def test_local_process_checkouts_share_models_and_environments(tmp_path, monkeypatch, shared_cache):
    scenario(tmp_path, monkeypatch, shared_cache, "twolocal", "{provider: local}", services_shared=False)


def test_docker_checkouts_plan_the_same(tmp_path, monkeypatch, shared_cache):
    from docker_fixtures import _engine_or_skip

    engine = _engine_or_skip()
    project = "two-docker"
    try:
        scenario(tmp_path, monkeypatch, shared_cache, project, "{provider: local, engine: docker}",
                 services_shared=True, b_applies=False)
    finally:
        for c in engine.containers.list(all=True, filters={"label": f"mlops.project={project}"}):
            c.remove(force=True)


@pytest.fixture(autouse=True)
def _docker_fixtures_on_path():
    import sys

    folder = str(Path(__file__).resolve().parent.parent / "docker")
    sys.path.insert(0, folder)
    yield
    sys.path.remove(folder)


@pytest.mark.parametrize("kind", ["aci", "iotedge", "kubernetes"])
def test_cloud_kind_checkouts_plan_the_same(kind, tmp_path, monkeypatch, shared_cache):
    """ACI and IoT Edge through the real SDK against their doubles, Kubernetes against its control plane."""
    import sys
    import uuid

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "contract"))
    from test_provider_contract import KINDS

    contract = KINDS[kind]
    deploy = "{" + ", ".join(f"{k}: {v}" for k, v in {**contract.deploy, "auth": "none"}.items()) + "}"
    with contract.setup(tmp_path) as env:
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        scenario(tmp_path, monkeypatch, shared_cache, f"two-{kind[:4]}-{uuid.uuid4().hex[:6]}", contract.target,
                 services_shared=True, deploy=deploy)
