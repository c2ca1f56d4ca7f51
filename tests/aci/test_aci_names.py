"""ACI's naming rule for container groups is checked by `mlops validate`, at the service's name."""

from __future__ import annotations

from pathlib import Path

from support import make_project, run_cli

MANIFEST = """\
version: 1
project: names
targets:
  aci: {provider: aci, subscription_id: 00000000-0000-0000-0000-000000000000, resource_group: ml-dev,
        location: westeurope, registry: 127.0.0.1:5000, arm_endpoint: "https://127.0.0.1:1"}
models:
  m: {path: model.txt}
environments:
  e: {python: "3.11"}
services:
  NAME: {models: [m], environment: e, source_dir: src, entry_script: score.py, target: aci}
"""


def test_a_double_hyphen_is_refused_at_validate_time(tmp_path: Path):
    bad = make_project(tmp_path / "bad", MANIFEST.replace("NAME", "diab--api"))
    result = run_cli("validate", "-f", str(bad))
    assert result.code == 1
    assert "ml.yaml:11:3: services.diab--api: 'diab--api' is not a valid container group name" in result.err
    good = make_project(tmp_path / "good", MANIFEST.replace("NAME", "diab-api"))
    assert run_cli("validate", "-f", str(good)).code == 0
