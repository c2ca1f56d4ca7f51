"""One runtime's Prometheus text, labelled with what only the scraper knows (pure functions).

Shared by the targets that gather a version's metrics from several runtimes: Kubernetes (one text
per pod) and the local engines (the candidate's own text and the stable runtime's count of the
requests it forwarded to the candidate without an answer).

The runtime's ``/metrics`` names the version a pod started as; which version a pod runs is its
Deployment's to say (a change of the replica count alone changes the spec's fingerprint without
restarting pods), and which pod answered is the scrape's. So every sample line gets its
``version`` label replaced (where it has one) and an ``instance`` label naming the pod: the
analysis differences each instance's counters on their own, and a pod missing from one scrape,
restarted or new never looks like a reset of a counter summed over pods.
"""

from __future__ import annotations

import re

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_VERSION_LABEL = re.compile(r'(?<=[{,])version="(?:[^"\\]|\\.)*"')
_INSTANCE_LABEL = re.compile(r'(?<=[{,])([ \t]*)instance[ \t]*=[ \t]*"(?:[^"\\]|\\.)*"')


def relabel(text: str, version: str, instance: str) -> str:
    """``text`` with each sample's ``version`` label set to ``version`` (the runtime's ``mlops_`` series) and
    ``instance`` set to ``instance`` (every series); comments and blank lines untouched, ending in a newline."""
    value = _quoted(version)
    out = []
    for line in text.split("\n"):   # the format's only line end (splitlines() would cut label values)
        body = line.lstrip(" \t")
        if body.startswith("mlops_"):
            line = _VERSION_LABEL.sub(lambda _: f'version="{value}"', line)
        out.append(with_instance(line, instance))
    joined = "\n".join(out)
    return joined if joined.endswith("\n") or not joined else joined + "\n"


def with_instance_label(text: str, instance: str) -> str:
    """Every sample line of ``text`` with ``instance="<instance>"`` (see ``with_instance``)."""
    return "\n".join(with_instance(line, instance) for line in text.split("\n"))


def with_instance(line: str, instance: str) -> str:
    """One exposition line with ``instance="<instance>"`` in its label set (replacing one it had). Comments,
    blank lines and lines that are not a sample (no metric name, an unclosed label set) come back as they are."""
    indent = len(line) - len(line.lstrip(" \t"))
    match = _NAME.match(line, indent)
    if match is None:   # a comment (# HELP, # TYPE), a blank line, or no sample at all
        return line
    label = f'instance="{_quoted(instance)}"'
    end = match.end()
    if not line.startswith("{", end):
        return f"{line[:end]}{{{label}}}{line[end:]}"
    close = _closing_brace(line, end)
    if close is None:
        return line
    inside = line[end + 1:close]
    if _INSTANCE_LABEL.search("{" + inside):
        inside = _INSTANCE_LABEL.sub(lambda m: f"{m.group(1)}{label}", "{" + inside)[1:]
    elif inside.strip(" \t") and not inside.rstrip(" \t").endswith(","):
        inside = f"{inside},{label}"
    else:
        inside = f"{inside}{label}"
    return f"{line[:end]}{{{inside}}}{line[close + 1:]}"


def _closing_brace(line: str, opening: int) -> int | None:
    """Where the label set opened at ``opening`` closes (a ``}`` inside a quoted value does not count)."""
    quoted = escaped = False
    for pos in range(opening + 1, len(line)):
        char = line[pos]
        if escaped:
            escaped = False
        elif quoted and char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == "}" and not quoted:
            return pos
    return None


def _quoted(value: str) -> str:
    """A label value as the format writes it between quotes."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
