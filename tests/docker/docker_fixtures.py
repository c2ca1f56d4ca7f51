"""Fixtures for tests against a real Docker engine (started by `.ci/docker-up.sh`).

Not a conftest.py: test folders here have no __init__.py, so a second conftest would replace
the top one in sys.modules and break `from support import ...` in folders collected later.
Test modules import these fixtures by name instead.

Every test gets its own project name, so its containers and images are told apart by label, and
a safety net removes whatever a failing test left behind (by that label only: other containers
and images on the engine are never touched).
"""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path
from typing import Any

import pytest
from support import echo_manifest

from providers.images.recipe import DEFAULT_BASE_IMAGE


def _engine_or_skip():
    reason = os.environ.get("MLOPS_DOCKER_UNAVAILABLE")
    if reason:
        pytest.skip(f"no Docker engine: {reason}")
    try:
        import docker
    except ImportError:
        pytest.skip("no Docker engine: the `docker` Python package is not installed")
    try:
        cli = docker.from_env(timeout=30)
        cli.ping()
    except Exception as exc:
        where = os.environ.get("DOCKER_HOST") or "the default socket (DOCKER_HOST not set)"
        pytest.skip(f"no Docker engine reachable at {where}: {type(exc).__name__}; "
                    'run eval "$(bash .ci/docker-up.sh)" first')
    try:
        cli.images.get(DEFAULT_BASE_IMAGE)
    except docker.errors.ImageNotFound:
        pytest.skip(f"Docker engine has no {DEFAULT_BASE_IMAGE}; run bash .ci/docker-up.sh to build it")
    return cli


@pytest.fixture(scope="session")
def engine():
    """The docker SDK client for DOCKER_HOST; skips (with the reason) when there is none."""
    return _engine_or_skip()


def registry_or_skip() -> str:
    """The local registry (MLOPS_TEST_REGISTRY); skips, saying how to start one, when there is none."""
    value = os.environ.get("MLOPS_TEST_REGISTRY")
    if not value:
        pytest.skip("no local registry: MLOPS_TEST_REGISTRY is not set (run .ci/docker-up.sh)")
    return value


def engine_and_registry_or_skip() -> tuple[Any, str]:
    """The Docker engine and the local registry, or a skip naming the one missing: what every test whose
    images are pushed and run elsewhere (Kubernetes, IoT Edge, ACI doubles) needs first."""
    return _engine_or_skip(), registry_or_skip()


@pytest.fixture
def registry() -> str:
    return registry_or_skip()


@pytest.fixture
def project_name(engine) -> str:
    """A project name unique to this test; everything it leaves behind is removed afterwards."""
    name = f"dt-{uuid.uuid4().hex[:10]}"
    yield name
    label = f"mlops.project={name}"
    for c in engine.containers.list(all=True, filters={"label": label}):
        c.remove(force=True)
    for image in engine.images.list(all=True, filters={"label": label}):
        with contextlib.suppress(Exception):  # already gone with a parent
            engine.images.remove(image.id, force=True)


def docker_manifest(project: str, *, pip: str = "[]", deploy: str = "{port: auto, auth: key}",
                    registry: str | None = None, python: str = "3.11") -> str:
    target = "{provider: local, engine: docker" + (f", registry: {registry}" if registry else "") + "}"
    return echo_manifest(project, targets={"box": target}, target="box", deploy=deploy,
                         environment=f'{{python: "{python}", pip: {pip}}}')


def containers_of(engine, project: str, *, all: bool = True) -> list:
    return engine.containers.list(all=all, filters={"label": f"mlops.project={project}"})


def images_of(engine, project: str) -> list:
    return engine.images.list(all=True, filters={"label": f"mlops.project={project}"})


def commit_all(root: Path, message: str) -> None:
    import git

    repo = git.Repo(root)
    repo.git.add(A=True)
    repo.index.commit(message)
