"""The resource graph drawn: models, environments, services and targets as DOT or Mermaid.

Built from the manifest's desired graph (what uses what, what runs where) and, when a plan is
given, marked with the planned action on each node; resources only the plan knows (a service
being deleted) join the graph from the plan. Pure functions of their inputs: no I/O, stable
node order, so golden files hold. Labels are resource names and actions only, never a spec
value, so no secret can reach a drawing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .graph import referenced
from .plan import Action, Plan

KINDS = ("model", "environment", "service", "target")
ACTION_LABELS = {
    Action.CREATE: "+ create",
    Action.UPDATE: "~ update",
    Action.DELETE_THEN_CREATE: "-/+ replace",
    Action.CREATE_THEN_DELETE: "+/- replace",
    Action.DELETE: "- delete",
}
ACTION_CLASSES = {
    Action.CREATE: "create",
    Action.UPDATE: "update",
    Action.DELETE_THEN_CREATE: "replace",
    Action.CREATE_THEN_DELETE: "replace",
    Action.DELETE: "delete",
}
_MERMAID_SHAPES = {"model": ('[("', '")]'), "environment": ('{{"', '"}}'), "service": ('["', '"]'),
                   "target": ('(["', '"])')}
_DOT_SHAPES = {"model": "cylinder", "environment": "hexagon", "service": "box", "target": "ellipse"}
_DOT_COLOURS = {"create": "#d4f7d4", "update": "#fff3c4", "replace": "#ffd8b0", "delete": "#ffd0d0"}
_MERMAID_STYLES = {
    "create": "fill:#d4f7d4,stroke:#2a8a2a",
    "update": "fill:#fff3c4,stroke:#a88400",
    "replace": "fill:#ffd8b0,stroke:#c05f00",
    "delete": "fill:#ffd0d0,stroke:#b00020",
}


@dataclass(frozen=True, order=True)
class NodeKey:
    """``(kind, name)`` with kinds in dependency order, targets last."""

    rank: int
    name: str

    @property
    def kind(self) -> str:
        return KINDS[self.rank]

    def __str__(self) -> str:
        return f"{self.kind}.{self.name}"

    @classmethod
    def of(cls, kind: str, name: str) -> NodeKey:
        return cls(KINDS.index(kind), name)


@dataclass(frozen=True)
class Graph:
    """Nodes (each with its planned action, or None) and edges from a dependency to its user.

    Edges: model -> service, environment -> service, service -> target (where it runs).
    """

    nodes: Mapping[NodeKey, Action | None] = field(default_factory=dict)
    edges: frozenset[tuple[NodeKey, NodeKey]] = frozenset()

    def neighbours(self, key: NodeKey) -> set[NodeKey]:
        return {b for a, b in self.edges if a == key} | {a for a, b in self.edges if b == key}

    @property
    def changed(self) -> list[NodeKey]:
        return sorted(k for k, a in self.nodes.items() if a is not None and a is not Action.NOOP)


def manifest_graph(models: Iterable[str], environments: Iterable[str], targets: Iterable[str],
                   services: Mapping[str, Mapping[str, Any]]) -> Graph:
    """The desired graph: ``services`` maps a name to ``{"models": [...], "environment": e, "target": t}``."""
    nodes: dict[NodeKey, Action | None] = {}
    for kind, names in (("model", models), ("environment", environments), ("target", targets)):
        for name in names:
            nodes[NodeKey.of(kind, name)] = None
    edges: set[tuple[NodeKey, NodeKey]] = set()
    for name, svc in services.items():
        key = NodeKey.of("service", name)
        nodes[key] = None
        for model in svc.get("models") or ():
            edges.add((_add(nodes, "model", str(model)), key))
        if svc.get("environment"):
            edges.add((_add(nodes, "environment", str(svc["environment"])), key))
        if svc.get("target"):
            edges.add((key, _add(nodes, "target", str(svc["target"]))))
    return Graph(dict(sorted(nodes.items())), frozenset(edges))


def with_plan(graph: Graph, plan: Plan) -> Graph:
    """The graph with each node's planned action; resources only the plan knows are added."""
    nodes = dict(graph.nodes)
    edges = set(graph.edges)
    for change in plan.changes:
        key = NodeKey.of(change.address.kind, change.address.name)
        nodes[key] = change.action
        if change.address.kind != "service":
            continue
        if key in graph.nodes:
            continue   # the manifest already says what it uses and where it runs
        for ref in referenced(change.before) | referenced(change.after):
            edges.add((_add(nodes, ref.kind, ref.name), key))
        for target in (change.before_target, change.after_target):
            if target:
                edges.add((key, _add(nodes, "target", target)))
    return Graph(dict(sorted(nodes.items())), frozenset(edges))


