"""How values appear in messages: short, on one line, and never a secret one."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ..urlmask import mask_urls
from ..yamlpos import one_line

SENSITIVE_NAME = re.compile(r"(^|_)(key|keys|secret|password|token|connection_string)\Z")
ENVIRONMENT_VARIABLES = "environment_variables"
"""``deploy.environment_variables``: its values are secret everywhere (plans, messages)."""


def show(value: Any, limit: int = 60) -> str:
    """A value for a message: repr, cut to ``limit`` characters with the full length said."""
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str) and "://" in value:
        value = mask_urls(value)
    text = repr(value)
    if len(text) <= limit + 2:
        return one_line(text, limit + 40)
    return one_line(repr(str(value)[:limit]), limit + 40) + f"... ({len(str(value))} characters)"


def is_sensitive_path(where: tuple) -> bool:
    """A secret-named setting (``primary_key``, ``*_secret``...) or an environment variable value."""
    return any(isinstance(p, str) and (SENSITIVE_NAME.search(p) is not None or p == ENVIRONMENT_VARIABLES)
               for p in where)
