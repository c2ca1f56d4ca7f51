"""Shared pieces of the iotedge tests: the double (with or without an engine) and manifests.

Not a conftest.py (see tests/docker/docker_fixtures.py for why); test modules import from here.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import pytest
from support import echo_manifest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "doubles"))
sys.path.insert(0, str(HERE.parent / "docker"))

import iotedge_double  # noqa: E402

TARGET = ("{provider: iotedge, hub: '${IOTHUB_CONNECTION_STRING}', target_condition: \"%s\", "
          "registry: '${IOTEDGE_REGISTRY}', device_host: '{tags.host}'}")


def manifest(project: str, *, condition: str = "tags.site='plant-3'", deploy: str = "{auth: key}",
             target: str | None = None, rollout: str = "") -> str:
    """The echo project on the target ``plant3`` (devices matching ``condition``); ``rollout``: the
    service's ``rollout:`` block, indented under it."""
    return echo_manifest(project, targets={"plant3": target or TARGET % condition}, target="plant3", deploy=deploy,
                         rollout=rollout)


def set_env(monkeypatch, double: iotedge_double.Double, registry: str = "127.0.0.1:5999") -> None:
    for key, value in double.env(registry).items():
        monkeypatch.setenv(key, value)


def fleet_fixture(project: str):
    """A ``fleet`` fixture for the end-to-end tests of ``project``: the double, whose simulated devices run
    real modules in the Docker engine, its env set; the project's images removed afterwards."""

    @pytest.fixture
    def fleet(tmp_path, monkeypatch):
        from docker_fixtures import engine_and_registry_or_skip

        engine, registry = engine_and_registry_or_skip()
        with iotedge_double.running(tmp_path / "double") as double:
            set_env(monkeypatch, double, registry)
            yield double
        for image in engine.images.list(filters={"label": f"mlops.project={project}"}):
            with contextlib.suppress(Exception):   # shared by a child image: the next run reuses it
                engine.images.remove(image.id, force=True)

    return fleet
