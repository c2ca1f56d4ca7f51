"""The target interface: its members, the grouped answers ``schema()`` and ``prepare()``, and the
members it no longer has (a kind still defining one is refused when it loads, never silently ignored).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

import pytest
from memory_provider import MemoryProvider
from support import make_project

from planner.addresses import Address
from planner.errors import ManifestError, MlopsError
from planner.manifest import load_manifest
from planner.project import Project
from providers import registry
from providers.base import RETIRED, DerivesSecrets, FindsOrphans, KindSchema, Preparation, Provider, secret_values

INTERFACE = {
    # lifecycle
    "connect", "describe",
    # what the core asks before anything runs
    "variants", "schema", "prepare",
    # live state and planning
    "read", "rules", "validate",
    # acting
    "create", "update", "delete",
    # declarations
    "protocol",
}


def test_the_target_interface_is_the_members_it_documents():
    assert {n for n in dir(Provider) if not n.startswith("_")} == INTERFACE
    assert not set(RETIRED) & set(dir(Provider)), "the members the interface no longer asks for are gone"


class Grouped(MemoryProvider):
    """A kind written against the grouped members only (on the memory provider's lifecycle)."""

    kind: ClassVar[str] = "grouped"

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
    """A kind still written against the hooks ``schema()``/``prepare()`` replaced."""

    kind: ClassVar[str] = "hooked"

    @classmethod
    def target_schema(cls) -> dict[str, Any]:
        return {"type": "object", "properties": {"token": {"type": "string", "writeOnly": True}}}

    def normalize_deploy(self, deploy: Any) -> dict[str, Any]:
        return {"replicas": 1, **deploy}

    def read(self): return []                      # noqa: E704
    def create(self, desired, events): ...         # noqa: E704
    def update(self, desired, live, events): ...   # noqa: E704
    def delete(self, live, events): ...            # noqa: E704


def test_a_kind_written_against_retired_members_is_refused_in_one_line_naming_what_replaces_them():
    with pytest.raises(MlopsError) as caught:
        registry.register("hooked", Hooked)   # as an installed plugin is checked when it loads
    text = str(caught.value)
    assert "provider plugin 'hooked' (test_target_interface.Hooked) defines target_schema, normalize_deploy, " \
        "which this mlops no longer asks for: answer schema().target, prepare().deploy instead" in text
    assert "\n" not in text and "hooked" not in registry.kinds()


class Bare(Provider):
    kind: ClassVar[str] = "bare"

    def read(self): return []                      # noqa: E704
    def create(self, desired, events): ...         # noqa: E704
    def update(self, desired, live, events): ...   # noqa: E704
    def delete(self, live, events): ...            # noqa: E704


def test_a_kind_that_says_nothing_gets_the_defaults(tmp_path: Path):
    from providers.base import ProjectContext
    from providers.bundle import runtime_version

    schema = Bare.schema()
    assert schema.deploy == {"type": "object"} and schema.port_scope({}) is None
    assert schema.service_name_problem("anything-long") is None and Bare.variants({"x": 1}) == [Bare]
    context = ProjectContext(project="p", root=tmp_path, state_dir=tmp_path / ".mlops", cache_dir=tmp_path)
    bare = Bare(target="b", config={"token": "not-secret-here"}, context=context)
    prepared = bare.prepare()
    assert prepared.runtime == runtime_version() and prepared.deploy({"x": 1}) == {"x": 1}
    assert prepared.spec("api", {"a": 1}) == {"a": 1}
    assert secret_values(bare) == [] and not isinstance(bare, FindsOrphans)


class Secretive(Bare):
    """Secrets the schema names (writeOnly), and one the kind derives."""

    @classmethod
    def schema(cls) -> KindSchema:
        return KindSchema(target={"type": "object", "properties": {"token": {"type": "string", "writeOnly": True}}})


class Deriving(DerivesSecrets, Secretive):
    def derived_secrets(self) -> list[str]:
        return ["derived-" + self.config["token"]]


def test_secret_values_come_from_the_schema_and_from_what_a_kind_derives(tmp_path: Path):
    from providers.base import ProjectContext

    context = ProjectContext(project="p", root=tmp_path, state_dir=tmp_path / ".mlops", cache_dir=tmp_path)
    config = {"token": "s3cret-value", "region": "north"}
    assert secret_values(Secretive(target="s", config=config, context=context)) == ["s3cret-value"]
    assert secret_values(Deriving(target="s", config=config, context=context)) == ["s3cret-value",
                                                                                   "derived-s3cret-value"]
