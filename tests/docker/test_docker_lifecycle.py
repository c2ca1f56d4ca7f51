"""The example's whole life on `engine: docker`, through the real CLI and a real engine: build,
run, score, re-plan, a score.py change (package layer reused), a package change (full rebuild),
destroy (nothing of ours left, other containers untouched)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import git
import pytest
from docker_fixtures import commit_all, containers_of, engine, images_of, project_name  # noqa: F401
from support import copy_example, project_data, run_cli

from planner.build import build_log, build_services
from planner.project import Project
from providers.images.recipe import DEFAULT_BASE_IMAGE

pytestmark = pytest.mark.docker

MANIFEST = """\
version: 1
project: {project}
targets:
  box: {{provider: local, engine: docker}}
models:
  ridge: {{path: examples/diabetes/model.pkl}}
environments:
  sklearn: {{python: "3.11", pip: [{pip}]}}
services:
  diabetes-api:
    models: [ridge]
    environment: sklearn
    source_dir: examples/diabetes/src
    entry_script: score.py
    sample_request: examples/diabetes/sample-request.json
    target: box
    deploy: {{port: auto, auth: key, cpu: 1, memory_gb: 1}}
"""
PIP = "scikit-learn==1.9.1, joblib>=1.3"


def example_project(root: Path, project: str) -> Path:
    root.mkdir(parents=True)
    copy_example(root)
    manifest = root / "ml.yaml"
    manifest.write_text(MANIFEST.format(project=project, pip=PIP))
    repo = git.Repo.init(root)
    repo.git.add(A=True)
    repo.index.commit("example on docker")
    return manifest


def ok(*args: str) -> str:
    result = run_cli(*args)
    assert result.code == 0, f"mlops {' '.join(args)} exited {result.code}\n{result.out}\n{result.err}"
    return result.out


def service_status(manifest: Path) -> dict:
    rows = json.loads(ok("status", "--json", "-f", str(manifest)))["services"]
    return {r["service"]: r for r in rows}["diabetes-api"]


def running_container(engine, project: str):  # noqa: F811 - the fixture, passed through
    found = containers_of(engine, project, all=False)
    assert len(found) == 1, [c.name for c in found]
    return found[0]


def layers(engine, image_id: str) -> list[str]:  # noqa: F811
    return engine.images.get(image_id).attrs["RootFS"]["Layers"]


def pip_step_cached(log: list[str]) -> bool:
    """Whether the build log shows the package step answered from the layer cache."""
    for i, line in enumerate(log):
        if re.match(r"Step \d+/\d+ : RUN .*pip install", line):
            return i + 1 < len(log) and "Using cache" in log[i + 1]
    raise AssertionError("no pip install step in the build log:\n" + "\n".join(log))


def test_example_lifecycle_on_docker(tmp_path: Path, engine, project_name):  # noqa: F811
    manifest = example_project(tmp_path / "repo", project_name)
    f = ["-f", str(manifest)]
    head = git.Repo(manifest.parent).head.commit.hexsha

    # mlops build: one content-addressed image with our labels, streamed as steps.
    steps: list[tuple[str, str]] = []
    built = build_services(Project.load(manifest), [], lambda svc, step: steps.append((svc, step)))
    assert [b.service for b in built] == ["diabetes-api"] and built[0].built
    assert any("step 1/" in s for _, s in steps) and all(svc == "diabetes-api" for svc, _ in steps)
    image = engine.images.get(built[0].image)
    tag = built[0].image.rsplit(":", 1)[1]
    assert built[0].image == f"{project_name}/diabetes-api:{tag}"
    assert image.labels["mlops.project"] == project_name
    assert image.labels["mlops.service"] == "diabetes-api"
    assert image.labels["mlops.fingerprint"] == tag
    assert image.labels["mlops.git-commit"] == head
    again = build_services(Project.load(manifest), ["diabetes-api"], lambda *_: None)
    assert not again[0].built and again[0].image_id == built[0].image_id, "an unchanged service must not rebuild"

    # apply: a healthy container with our labels, host networking, limits, health check, restart policy.
    out = ok("apply", "--auto-approve", *f)
    assert "Apply complete! Resources: 3 added" in out
    assert service_status(manifest)["state"] == "Healthy"
    c = running_container(engine, project_name)
    host = c.attrs["HostConfig"]
    assert host["NetworkMode"] == "host"
    assert host["RestartPolicy"]["Name"] == "unless-stopped"
    assert host["NanoCpus"] == 10**9 and host["Memory"] == 1 << 30
    assert c.attrs["Config"]["Healthcheck"]["Test"][0] == "CMD"
    assert c.attrs["Image"] == built[0].image_id, "apply must run the image `mlops build` made"
    keys = json.loads((project_data(manifest) / "keys" / "diabetes-api.json").read_text())
    env = dict(e.split("=", 1) for e in c.attrs["Config"]["Env"])
    assert not any(keys["primary"] in v or keys["secondary"] in v for v in env.values()), \
        "keys stay out of the container's environment (docker inspect shows it)"
    mounts = {m["Destination"]: m for m in c.attrs["Mounts"]}
    assert env["MLOPS_KEYS_FILE"] == "/run/mlops-keys.json" and mounts["/run/mlops-keys.json"]["RW"] is False
    assert json.loads(Path(mounts["/run/mlops-keys.json"]["Source"]).read_text()) == keys
    assert oct(Path(mounts["/run/mlops-keys.json"]["Source"]).parent.stat().st_mode & 0o777) == "0o700"
    assert env["AZUREML_MODEL_DIR"] == "/var/azureml-app/azureml-models/ridge/1"
    assert not any(keys["primary"] in v or keys["secondary"] in v for v in c.labels.values())

    # score it through the CLI (the key is sent, never shown), and the logs show the request.
    scored = json.loads(ok("call", "diabetes-api", *f))
    assert len(scored["predictions"]) == 2 and all(isinstance(p, float) for p in scored["predictions"])
    logs = ok("logs", "diabetes-api", *f)
    assert "path=/score status=200" in logs and keys["primary"] not in logs

    # re-plan: nothing to do.
    assert run_cli("plan", "--detailed-exitcode", *f).code == 0

    # score.py changes: only the top layers are rebuilt, the package layer is reused.
    old_id = c.attrs["Image"]
    old_layers = layers(engine, old_id)
    score = manifest.parent / "examples/diabetes/src/score.py"
    score.write_text(score.read_text().replace('{"predictions": model.predict(data).tolist()}',
                                               '{"predictions": model.predict(data).tolist(), "rows": len(data)}'))
    commit_all(manifest.parent, "score.py returns the row count")
    planned = run_cli("plan", "--detailed-exitcode", *f)
    assert planned.code == 2 and "service.diabetes-api" in planned.out
    ok("apply", "--auto-approve", *f)
    c2 = running_container(engine, project_name)
    assert c2.id != c.id and c2.attrs["Image"] != old_id
    new_layers = layers(engine, c2.attrs["Image"])
    assert new_layers[:2] == old_layers[:2], "base and package layers must be reused after a score.py change"
    assert new_layers[-1] != old_layers[-1]
    assert pip_step_cached(list(build_log(Project.load(manifest), "diabetes-api")))
    assert json.loads(ok("call", "diabetes-api", *f))["rows"] == 2
    assert old_id not in {i.id for i in images_of(engine, project_name)}, "the retired image is removed"
    assert service_status(manifest)["state"] == "Healthy"

    # a package changes: the package layer is rebuilt.
    manifest.write_text(MANIFEST.format(project=project_name, pip=PIP + ", six==1.16.0"))
    commit_all(manifest.parent, "add a package")
    ok("apply", "--auto-approve", *f)
    c3 = running_container(engine, project_name)
    assert layers(engine, c3.attrs["Image"])[1] != new_layers[1], "a package change must rebuild the venv layer"
    log = list(build_log(Project.load(manifest), "diabetes-api"))
    assert not pip_step_cached(log) and any("six" in line for line in log if "Successfully installed" in line)
    assert run_cli("plan", "--detailed-exitcode", *f).code == 0

    # destroy: nothing of ours left; a container that is not ours keeps running.
    other = engine.containers.run(DEFAULT_BASE_IMAGE, ["sleep", "300"], detach=True, network_mode="host",
                                  name=f"not-ours-{project_name}")
    try:
        out = ok("destroy", "--auto-approve", *f)
        assert "Destroy complete!" in out
        assert containers_of(engine, project_name) == []
        assert images_of(engine, project_name) == []
        other.reload()
        assert other.status == "running"
        assert run_cli("status", "--json", *f).code == 0 and service_status(manifest)["state"] == "NotDeployed"
    finally:
        other.remove(force=True)
