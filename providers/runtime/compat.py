"""Azure ML's import names for raw-HTTP scripts, served by this package without any azureml package.

Entry scripts start with ``from azureml.contrib.services.aml_request import AMLRequest, rawhttp``
(or import from ``azureml_inference_server_http.api``). Azure's server makes those names point at
its own modules; ``install()`` does the same with a finder at the front of ``sys.meta_path``:

* the two modules always resolve to this package's ``aml_request`` / ``aml_response`` (one module
  object under every name, so ``@rawhttp`` sets one flag), even where azureml packages exist;
* their parent packages (``azureml``, ``azureml.contrib``, …) are empty placeholders only when
  nothing installed provides them, so the rest of an installed ``azureml.*`` stays importable.

Nothing is imported until a script asks, so scripts that do not use them never load werkzeug.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
from collections.abc import Sequence
from types import ModuleType

_PACKAGE = __name__.rpartition(".")[0]
_ALIASES = {
    "azureml.contrib.services.aml_request": "aml_request",
    "azureml.contrib.services.aml_response": "aml_response",
    "azureml_inference_server_http.api.aml_request": "aml_request",
    "azureml_inference_server_http.api.aml_response": "aml_response",
}
_PARENTS = {parent for name in _ALIASES for parent in (name.rsplit(".", i)[0] for i in (1, 2, 3)) if parent}


class _AliasLoader(importlib.abc.Loader):
    """Hands out this package's module itself (not a copy) under Azure's name."""

    def __init__(self, target: str) -> None:
        self._target = target

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        return importlib.import_module(f"{_PACKAGE}.{self._target}")

    def exec_module(self, module: ModuleType) -> None:
        """Already executed under its own name."""


class _PlaceholderLoader(importlib.abc.Loader):
    """An empty package standing in for an azureml parent package that is not installed."""

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> None:
        return None

    def exec_module(self, module: ModuleType) -> None:
        module.__doc__ = "Placeholder created by mlops_runtime (no azureml package installed)."


class AzureMLFinder(importlib.abc.MetaPathFinder):
    """Resolves Azure's raw-HTTP module names (see the module docstring)."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        alias = _ALIASES.get(fullname)
        if alias is not None:
            return importlib.machinery.ModuleSpec(fullname, _AliasLoader(alias))
        if fullname in _PARENTS and importlib.machinery.PathFinder.find_spec(fullname, path) is None:
            return importlib.machinery.ModuleSpec(fullname, _PlaceholderLoader(), is_package=True)
        return None


def install() -> None:
    """Put the finder first on ``sys.meta_path`` (idempotent); call before the script is imported."""
    if not any(isinstance(finder, AzureMLFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, AzureMLFinder())


def raw_requested() -> bool:
    """True once a script applied ``@rawhttp`` (only possible after it imported the module)."""
    module = sys.modules.get(f"{_PACKAGE}.aml_request")
    return bool(module is not None and module.raw_requested())
