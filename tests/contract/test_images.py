"""The image capability is one shared piece: every kind that runs images has it, none copies it.

Fast (no engine): the engine-backed part, building for every such kind, is in the contract suite.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from support import make_project, run_cli

from providers.base import BuildsImages
from providers.images import ImageTarget
from providers.registry import provider_class

ROOT = Path(__file__).resolve().parents[2]
IMAGE_KINDS = {
    "docker": {"provider": "local", "engine": "docker"},
    "aci": {"provider": "aci"},
    "kubernetes": {"provider": "kubernetes"},
    "iotedge": {"provider": "iotedge"},
}
PROCESS_MANIFEST = """\
version: 1
project: images
models:
  m: {path: model.txt}
environments:
  e: {python: "3.11"}
services:
  echo-api: {models: [m], environment: e, source_dir: src, entry_script: score.py}
"""
IOTHUB = "HostName=hub.example.net;SharedAccessKeyName=iothubowner;SharedAccessKey=a2V5"


@pytest.mark.parametrize("name", sorted(IMAGE_KINDS))
def test_every_kind_that_runs_images_has_the_one_capability(name: str):
    config = IMAGE_KINDS[name]
    cls = provider_class(config["provider"], config)
    assert issubclass(cls, BuildsImages) and issubclass(cls, ImageTarget)
    for member in ("build_image", "build_log", "with_image", "image_registry", "pull_credentials"):
        assert getattr(cls, member) is getattr(ImageTarget, member), f"{cls.__name__}.{member} is its own copy"


def test_only_the_image_package_builds_images():
    """No provider keeps a copy of the image build (the IoT Edge one forgot it, and `mlops build` failed)."""
    copies = []
    for path in sorted((ROOT / "providers").rglob("*.py")):
        if path.is_relative_to(ROOT / "providers" / "images") or path.name == "base.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and node.name == "build_image":
                copies.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}")
    assert not copies, copies


def test_a_process_target_builds_no_image_but_keeps_its_virtualenv_build_log(tmp_path: Path):
    path = make_project(tmp_path, PROCESS_MANIFEST)
    result = run_cli("build", "echo-api", "-f", str(path))
    assert result.code == 1 and "runs on a target without images" in result.err, result
    result = run_cli("logs", "--build", "echo-api", "-f", str(path))
    assert result.code == 1 and "no virtualenv build log for service 'echo-api' yet" in result.err, result


def test_logs_build_on_the_iot_edge_example_asks_for_a_build_first(monkeypatch):
    """The IoT Edge example: `mlops logs --build` said "target 'plant3' (iotedge) builds no image"."""
    monkeypatch.setenv("IOTHUB_CONNECTION_STRING", IOTHUB)
    monkeypatch.setenv("IOTEDGE_REGISTRY", "127.0.0.1:5000")
    manifest = ROOT / "examples" / "iotedge" / "ml.yaml"
    result = run_cli("logs", "--build", "diabetes-edge", "-f", str(manifest))
    assert result.code == 1
    assert "no image build log for service 'diabetes-edge' yet; run `mlops build diabetes-edge`" in result.err, \
        result.err
