"""JSON Schema checks that cost little when the document is valid, with jsonschema's own errors when not.

Importing jsonschema costs about 60 ms (more than the rest of `mlops validate` on a small
manifest), and its validator is pure Python. jsonschema-rs (compiled, 2020-12 compliant) imports in
about 10 ms and decides validity in microseconds. It is used only to answer "is this valid?":
every error a user sees still comes from jsonschema, so messages, paths and the file:line:col
positions built from them stay exactly as they were.

That split is safe only where the two engines cannot disagree in the one direction that matters
(jsonschema-rs says valid, jsonschema says invalid). The schema keywords agree (both pass the
official test suite); regular expressions are the exception: Python's `re` and Rust's regex differ
in what `\\w`, `\\d`, `\\s`, `[[:alpha:]]`, nested classes and `(?…)` groups mean. A schema whose
patterns use any of those is checked by jsonschema alone. Anything jsonschema-rs cannot take (a
value it cannot convert, a schema it cannot compile) also falls back to jsonschema.

`$` is read as JSON Schema (ECMA-262) reads it, the end of the text, by both engines: Rust's regex
does so already, while Python's `$` also matches before a final newline, so `"api\\n"` passed every
name check. jsonschema's `pattern` and `patternProperties` are replaced here by versions that
translate `$` to Python's `\\Z` (the schemas keep the portable `$` that editors understand).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import jsonschema

_HEX4 = re.compile(r"[0-9A-Fa-f]{4}")
_CLASS_SET_OPERATORS = ("&&", "~~", "--")


def engine_neutral(pattern: str) -> bool:
    """True when Python's `re` and Rust's regex read ``pattern`` alike (conservatively)."""
    i, in_class, class_start = 0, False, 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\":
            nxt = pattern[i + 1:i + 2]
            if nxt == "u" and _HEX4.fullmatch(pattern[i + 2:i + 6]):
                i += 6
                continue
            if nxt and nxt.isascii() and not nxt.isalnum() and nxt not in " \t":
                i += 2
                continue
            return False  # \w \d \s \b \p, backreferences, \n…: the engines differ or may
        if in_class:
            if pattern.startswith(_CLASS_SET_OPERATORS, i) or ch == "[":
                return False
            if ch == "]" and i > class_start:
                in_class = False
        elif ch == "[":
            in_class = True
            class_start = i + 1
            if pattern[class_start:class_start + 1] == "^":
                class_start += 1
        elif pattern.startswith("(?", i):
            return False
        elif ch == "{" and not re.match(r"\{\d+(,\d*)?\}", pattern[i:]):
            return False  # a literal `{` or `{,n}`: read differently by the two engines
        i += 1
    return not in_class


def _patterns(schema: Any) -> Iterator[str]:
    """Every regular expression a schema holds: `pattern` values and `patternProperties` keys."""
    if isinstance(schema, Mapping):
        for key, value in schema.items():
            if key == "pattern" and isinstance(value, str):
                yield value
            elif key == "patternProperties" and isinstance(value, Mapping):
                yield from (k for k in value if isinstance(k, str))
            yield from _patterns(value)
    elif isinstance(schema, list):
        for item in schema:
            yield from _patterns(item)


def _fast_validator(schema: Mapping[str, Any]) -> Any:
    """A jsonschema-rs validator for ``schema``, or None where only jsonschema may judge."""
    if not all(engine_neutral(p) for p in _patterns(schema)):
        return None
    try:
        import jsonschema_rs
    except ImportError:
        return None
    try:
        return jsonschema_rs.Draft202012Validator(dict(schema), validate_formats=False)
    except Exception:  # noqa: BLE001 - any schema it cannot compile is jsonschema's to judge
        return None


def python_pattern(pattern: str) -> str:
    """``pattern`` for Python's `re` with ECMA-262's `$`: every unescaped `$` outside a class becomes `\\Z`."""
    out: list[str] = []
    i, in_class = 0, False
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\":
            out.append(pattern[i:i + 2])
            i += 2
            continue
        if in_class:
            in_class = ch != "]" or (out and out[-1] in ("[", "[^"))
        elif ch == "[":
            in_class = True
            if pattern.startswith("[^", i):
                out.append("[^")
                i += 2
                continue
        elif ch == "$":
            ch = r"\Z"
        out.append(ch)
        i += 1
    return "".join(out)


@cache
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(python_pattern(pattern))


def _pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Iterator[Any]:
    from jsonschema import ValidationError

    if validator.is_type(instance, "string") and not _compiled(pattern).search(instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


def _pattern_properties(validator: Any, patterns: Mapping[str, Any], instance: Any, schema: Any) -> Iterator[Any]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in patterns.items():
        for key, value in instance.items():
            if _compiled(pattern).search(key):
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


@cache
def _validator_class() -> Any:
    """Draft 2020-12 with ECMA-262's `$` in `pattern` and `patternProperties`."""
    import jsonschema

    return jsonschema.validators.extend(jsonschema.Draft202012Validator,
                                        {"pattern": _pattern, "patternProperties": _pattern_properties})


class SchemaCheck:
    """One schema, checked many times: ``errors(instance)`` lists jsonschema's ValidationErrors.

    ``within`` is the whole schema a fragment belongs to, so that its `$ref`s resolve there
    (service entries are checked one by one against the manifest schema's entry fragment).
    """

    def __init__(self, schema: Mapping[str, Any], within: Mapping[str, Any] | None = None):
        self.schema = schema
        self.within = within
        self._slow: Any = None
        self._fast = _fast_validator(schema if within is None else _fragment(schema, within))

    def passes(self, instance: Any) -> bool:
        """True when the fast engine finds ``instance`` valid; False: ask ``errors()``."""
        if self._fast is None:
            return False
        try:
            return bool(self._fast.is_valid(instance))
        except Exception:  # noqa: BLE001 - a value it cannot convert: jsonschema decides
            return False

    def errors(self, instance: Any) -> list[jsonschema.ValidationError]:
        if self.passes(instance):
            return []
        return list(self.validator().iter_errors(instance))

    def validator(self) -> Any:
        """jsonschema's validator (imported on first need), the source of every error message."""
        if self._slow is None:
            if self.within is None:
                self._slow = _validator_class()(self.schema)
            else:
                self._slow = _validator_class()(self.within).evolve(schema=self.schema)
        return self._slow


def _fragment(schema: Mapping[str, Any], within: Mapping[str, Any]) -> dict[str, Any]:
    """``schema`` as a document of its own whose `#/$defs/…` references still reach ``within``'s."""
    defs = within.get("$defs")
    if not isinstance(defs, Mapping) or "mlops-fragment" in defs:
        defs = {}
    out: dict[str, Any] = {"$defs": {**defs, "mlops-fragment": schema}, "$ref": "#/$defs/mlops-fragment"}
    for key in ("$schema", "$id"):
        if key in within:
            out[key] = within[key]
    return out
