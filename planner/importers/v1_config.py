"""Reading one Azure ML v1 config file (JSON or YAML) into a mapping, with hostile-input limits.

A v1 file can come from a pull request, so it is read with a size limit, numbers Python would
refuse or a manifest cannot hold are rejected, and every problem is one located
``file:line:col: message`` line (``V1ConfigError``) instead of a traceback. The inference config,
the deployment configs and the merge into an existing ``ml.yaml`` all report through here.
"""

from __future__ import annotations

import contextlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import MlopsError, Problem
from ..manifest import read_regular
from ..urlmask import mask_urls
from ..yamlpos import MAX_INT_DIGITS, Positions, YamlProblem, decode, load, one_line

MAX_CONFIG_BYTES = 1024 * 1024


class V1ConfigError(MlopsError):
    """A v1 file is unusable; the message is one ``file:line:col: what and how to fix`` line."""

    def __init__(self, file: str, line: int, col: int, message: str) -> None:
        super().__init__(str(Problem(file, line, col, one_line(mask_urls(message), 400))))


def _shown(path: Path) -> str:
    """A file as messages name it: relative to the working directory when it is inside it."""
    if path.is_absolute():
        with contextlib.suppress(ValueError, OSError):
            return path.relative_to(Path.cwd()).as_posix()
    return str(path)


@dataclass(frozen=True)
class _Config:
    """A v1 config file's mapping and where its keys are (JSON or YAML, as ``az ml`` took both)."""

    path: Path
    data: dict[str, Any]
    text: str
    positions: Positions | None = None
    """Set for YAML files (positions of every key); JSON keys are found in the text."""

    def at(self, key: str | tuple[str, ...] | None) -> tuple[int, int]:
        """Line and column of ``key`` (a top-level key or a path of keys), else 1:1; in JSON the
        first occurrence of the last key."""
        if key is None:
            return 1, 1
        path = (key,) if isinstance(key, str) else key
        if self.positions is not None:
            return self.positions.of(path, key=True) if path in self.positions.keys else (1, 1)
        index = self.text.find(f'"{path[-1]}"')
        if index < 0:
            return 1, 1
        line = self.text.count("\n", 0, index) + 1
        return line, index - (self.text.rfind("\n", 0, index) + 1) + 1


def _problem(config: _Config, key: str | tuple[str, ...] | None, message: str) -> V1ConfigError:
    return V1ConfigError(_shown(config.path), *config.at(key), message)


class _NumberProblem(ValueError):
    """A JSON number Python would refuse or a manifest cannot hold (raised from json's hooks)."""

    def __init__(self, literal: str, why: str) -> None:
        super().__init__(why)
        self.literal = literal
        self.why = why


def _bounded_int(literal: str) -> int:
    if sum(ch.isdigit() for ch in literal) > MAX_INT_DIGITS:
        raise _NumberProblem(literal, f"an integer with {len(literal.lstrip('-'))} digits is too large "
                             f"(at most {MAX_INT_DIGITS})")
    return int(literal)


def _finite_float(literal: str) -> float:
    value = float(literal)
    if not math.isfinite(value):
        raise _NumberProblem(literal, f"{one_line(literal, 20)} is not a finite number")
    return value


def _no_constant(literal: str) -> float:
    raise _NumberProblem(literal, f"{literal} is not a JSON number")


def _parse_json(path: Path, text: str) -> Any:
    try:
        return json.loads(text, parse_int=_bounded_int, parse_float=_finite_float, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise V1ConfigError(_shown(path), exc.lineno, exc.colno, f"not valid JSON: {exc.msg}") from None
    except _NumberProblem as exc:
        index = max(text.find(exc.literal), 0)
        line = text.count("\n", 0, index) + 1
        raise V1ConfigError(_shown(path), line, index - (text.rfind("\n", 0, index) + 1) + 1, exc.why) from None
    except RecursionError:
        raise V1ConfigError(_shown(path), 1, 1, "nested too deeply") from None


def _is_yaml(path: Path, text: str) -> bool:
    suffix = path.suffix.lower()
    if suffix in (".yml", ".yaml"):
        return True
    return suffix != ".json" and not text.lstrip().startswith("{")


def read_config(path: Path) -> _Config:
    """A v1 config file (JSON, or YAML as MLOpsPython ships them: ``.yml``/``.yaml``, or any other
    name whose text does not start with ``{``) as a mapping; located errors for bad files."""
    try:
        raw = read_regular(path, MAX_CONFIG_BYTES)
    except FileNotFoundError:
        raise MlopsError(f"{_shown(path)}: file not found") from None
    except OSError as exc:
        raise MlopsError(f"{_shown(path)}: cannot read: {exc.strerror or exc}") from None
    if raw is None:
        raise V1ConfigError(_shown(path), 1, 1, f"over the limit of {MAX_CONFIG_BYTES // 1024} KiB")
    try:
        text = decode(raw)
    except YamlProblem as exc:
        raise V1ConfigError(_shown(path), exc.line, exc.col, exc.message) from None
    if _is_yaml(path, text):
        try:
            data, positions = load(text)
        except YamlProblem as exc:
            raise V1ConfigError(_shown(path), exc.line, exc.col, exc.message) from None
        if not isinstance(data, dict):
            raise V1ConfigError(_shown(path), 1, 1, "must be a YAML mapping (key: value lines)")
        return _Config(path, data, text, positions)
    data = _parse_json(path, text)
    if not isinstance(data, dict):
        raise V1ConfigError(_shown(path), 1, 1, "must be a JSON object ({...})")
    return _Config(path, data, text)
