"""The desired graph of a loaded manifest (names and references only: nothing is hashed or read)."""

from __future__ import annotations

from .graph_render import Graph, manifest_graph
from .manifest import Manifest


def graph_of(manifest: Manifest) -> Graph:
    services = {
        name: {"models": s.get("models") or [], "environment": s.get("environment"),
               "target": manifest.service_target(s)}
        for name, s in manifest.section("services").items()
    }
    return manifest_graph(manifest.section("models"), manifest.section("environments"), manifest.targets, services)
