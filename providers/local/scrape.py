"""One version's metrics from the runtimes of a service, as one Prometheus text.

During a rollout two runtimes speak of the candidate: the candidate itself (what it answered) and
the stable version (requests it sent to the candidate that got no answer, counted as the
candidate's 5xx). Identical series are summed, so a reader that keeps one value per series (as
Prometheus does) sees the total, and only the asked version's series are kept.
"""

from __future__ import annotations

import http.client
import re
import urllib.request

_VERSION = re.compile(r'(?:^|[{,])\s*version="((?:[^"\\]|\\.)*)"')
TIMEOUT_S = 5.0


def fetch(url: str) -> str | None:
    """The text at ``url`` (a runtime's probe port); None when it does not answer, or answers
    no whole HTTP reply (cut short, garbled: ``http.client.HTTPException``) as a runtime that
    stops mid-answer does: a scrape that failed, never a crash of the rollout reading it."""
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as reply:   # noqa: S310 - our own runtime on 127.0.0.1
            return reply.read().decode("utf-8", errors="replace")
    except (OSError, ValueError, http.client.HTTPException):
        return None


def merge(texts: list[str], version: str) -> str:
    """The samples labelled ``version`` of every text, identical series summed, each family's
    samples together under its HELP and TYPE lines."""
    meta: dict[str, list[str]] = {}
    values: dict[str, dict[str, float]] = {}
    for text in texts:
        for line in text.split("\n"):
            line = line.strip()
            if not line:
                continue
            if line.startswith("#"):
                parts = line.split(None, 3)
                if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                    family = meta.setdefault(parts[2], [])
                    if line not in family:
                        family.append(line)
                continue
            series, _, raw = line.rpartition(" ")
            found = _VERSION.search(series)
            if not series or found is None or found.group(1) != version:
                continue
            try:
                value = float(raw)
            except ValueError:
                continue
            name = series.split("{", 1)[0]
            family_values = values.setdefault(_family(name, meta), {})
            family_values[series] = family_values.get(series, 0.0) + value
    out: list[str] = []
    for family, samples in values.items():
        out += meta.get(family, [])
        out += [f"{series} {_number(value)}" for series, value in samples.items()]
    return "\n".join(out) + ("\n" if out else "")


def _family(name: str, meta: dict[str, list[str]]) -> str:
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix) and name[: -len(suffix)] in meta:
            return name[: -len(suffix)]
    return name


def _number(value: float) -> str:
    return str(int(value)) if value.is_integer() else repr(value)
