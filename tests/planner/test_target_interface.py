"""The target interface: its members, and the two grouped answers ``schema()`` and ``prepare()``.

A kind written against the grouped members is validated and prepared by them; a kind still written
against the protocol-3 hooks they replace (``LEGACY_HOOKS``) keeps working unchanged.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

import pytest
from memory_provider import MemoryProvider
from support import make_project

from planner.addresses import Address
from planner.errors import ManifestError
from planner.manifest import load_manifest
from planner.project import Project
from providers import registry
from providers.base import LEGACY_HOOKS, KindSchema, Preparation, Provider

INTERFACE = {
    # lifecycle
    "connect", "ensure_connected", "describe",
    # kinds and variants
    "variant", "variants",
    # what the core asks before anything runs
    "schema", "secret_values", "prepare",
    # live state and planning
    "read", "orphans", "rules", "validate", "plan_warnings",
    # acting
    "create", "update", "delete",
    # declarations
    "protocol",
}


def test_the_target_interface_is_the_members_it_documents():
    assert {n for n in dir(Provider) if not n.startswith("_")} == INTERFACE
    assert not set(LEGACY_HOOKS) & set(dir(Provider)), "the hooks schema()/prepare() replace are not members"


class Grouped(MemoryProvider):
    """A kind written against the grouped members only (on the memory provider's lifecycle)."""

    kind: ClassVar[str] = "grouped"
    target_schema = None            # type: ignore[assignment]   # not a protocol-3 kind: no hooks at all
    deploy_schema = None            # type: ignore[assignment]
    normalize_deploy = None         # type: ignore[assignment]
    runtime_version = None          # type: ignore[assignment]

    @classmethod
    def schema(cls) -> KindSchema:
        return KindSchema(
            target={"type": "object", "properties": {"provider": {"const": "grouped"}}},
            deploy={"type": "object", "properties": {"port": {"type": "integer"}, "size": {"enum": ["s", "m"]}}},
            port_scope=lambda config: "127.0.0.1",
            service_name_problem=lambda name: "names end in -api here" if not name.endswith("-api") else None)

    def prepare(self) -> Preparation:
        return replace(super().prepare(), runtime="grouped-runtime@7",
                       deploy=lambda deploy: {"size": "s", **deploy})


@pytest.fixture
def grouped():
    registry.register("grouped", Grouped)
    yield
    registry.unregister("grouped")


def manifest(services: str) -> str:
    return ("version: 1\nproject: grouped\ntargets:\n  g: {provider: grouped}\nmodels:\n  m: {path: model.txt}\n"
            "environments:\n  e: {python: \"3.11\"}\nservices:\n" + services)


def service(name: str, deploy: str) -> str:
    return f"  {name}: {{models: [m], environment: e, source_dir: src, entry_script: score.py, deploy: {deploy}}}\n"


def test_validate_asks_schema_for_the_deploy_schema_shared_ports_and_service_names(grouped, tmp_path: Path):
    services = (service("one-api", "{port: 8001, size: xl}") + service("two-api", "{port: 8001}")
                + service("three", "{}"))
    path = make_project(tmp_path, manifest(services))
    with pytest.raises(ManifestError) as caught:
        load_manifest(path)
    text = str(caught.value)
    assert "services.one-api.deploy.size: 'xl' is not one of 's', 'm'" in text
    assert "port 8001 is already taken by services.one-api (both bind 127.0.0.1)" in text
    assert "services.three: names end in -api here" in text


def test_the_desired_spec_is_shaped_by_prepare(grouped, tmp_path: Path):
    path = make_project(tmp_path, manifest(service("one-api", "{port: 8001}")))
    spec = Project.load(path).desired()[Address("service", "one-api")].spec
    assert spec["runtime"] == "grouped-runtime@7"
    assert spec["deploy"] == {"port": 8001, "size": "s"}


class Hooked(Provider):
    """A kind still written against the protocol-3 hooks."""

    kind: ClassVar[str] = "hooked"

    @classmethod
    def target_schema(cls) -> dict[str, Any]:
        return {"type": "object", "properties": {"token": {"type": "string", "writeOnly": True}}}

    @classmethod
    def deploy_schema(cls) -> dict[str, Any]:
        return {"type": "object", "properties": {"port": {"type": "integer"}}}

    @classmethod
    def port_scope(cls, config: Any) -> str | None:
        return str(config.get("host"))

    @classmethod
    def service_name_problem(cls, name: str) -> str | None:
        return "too long" if len(name) > 5 else None

    def runtime_version(self) -> str:
        return "hooked@1"

    def normalize_deploy(self, deploy: Any) -> dict[str, Any]:
        return {"replicas": 1, **deploy}

    def service_spec(self, name: str, spec: Any) -> dict[str, Any]:
        return {**spec, "image": f"img/{name}"}

    def read(self): return []                      # noqa: E704
    def create(self, desired, events): ...         # noqa: E704
    def update(self, desired, live, events): ...   # noqa: E704
    def delete(self, live, events): ...            # noqa: E704


def test_a_kind_written_against_the_old_hooks_answers_through_schema_and_prepare(tmp_path: Path):
    schema = Hooked.schema()
    assert schema.target == Hooked.target_schema() and schema.deploy == Hooked.deploy_schema()
    assert schema.secret == {"token"}
    assert schema.port_scope({"host": "10"}) == "10" and schema.service_name_problem("abcdefg") == "too long"
    from providers.base import ProjectContext

    context = ProjectContext(project="p", root=tmp_path, state_dir=tmp_path / ".mlops", cache_dir=tmp_path)
    hooked = Hooked(target="h", config={"provider": "hooked", "token": "s3cret-value"}, context=context)
    prepared = hooked.prepare()
    assert prepared.runtime == "hooked@1"
    assert prepared.deploy({"port": 1}) == {"replicas": 1, "port": 1}
    assert prepared.spec("api", {"a": 1}) == {"a": 1, "image": "img/api"}
    assert hooked.secret_values() == ["s3cret-value"]


def test_a_kind_with_no_hooks_gets_the_defaults(tmp_path: Path):
    class Bare(Hooked):
        target_schema = deploy_schema = port_scope = service_name_problem = None   # type: ignore[assignment]
        runtime_version = normalize_deploy = service_spec = None                    # type: ignore[assignment]

    from providers.bundle import runtime_version

    schema = Bare.schema()
    assert schema.deploy == {"type": "object"} and schema.port_scope({}) is None
    assert schema.service_name_problem("anything-long") is None
    from providers.base import ProjectContext

    context = ProjectContext(project="p", root=tmp_path, state_dir=tmp_path / ".mlops", cache_dir=tmp_path)
    prepared = Bare(target="b", config={}, context=context).prepare()
    assert prepared.runtime == runtime_version() and prepared.deploy({"x": 1}) == {"x": 1}
