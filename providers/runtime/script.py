"""The user's entry script: loading it, checking ``init``/``run``, and how ``run`` takes its input.

The rules are Azure's server's (``user_script.py``), so that a score.py written for Azure ML
behaves the same here: the module is loaded from its file as ``entry_module``; ``run`` may not
take ``*args``/``**kwargs``/positional-only parameters; a parameter named ``request_headers``
receives the request headers; an ``inference_schema``-decorated ``run`` receives the JSON body
mapped to its parameters, an undecorated one receives the body as a string, and a ``@rawhttp``
one the request object (``aml_request.AMLRequest``).
"""

from __future__ import annotations

import importlib.util
import inspect
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from . import compat


class ScriptError(Exception):
    """The entry script cannot be served; the message is one line a user can act on."""


@dataclass(frozen=True)
class EntryScript:
    """A loaded entry script and the facts about its ``run`` that the server needs per request."""

    path: Path
    init: Callable[[], Any]
    run: Callable[..., Any]
    """The function called per request (the real score script's, even behind a driver module)."""
    input_names: tuple[str, ...]
    """Parameters fed from the request: the first one (raw), or all of them (schema-decorated)."""
    defaults: dict[str, Any]
    """Defaults of schema-decorated parameters, used when the body omits them."""
    wants_headers: bool
    """``run`` declares ``request_headers``."""
    schema_decorated: bool
    """``run`` carries ``inference_schema`` decorators: JSON body mapped to parameters."""
    raw: bool = False
    """The script used ``@rawhttp``: ``run`` gets the request object, for GET, POST and OPTIONS."""


def _extend_sys_path(*folders: Path | None) -> None:
    for folder in folders:
        if folder is not None and str(folder) not in sys.path:
            sys.path.append(str(folder))


def _import(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("entry_module", path)
    if spec is None or spec.loader is None:
        raise ScriptError(f"entry script {path} cannot be imported (is it a .py file?)")
    module = importlib.util.module_from_spec(spec)
    sys.modules["entry_module"] = module
    try:
        spec.loader.exec_module(module)
    except BaseException as exc:  # noqa: BLE001 - anything the user's top level raises
        raise ScriptError(f"entry script {path} failed to load: {type(exc).__name__}: {exc}") from exc
    return module


def _is_schema_decorated(func: Callable[..., Any]) -> bool:
    """True when ``inference_schema`` decorated ``func``.

    Only asked when the package is already imported: a script can only use the decorators after
    importing it, and not importing it ourselves keeps startup light when it is absent.
    """
    schema_util = sys.modules.get("inference_schema.schema_util")
    if schema_util is None:
        return False
    return bool(schema_util.is_schema_decorated(func))


def analyse(path: Path, init: Callable[[], Any], run: Callable[..., Any]) -> EntryScript:
    """Check ``run``'s signature and decide how requests are mapped onto it."""
    try:
        params = list(inspect.signature(run).parameters.values())
    except (TypeError, ValueError) as exc:
        raise ScriptError(f"run() in {path} has no inspectable signature: {exc}") from exc
    allowed = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    if any(p.kind not in allowed for p in params):
        raise ScriptError(f"run() in {path} cannot accept positional-only arguments, *args, or **kwargs")
    wants_headers = any(p.name == "request_headers" for p in params)
    inputs = [p for p in params if p.name != "request_headers"]
    if not inputs:
        raise ScriptError(f"run() in {path} needs a parameter for the input data")
    decorated = _is_schema_decorated(run)
    raw = compat.raw_requested()
    if raw and decorated:
        raise ScriptError(f"run() in {path} cannot be decorated with both @rawhttp and @input_schema")
    chosen = inputs if decorated else inputs[:1]
    return EntryScript(
        path=path,
        init=init,
        run=run,
        input_names=tuple(p.name for p in chosen),
        defaults={p.name: p.default for p in chosen if p.default is not inspect.Parameter.empty},
        wants_headers=wants_headers,
        schema_decorated=decorated,
        raw=raw,
    )


def load(path: Path, app_root: Path, source_dir: Path | None = None) -> EntryScript:
    """Import the entry script and check it defines ``init()`` and ``run()``; raises ScriptError."""
    _extend_sys_path(app_root, source_dir, path.parent)
    compat.install()
    module = _import(path)
    for name in ("init", "run"):
        if not callable(getattr(module, name, None)):
            raise ScriptError(f"entry script {path} does not define a {name}() function")
    # Scripts generated by the old Azure SDK forward to the real script through a "driver
    # module"; Azure's server calls the real run() directly (the driver drops the schema
    # decorators), and so do we. init() stays the driver's: it may do extra set-up.
    run = module.run
    driver = getattr(module, "driver_module", None)
    if isinstance(driver, ModuleType) and callable(getattr(driver, "run", None)):
        run = driver.run
    return analyse(path, module.init, run)
