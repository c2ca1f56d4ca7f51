"""Writing the import's entries as ``ml.yaml`` text: a fresh file, or a merge into an existing one.

Re-importing must be idempotent and must keep what the user wrote, so an existing manifest is
edited line by line (only the entries the import generates are added or replaced, comments and
everything else stay), and the file is replaced atomically.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..errors import MlopsError
from ..manifest import MAX_MANIFEST_BYTES, read_regular
from ..urlmask import mask_urls
from ..yamlpos import YamlProblem, decode, load, one_line
from .v1_config import V1ConfigError, _shown


@dataclass(frozen=True)
class Imported:
    """What an import produced: the text to write, its data, and one line per warning."""

    text: str
    data: dict[str, Any]
    warnings: list[str]
    changed: bool
    """False when the output file already said exactly this (re-importing is idempotent)."""

    def __post_init__(self) -> None:
        self.warnings[:] = [mask_urls(w) for w in self.warnings]  # index URLs may carry passwords


_PLAIN = re.compile(r"^[A-Za-z0-9_/.${}][A-Za-z0-9_./@:=<>!*~,+${}-]*\Z")
_SECTIONS = ("targets", "models", "environments", "services")


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, int | float):
        return json.dumps(value)
    text = str(value)
    if _PLAIN.match(text) and yaml.safe_load(text) == text and ": " not in text and not text.endswith(":"):
        return text
    return json.dumps(text)


def _block(value: Any, indent: int) -> list[str]:
    pad = " " * indent
    lines: list[str] = []
    for key, item in value.items():
        if isinstance(item, dict) and item:
            lines.append(f"{pad}{_scalar(key)}:")
            lines += _block(item, indent + 2)
        elif (
            isinstance(item, list)
            and all(not isinstance(x, dict | list) for x in item)
            and len(item) <= 3
            and sum(len(str(x)) for x in item) < 60
        ):
            lines.append(f"{pad}{_scalar(key)}: [{', '.join(_scalar(x) for x in item)}]")
        elif isinstance(item, list):
            lines.append(f"{pad}{_scalar(key)}:")
            lines += [f"{pad}  - {_scalar(x)}" for x in item]
        else:
            lines.append(f"{pad}{_scalar(key)}: {_scalar(item) if item != {} else '{}'}")
    return lines


def _entry_text(name: str, value: dict[str, Any], comments: list[str], indent: int) -> list[str]:
    pad = " " * indent
    lines = [f"{pad}{_scalar(name)}:"]
    lines += [f"{pad}  # {one_line(c, 200)}" for c in comments]
    return lines + _block(value, indent + 2)


def _fresh(project: str, entries: list[tuple[str, str, dict[str, Any], list[str]]], sources: list[str]) -> str:
    lines = [
        f"# Imported from Azure ML v1 by `mlops import` ({', '.join(sources)}).",
        "# Importing the same files again changes nothing; edit freely, then run `mlops validate`.",
        "version: 1",
        f"project: {_scalar(project)}",
    ]
    for section in _SECTIONS:
        chosen = [e for e in entries if e[0] == section]
        if chosen:
            lines += ["", f"{section}:"]
            for _, name, value, comments in chosen:
                lines += _entry_text(name, value, comments, 2)
    return "\n".join(lines) + "\n"


def _merge(
    output: Path,
    project: str,
    entries: list[tuple[str, str, dict[str, Any], list[str]]],
    sources: list[str],
    warnings: list[str],
) -> Imported:
    try:
        raw = read_regular(output, MAX_MANIFEST_BYTES)
    except FileNotFoundError:
        raw = b""
    except OSError as exc:
        raise MlopsError(f"{_shown(output)}: cannot read: {exc.strerror or exc}") from None
    if raw is None:
        raise MlopsError(f"{_shown(output)}: over the manifest limit of {MAX_MANIFEST_BYTES // 1024} KiB")
    if not raw.strip():
        text = _fresh(project, entries, sources)
        data, _ = load(text)
        return Imported(text, data, warnings, True)
    try:
        old_text = decode(raw)
        data, positions = load(old_text)
    except YamlProblem as exc:
        raise V1ConfigError(_shown(output), exc.line, exc.col, exc.message) from None
    if not isinstance(data, dict):
        raise V1ConfigError(_shown(output), 1, 1, "the manifest must be a mapping")
    lines = old_text.splitlines()
    # Work bottom-up so line numbers found earlier stay valid.
    edits: list[tuple[int, int, list[str]]] = []
    appended: dict[str, list[str]] = {}
    for section, name, value, comments in entries:
        existing = data.get(section)
        if existing is not None and not isinstance(existing, dict):
            raise V1ConfigError(_shown(output), *positions.of((section,)), f"{section}: must be a mapping")
        if isinstance(existing, dict) and name in existing:
            if existing[name] == value:
                continue
            start = positions.of((section, name), key=True)[0] - 1
            indent = len(lines[start]) - len(lines[start].lstrip())
            end = _block_end(lines, start, indent)
            edits.append((start, end, _entry_text(name, value, comments, indent)))
            warnings.append(
                f"{_shown(output)}:{start + 1}: {section}.{name} replaced by the imported one (it differed)"
            )
        elif isinstance(existing, dict) and existing:
            first = positions.of((section, next(iter(existing))), key=True)[0] - 1
            indent = len(lines[first]) - len(lines[first].lstrip())
            if lines[positions.of((section,), key=True)[0] - 1].rstrip().endswith("}"):
                raise MlopsError(
                    f"{_shown(output)}: `{section}:` is written in flow style ({{...}}); write it as a "
                    "block to import into it, or import into a new file with -o"
                )
            head = positions.of((section,), key=True)[0] - 1
            end = _block_end(lines, head, 0)
            edits.append((end, end, _entry_text(name, value, comments, indent)))
        else:
            appended.setdefault(section, []).extend(_entry_text(name, value, comments, 2))
    if not edits and not appended:
        return Imported(old_text, data, warnings, False)
    for start, end, new in sorted(edits, key=lambda e: (e[0], e[1]), reverse=True):
        lines[start:end] = new
    for section in _SECTIONS:
        if section in appended:
            if section in data and data[section] is not None:  # an empty `section:` line
                head = positions.of((section,), key=True)[0] - 1
                lines[head] = f"{section}:"
                lines[head + 1 : head + 1] = appended[section]
            else:
                lines += ["", f"{section}:", *appended[section]]
    text = "\n".join(lines) + "\n"
    try:
        new_data, _ = load(text)
    except YamlProblem as exc:  # pragma: no cover - a layout this merge does not handle
        raise MlopsError(
            f"{_shown(output)}: cannot merge into this layout ({exc.message}); import into a new file with -o"
        ) from None
    return Imported(text, new_data, warnings, True)


def _block_end(lines: list[str], start: int, indent: int) -> int:
    """Index after the last content line of the block whose key is on line ``start``."""
    end = start + 1
    last = start
    while end < len(lines):
        line = lines[end]
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            if len(line) - len(line.lstrip()) <= indent:
                break
            last = end
        elif stripped.startswith("#") and len(line) - len(line.lstrip()) > indent:
            last = end
        end += 1
    return last + 1


def write(result: Imported, output: Path) -> None:
    """Write the import's text atomically (a partial manifest never appears)."""
    output = output.absolute()
    fd, tmp = tempfile.mkstemp(prefix=f".{output.name}.", dir=output.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(result.text)
        os.replace(tmp, output)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
