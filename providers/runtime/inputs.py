"""Turning an HTTP request into the keyword arguments of ``run()``.

The mapping and the error messages are Azure's server's (``input_parsers.py``), so clients and
tests written against Azure see the same 400/415 answers. One deliberate difference: a request
without a Content-Type is taken as JSON (Azure's server answers 500 there).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl

from .script import EntryScript


class InputError(Exception):
    """The request cannot be given to ``run()``; carries the HTTP status and Azure's message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _json_or_text(value: str) -> Any:
    try:
        return json.loads(value)
    except ValueError:
        return value


def query_values(query_string: bytes) -> dict[str, Any]:
    """``?a=1&b=[1,2]&c=x&c=y`` -> ``{"a": 1, "b": [1, 2], "c": ["x", "y"]}``, as Azure parses GET."""
    grouped: dict[str, list[str]] = {}
    for key, value in parse_qsl(query_string.decode("utf-8", "replace"), keep_blank_values=True):
        grouped.setdefault(key, []).append(value)
    return {
        key: _json_or_text(values[0]) if len(values) == 1 else [_json_or_text(v) for v in values]
        for key, values in grouped.items()
    }


def _is_json(content_type: str | None) -> bool:
    """JSON unless told otherwise: ``application/json``, ``application/*+json``, or no header."""
    if not content_type:
        return True
    mime = content_type.split(";", 1)[0].strip().lower()
    return mime == "application/json" or (mime.startswith("application/") and mime.endswith("+json"))


def _schema_arguments(script: EntryScript, values: dict[str, Any]) -> dict[str, Any]:
    arguments: dict[str, Any] = {}
    for name in script.input_names:
        if name in values:
            arguments[name] = values[name]
        elif name in script.defaults:
            arguments[name] = script.defaults[name]
        else:
            raise InputError(400, f"A value is not provided for the {name!r} parameter.")
    return arguments


def arguments_for(
    script: EntryScript, method: str, query_string: bytes, content_type: str | None, body: bytes
) -> dict[str, Any]:
    """The keyword arguments for ``run()`` (without ``request_headers``); raises InputError."""
    if method == "GET":
        values = query_values(query_string)
        if script.schema_decorated:
            return _schema_arguments(script, values)
        return {script.input_names[0]: json.dumps(values)}

    if not script.schema_decorated:
        try:
            return {script.input_names[0]: body.decode("utf-8")}
        except UnicodeDecodeError as exc:
            raise InputError(400, f"Input cannot be decoded as UTF-8: {exc}") from None

    if not _is_json(content_type):
        raise InputError(415, "Expects Content-Type to be application/json")
    try:
        document = json.loads(body)
    except ValueError as exc:  # JSONDecodeError, or UnicodeDecodeError from bytes
        if body:
            raise InputError(400, f"POST body could not be decoded as JSON: {exc}") from None
        raise InputError(400, "POST body is empty. Expecting a JSON dictionary.") from None
    if not isinstance(document, dict):
        raise InputError(400, "POST body should be a JSON dictionary.")
    return _schema_arguments(script, document)
