"""`mlops validate` warns when image targets meet the embedded registry (other machines cannot read it)."""

from __future__ import annotations

import pytest
from support import make_project, run_cli

MANIFEST = """\
version: 1
project: warned
{registry}targets:
  box: {target}
models:
  m: {{path: model.txt}}
environments:
  e: {{python: "3.11"}}
services:
  echo-api: {{models: [m], environment: e, source_dir: src, entry_script: score.py}}
"""


@pytest.mark.parametrize(("target", "registry", "warned"), [
    ("{provider: local, engine: docker}", "", True),
    ("{provider: local, engine: docker}", 'registry: {url: "oci://127.0.0.1:5000/warned/models"}\n', False),
    ("{provider: local}", "", False),
])
def test_image_targets_with_the_embedded_registry_are_warned(target, registry, warned, tmp_path):
    manifest = make_project(tmp_path, MANIFEST.format(target=target, registry=registry))
    result = run_cli("validate", "-f", str(manifest))
    assert result.code == 0, result.err
    assert ("Warning:" in result.err) == warned
    if warned:
        line = result.err.strip()
        assert "box" in line and "embedded registry" in line and "registry: {url: oci://" in line
        assert len(result.err.strip().splitlines()) == 1
