"""Parsing ``az ml model deploy`` and ``az ml model register`` command lines (``--from-az``).

Users migrating from v1 often have only the CLI lines from their pipelines; this reads the
files, service name and models a deploy line names and the model a register line describes,
ignoring every other flag, so ``import_v1`` can use them when they are not given directly.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from typing import Any

from ..errors import MlopsError


@dataclass
class _Az:
    service: str | None = None
    models: list[str] = field(default_factory=list)
    inference_config: str | None = None
    deploy_config: str | None = None
    registered: dict[str, dict[str, Any]] = field(default_factory=dict)


def parse_az(line: str) -> _Az:
    """An ``az ml model deploy`` or ``az ml model register`` command line (other flags ignored)."""
    try:
        words = shlex.split(line)
    except ValueError as exc:
        raise MlopsError(f"--from-az: cannot split the command line: {exc}") from None
    if words[:1] == ["az"]:
        words = words[1:]
    if words[:3] not in (["ml", "model", "deploy"], ["ml", "model", "register"]):
        raise MlopsError("--from-az: expected an `az ml model deploy` or `az ml model register` command line")
    verb, args, az = words[2], words[3:], _Az()
    options: dict[str, list[str]] = {}
    i = 0
    while i < len(args):
        word = args[i]
        name, eq, value = word.partition("=")
        if word.startswith("-") and eq:
            options.setdefault(name, []).append(value)
        elif word.startswith("-") and i + 1 < len(args) and not args[i + 1].startswith("-"):
            options.setdefault(word, []).append(args[i + 1])
            i += 1
        elif word.startswith("-"):
            options.setdefault(word, []).append("")
        i += 1

    def get(*names: str) -> list[str]:
        return [v for n in names for v in options.get(n, [])]

    if verb == "deploy":
        az.service = (get("-n", "--name") or [None])[-1]
        az.models = [m.split(":", 1)[0] for m in get("-m", "--model")]
        az.inference_config = (get("--ic", "--inference-config-file") or [None])[-1]
        az.deploy_config = (get("--dc", "--deploy-config-file") or [None])[-1]
        return az
    name = (get("-n", "--name") or [""])[-1]
    path = (get("-p", "--model-path", "--asset-path") or [""])[-1]
    if not name or not path:
        raise MlopsError("--from-az: `az ml model register` needs -n NAME and -p PATH")
    tags = dict(t.partition("=")[::2] for t in get("--tag", "-t") if t)
    entry: dict[str, Any] = {"path": path}
    if get("-d", "--description"):
        entry["description"] = get("-d", "--description")[-1]
    if tags:
        entry["tags"] = tags
    az.registered[name] = entry
    return az
