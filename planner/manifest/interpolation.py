"""``${VAR}`` interpolation, and the problem sink every check reports to.

Interpolation learns which values came from the environment; every later check asks the same
object whether a value may be echoed, so what interpolation hid stays hidden in every message.

``${VAR}`` typing: interpolation yields text. Where a value is exactly one ``${VAR}`` reference
and the schema does not accept text there (``port: ${PORT}``), a value of the form ``8080``,
``-1``, ``1.5``, ``true`` or ``false`` takes that type (see ``loading``); everywhere else it stays text.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..yamlpos import one_line
from .wording import is_sensitive_path, show

_VAR = re.compile(r"\$(\$)?\{([^}]*)\}")
VAR_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")
PUBLIC_VARS = "public_vars"
"""Top-level list of variable names whose values may be printed (``public_vars: [AZURE_LOCATION]``)."""
_INT = re.compile(r"^-?[0-9]{1,18}\Z")
_FLOAT = re.compile(r"^-?[0-9]+\.[0-9]+\Z")

Report = Callable[..., None]


class Checks:
    """Where problems go, plus what interpolation learnt (which values came from the environment)."""

    def __init__(self, report: Report):
        self.report = report
        self.from_env: set[tuple] = set()
        """Paths of values built from ${VAR}: never echoed, they often hold secrets."""
        self.whole: set[tuple] = set()
        """Paths of values that were exactly one ${VAR} reference: candidates for typing."""
        self.unset: set[tuple] = set()
        """Paths whose ${VAR} is not set: reported once, not again by the schema."""
        self.samples: dict[Path, str | None] = {}
        """Sample request files read so far (services may share one): path -> problem or None."""
        self.entry_scripts: dict[tuple[Path, str], tuple[str, str]] = {}
        """Entry scripts looked at so far (services share them): (source_dir, script) -> verdict."""
        self.values: set[str] = set()
        """Values taken from the environment, blanked out of any message that still holds one."""
        self.public: frozenset[str] = frozenset()
        """Variables the manifest declares non-sensitive (``public_vars``)."""
        self.references: dict[str, str] = {}
        """Non-public values -> their ``${NAME}`` (see planner.envrefs)."""
        self.written: dict[tuple[str, str], str] = {}
        """(attribute, interpolated text) -> the text as the manifest wrote it, public values filled in."""

    def redact(self, message: str) -> str:
        """The backstop: no message holds a value from the environment, whatever check wrote it."""
        for value in sorted(self.values, key=len, reverse=True):
            for form in {value, one_line(value, len(value) * 6 + 8), repr(value)[1:-1]}:
                message = message.replace(form, self.references.get(value, "(a value from the environment)"))
        return message

    def secret(self, where: tuple, schema_secret: bool = False) -> bool:
        """Whether the value at ``where`` must not appear in a message."""
        return schema_secret or is_sensitive_path(where) or any(where[:i] in self.from_env
                                                                for i in range(len(where), 0, -1))

    def shown(self, where: tuple, value: Any, limit: int = 60) -> str:
        """``value`` for a message, or words in its place when it is secret or from the environment."""
        return "the value (from the environment or secret)" if self.secret(where) else show(value, limit)

    def interpolate(self, value: Any, path: tuple, env: Mapping[str, str]) -> Any:
        """Replace ``${VAR}`` in strings from the environment; ``$${`` escapes a literal ``${``."""
        if isinstance(value, dict):
            return {k: self.interpolate(v, (*path, k), env) for k, v in value.items()}
        if isinstance(value, list):
            return [self.interpolate(v, (*path, i), env) for i, v in enumerate(value)]
        if isinstance(value, float) and not math.isfinite(value):
            # YAML's .nan and .inf are numbers to JSON Schema, but no setting can mean them (NaN passes
            # every bound): one clear line here instead of a failure at apply.
            field_name = one_line(".".join(str(p) for p in path), 120) or "(top level)"
            self.report(path, f"{field_name}: {value!r} is not a usable number (NaN or infinity); write a finite "
                              "number")
            return value
        if not isinstance(value, str) or "${" not in value:
            return value
        used = False
        hidden = False

        def sub(match: re.Match[str]) -> str:
            nonlocal used, hidden
            if match.group(1):
                return "${" + match.group(2) + "}"
            used = True
            name = match.group(2)
            if not VAR_NAME.fullmatch(name):
                self.report(path, f"invalid variable reference ${{{one_line(name, 40)}}} "
                                  "(use ${NAME} with letters, digits, _)")
                return ""
            if name not in env:
                self.report(path, f"environment variable {name} is not set (export {name}=... before running mlops)")
                self.unset.add(path)
                return ""
            if name not in self.public and env[name]:
                hidden = True
                self.references.setdefault(env[name], "${" + name + "}")
                if len(env[name]) >= 6:
                    self.values.add(env[name])
            return env[name]

        out = _VAR.sub(sub, value)
        if used:
            self.from_env.add(path)
            match = _VAR.fullmatch(value)
            if match and not match.group(1):
                self.whole.add(path)
        if hidden:
            attribute = next((p for p in reversed(path) if isinstance(p, str)), "")
            self.written[(attribute, out)] = _VAR.sub(
                lambda m: m.group(0) if m.group(1) or m.group(2) not in self.public else env.get(m.group(2), ""),
                value)
        return out


def public_vars(value: Any) -> frozenset[str]:
    """The variables the manifest declares non-sensitive (their values print); the schema checks the shape."""
    if not isinstance(value, list):
        return frozenset()
    return frozenset(v for v in value if isinstance(v, str) and VAR_NAME.fullmatch(v))


def typed_value(text: str) -> Any:
    """The int, float or bool ``text`` spells, else None (text stays text)."""
    if _INT.match(text):
        return int(text)
    if _FLOAT.match(text):
        return float(text)
    return {"true": True, "false": False}.get(text)
