"""Shared pieces of the iotedge tests: the double (with or without an engine) and manifests.

Not a conftest.py (see tests/docker/docker_fixtures.py for why); test modules import from here.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "doubles"))
sys.path.insert(0, str(HERE.parent / "docker"))

import iotedge_double  # noqa: E402

TARGET = ("{provider: iotedge, hub: '${IOTHUB_CONNECTION_STRING}', target_condition: \"%s\", "
          "registry: '${IOTEDGE_REGISTRY}', device_host: '{tags.host}'}")


def manifest(project: str, *, condition: str = "tags.site='plant-3'", deploy: str = "{auth: key}",
             target: str | None = None) -> str:
    return f"""\
version: 1
project: {project}
targets:
  plant3: {target or TARGET % condition}
models:
  m: {{path: model.txt}}
environments:
  e: {{python: "3.11"}}
services:
  echo-api:
    models: [m]
    environment: e
    source_dir: src
    entry_script: score.py
    sample_request: sample.json
    target: plant3
    deploy: {deploy}
"""


def set_env(monkeypatch, double: iotedge_double.Double, registry: str = "127.0.0.1:5999") -> None:
    for key, value in double.env(registry).items():
        monkeypatch.setenv(key, value)
