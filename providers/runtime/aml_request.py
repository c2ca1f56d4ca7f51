"""``azureml.contrib.services.aml_request``, as Azure's server provides it: ``rawhttp`` and ``AMLRequest``.

Entry scripts written for Azure ML import these names; the runtime serves this module under
that name (see ``compat``), so no azureml package is needed. Imported only by scripts that use
it, which keeps werkzeug out of the other scripts' processes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from werkzeug.wrappers import Request

F = TypeVar("F", bound=Callable[..., Any])

_rawHttpRequested = False  # noqa: N816 - Azure's name; scripts and tools may read it
"""Set by ``@rawhttp``; like Azure's server, one use anywhere makes ``run()`` raw."""


def rawhttp(func: F) -> F:
    """Mark ``run()`` as wanting the HTTP request object instead of the body string."""
    global _rawHttpRequested
    _rawHttpRequested = True
    return func


def raw_requested() -> bool:
    return _rawHttpRequested


class AMLRequest(Request):
    """The request a ``@rawhttp`` ``run()`` receives: werkzeug's ``Request``, as under Azure's
    Flask-based server (``method``, ``path``, ``full_path``, ``args``, ``headers``, ``get_data``,
    ``json``, ``form``, ``files``, …), with Flask's limits (500 kB per form field, 1,000 parts)."""


__all__ = ["AMLRequest", "rawhttp"]
