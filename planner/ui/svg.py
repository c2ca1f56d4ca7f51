"""The resource graph drawn as SVG, laid out here (no Graphviz, no CDN: the page works offline).

Three columns in dependency order: models and environments, services, targets; each node in its
column's order, edges as curves. Text is escaped; labels are names and actions only.
"""

from __future__ import annotations

from html import escape

from ..graph_render import ACTION_CLASSES, ACTION_LABELS, Graph, NodeKey

COLUMN = {"model": 0, "environment": 0, "service": 1, "target": 2}
FILL = {"create": "#d4f7d4", "update": "#fff3c4", "replace": "#ffd8b0", "delete": "#ffd0d0", None: "#f4f6f8"}
STROKE = {"model": "#5b6b7a", "environment": "#7a5b8a", "service": "#2b5d9b", "target": "#4a7a4a"}
NODE_W, NODE_H, GAP_X, GAP_Y, PAD = 190, 40, 90, 14, 12


def to_svg(graph: Graph) -> str:
    columns: dict[int, list[NodeKey]] = {0: [], 1: [], 2: []}
    for key in graph.nodes:
        columns[COLUMN[key.kind]].append(key)
    place: dict[NodeKey, tuple[int, int]] = {}
    for col, keys in columns.items():
        for row, key in enumerate(keys):
            place[key] = (PAD + col * (NODE_W + GAP_X), PAD + row * (NODE_H + GAP_Y))
    rows = max((len(k) for k in columns.values()), default=0)
    width = PAD * 2 + 3 * NODE_W + 2 * GAP_X
    height = PAD * 2 + max(rows, 1) * (NODE_H + GAP_Y)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12" role="img" '
           'aria-label="resource graph">']
    for a, b in sorted(graph.edges):
        (ax, ay), (bx, by) = place[a], place[b]
        x1, y1, x2, y2 = ax + NODE_W, ay + NODE_H // 2, bx, by + NODE_H // 2
        mid = (x1 + x2) // 2
        out.append(f'<path d="M{x1},{y1} C{mid},{y1} {mid},{y2} {x2},{y2}" fill="none" stroke="#9aa5b1"/>')
    for key, action in graph.nodes.items():
        x, y = place[key]
        cls = ACTION_CLASSES.get(action)  # type: ignore[arg-type]
        title = f"{key.kind} {key.name}"
        out.append(f'<g class="node {escape(key.kind)}" data-address="{escape(str(key))}">'
                   f'<title>{escape(title)}</title>'
                   f'<rect x="{x}" y="{y}" width="{NODE_W}" height="{NODE_H}" rx="6" fill="{FILL[cls]}" '
                   f'stroke="{STROKE[key.kind]}"/>'
                   f'<text x="{x + 8}" y="{y + 16}" fill="#555">{escape(key.kind)}'
                   + (f' · {escape(ACTION_LABELS[action])}' if cls else "")   # type: ignore[index]
                   + f'</text><text x="{x + 8}" y="{y + 32}" font-weight="bold">{escape(_clip(key.name))}</text></g>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _clip(name: str, limit: int = 26) -> str:
    return name if len(name) <= limit else name[:limit - 1] + "…"