def plan_graph(plan: Plan) -> Graph:
    """The graph of everything a plan names (its specs say what uses what)."""
    return with_plan(Graph(), plan)


def changed_part(graph: Graph) -> Graph:
    """Only what changes and its direct neighbours (for a pull-request comment); empty if nothing does."""
    keep = set(graph.changed)
    for key in list(keep):
        keep |= graph.neighbours(key)
    return Graph({k: a for k, a in graph.nodes.items() if k in keep},
                 frozenset((a, b) for a, b in graph.edges if a in keep and b in keep))


# -- rendering ----------------------------------------------------------------------------------

def _ids(graph: Graph) -> dict[NodeKey, str]:
    counters: dict[str, int] = {}
    ids = {}
    for key in graph.nodes:
        n = counters.get(key.kind, 0)
        counters[key.kind] = n + 1
        ids[key] = f"{key.kind[0]}{n}"
    return ids


def _label(key: NodeKey, action: Action | None, newline: str) -> str:
    text = f"{key.kind} {key.name}"
    if action is not None and action is not Action.NOOP:
        text += f"{newline}{ACTION_LABELS[action]}"
    return text


def to_mermaid(graph: Graph) -> str:
    """A Mermaid flowchart (GitHub renders it in a ```mermaid block)."""
    ids = _ids(graph)
    lines = ["flowchart LR"]
    for key, action in graph.nodes.items():
        start, end = _MERMAID_SHAPES[key.kind]
        lines.append(f"    {ids[key]}{start}{_mermaid_text(_label(key, action, '<br/>'))}{end}")
    for a, b in sorted(graph.edges):
        lines.append(f"    {ids[a]} --> {ids[b]}")
    used = sorted({ACTION_CLASSES[a] for a in graph.nodes.values() if a in ACTION_CLASSES})
    for cls in used:
        lines.append(f"    classDef {cls} {_MERMAID_STYLES[cls]}")
    for cls in used:
        members = [ids[k] for k, a in graph.nodes.items() if ACTION_CLASSES.get(a) == cls]  # type: ignore[arg-type]
        lines.append(f"    class {','.join(members)} {cls}")
    return "\n".join(lines) + "\n"


def to_dot(graph: Graph, name: str = "mlops") -> str:
    """Graphviz DOT (``dot -Tsvg``)."""
    ids = _ids(graph)
    lines = [f"digraph {_dot_string(name)} {{", "  rankdir=LR;", '  node [fontname="Helvetica"];']
    for key, action in graph.nodes.items():
        attrs = [f"label={_dot_string(_label(key, action, chr(10)))}", f"shape={_DOT_SHAPES[key.kind]}"]
        cls = ACTION_CLASSES.get(action)  # type: ignore[arg-type]
        if cls:
            attrs += ["style=filled", f'fillcolor="{_DOT_COLOURS[cls]}"']
        lines.append(f"  {ids[key]} [{', '.join(attrs)}];")
    for a, b in sorted(graph.edges):
        lines.append(f"  {ids[a]} -> {ids[b]};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _mermaid_text(text: str) -> str:
    """Quotes and angle brackets as Mermaid entities (names are validated, this is belt and braces)."""
    return text.replace('"', "#quot;").replace("<br/>", "\0").replace("<", "#lt;").replace(">", "#gt;") \
        .replace("\0", "<br/>")


def _dot_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _add(nodes: dict[NodeKey, Action | None], kind: str, name: str) -> NodeKey:
    key = NodeKey.of(kind, name)
    nodes.setdefault(key, None)
    return key


COMMENT_GRAPH_LIMIT = 60
"""More changed nodes than this make an unreadable drawing; the comment says so instead."""


def mermaid_of_changes(plan: Plan) -> str:
    """The markdown section a pull-request comment shows: what changes and its neighbours, or ""."""
    part = changed_part(plan_graph(plan))
    if not part.changed:
        return ""
    if len(part.nodes) > COMMENT_GRAPH_LIMIT:
        return (f"\n**Graph:** {len(part.changed)} resources change ({len(part.nodes)} with their neighbours), too "
                "many to draw here; run `mlops graph --planned --changes-only`.\n")
    return f"\n**What changes, drawn** (with what it uses and where it runs):\n\n```mermaid\n{to_mermaid(part)}```\n"
