"""The targets a project applied to live in its registry, so a fresh runner knows a removed target.

Runner A applies to two targets; the manifest then drops one. Runner B (another checkout: an
empty state folder, and for the remote registry an empty HOME and data folder too) plans the
deletion of the services still on the dropped target, because the record is read from the
registry every runner shares: the embedded one (two checkouts of one user on one machine) and
the real registry on 127.0.0.1 (two machines).

The target is an in-memory "cloud" every runner reaches (the memory provider's services are kept
per state folder, like local processes; this subclass keeps them per target name, like a cloud API).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import memory_provider
import pytest
import yaml
from memory_provider import MemoryProvider
from registry_fixtures import remote_url
from support import make_project, run_cli

from planner.resources import Live
from providers import registry
from providers.oci.models import TARGETS_TAG, TARGETS_TYPE, ModelRegistry, _manifest
from providers.oci.repository import sha256_digest
from providers.store import open_repository

CLOUD: dict[str, dict[str, Live]] = {}


class CloudMemoryProvider(MemoryProvider):
    """The memory provider with services kept per target name: one cloud every runner reaches."""

    kind: ClassVar[str] = "cloudmem"

    @classmethod
    def target_schema(cls) -> dict[str, Any]:
        schema = super().target_schema()
        return {**schema, "properties": {**schema["properties"], "provider": {"const": "cloudmem"}}}

    @property
    def _services(self) -> dict[str, Live]:
        return CLOUD.setdefault(self.target, {})


@pytest.fixture(autouse=True)
def _cloud():
    registry.register("cloudmem", CloudMemoryProvider)
    yield
    registry.unregister("cloudmem")
    CLOUD.clear()
    memory_provider.STATE.clear()


def manifest(registry_line: str, *, old: bool) -> str:
    targets = "  mem: {provider: cloudmem}\n"
    services = ("  one-api: {models: [m], environment: e, source_dir: src, entry_script: score.py, target: mem}\n")
    if old:
        targets += "  old: {provider: cloudmem, region: west, token: sixteen-characters}\n"
        services += "  two-api: {models: [m], environment: e, source_dir: src, entry_script: score.py, target: old}\n"
    return (f"version: 1\nproject: remembers\n{registry_line}targets:\n{targets}"
            "models:\n  m: {path: model.txt}\nenvironments:\n  e: {python: \"3.11\"}\n"
            f"services:\n{services}")


def use(monkeypatch, home: Path) -> None:
    """Run as whoever owns ``home`` (their data folder holds the embedded registry)."""
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / ".local" / "share"))


def record(path: Path) -> dict[str, Any] | None:
    """The record as the registry of manifest ``path`` holds it (run as the current user)."""
    data = yaml.safe_load(path.read_text())
    return ModelRegistry(open_repository(data["project"], data.get("registry"))).applied_targets()


@pytest.mark.parametrize("where", ["embedded", "remote"])
def test_a_fresh_runner_plans_the_deletion_of_services_on_a_removed_target(where, tmp_path: Path, monkeypatch):
    line = "" if where == "embedded" else f'registry: {{url: "{remote_url()}", settle_seconds: 1}}\n'
    home_a = tmp_path / "home-a"
    home_b = home_a if where == "embedded" else tmp_path / "home-b"   # embedded: one user, one machine
    a = make_project(tmp_path / "a", manifest(line, old=True))
    use(monkeypatch, home_a)
    applied = run_cli("apply", "--auto-approve", "-f", str(a))
    assert applied.code == 0, applied.out + applied.err
    assert set(CLOUD["old"]) == {"two-api"}
    assert record(a)["old"] == {"provider": "cloudmem", "region": "west"}   # never the secret token
    assert not (a.parent / ".mlops" / "applied-targets.json").exists()     # the registry holds it, not A

    # B: another checkout of the commit that drops `old`; nothing of A's state folder.
    b = make_project(tmp_path / "b", manifest(line, old=False))
    use(monkeypatch, home_b)
    assert not (b.parent / ".mlops").exists()
    plan = run_cli("plan", "--detailed-exitcode", "-f", str(b))
    assert plan.code == 2 and "service.two-api will be destroyed" in plan.out, plan.out + plan.err
    assert "one-api" not in plan.out.split("Plan:")[0].replace("service.one-api", "")
    applied = run_cli("apply", "--auto-approve", "-f", str(b))
    assert applied.code == 0, applied.out + applied.err
    assert CLOUD["old"] == {} and set(CLOUD["mem"]) == {"one-api"}
    assert set(record(b)) == {"mem"}            # forgotten once nothing of the project runs there

    use(monkeypatch, home_a)                     # A, after pulling: nothing left to do
    a.write_text(manifest(line, old=False))
    assert run_cli("plan", "--detailed-exitcode", "-f", str(a)).code == 0


def test_the_record_of_earlier_versions_in_the_state_folder_is_read_and_moved_to_the_registry(tmp_path: Path):
    path = make_project(tmp_path, manifest("", old=True))
    assert run_cli("apply", "--auto-approve", "-f", str(path)).code == 0
    # As an earlier version left it: the record in the state folder, none in the registry.
    repo = open_repository("remembers", None)
    repo.delete_manifest(sha256_digest(repo.get_manifest(TARGETS_TAG)))
    legacy = {"mem": {"provider": "cloudmem"}, "old": {"provider": "cloudmem", "region": "west"}}
    (path.parent / ".mlops" / "applied-targets.json").write_text(json.dumps(legacy))
    assert record(path) is None

    path.write_text(manifest("", old=False))
    plan = run_cli("plan", "-f", str(path))
    assert "service.two-api will be destroyed" in plan.out, plan.out + plan.err
    assert run_cli("apply", "--auto-approve", "-f", str(path)).code == 0
    assert set(record(path)) == {"mem"}
    assert not (path.parent / ".mlops" / "applied-targets.json").exists()


def test_a_record_that_cannot_be_read_is_a_plan_warning_not_a_failure(tmp_path: Path):
    path = make_project(tmp_path, manifest("", old=True))
    assert run_cli("apply", "--auto-approve", "-f", str(path)).code == 0
    repo = open_repository("remembers", None)
    repo.put_manifest(TARGETS_TAG, _manifest(TARGETS_TYPE, [], {"dev.mlops.targets": "not json"}))
    path.write_text(manifest("", old=False))
    plan = run_cli("plan", "-f", str(path))
    assert plan.code == 0, plan.out + plan.err
    assert "the targets this project applied to could not be read" in plan.out, plan.out
    assert "service.two-api" not in plan.out.split("Warning")[0]

