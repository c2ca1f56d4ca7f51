"""Lazy imports of the cloud and engine SDKs, one thread at a time.

The SDKs are imported when a target first needs them, and targets are read in parallel threads.
Two threads importing two SDKs that share a dependency at the same moment (the ACI target's
``azure.identity`` -> ``msal`` -> ``requests`` while an image target's ``docker`` -> ``requests``)
can deadlock in Python's per-module import locks; Python breaks the deadlock by handing one thread
a partially initialised module, and the import fails ("cannot import name 'parse_dict_header' from
partially initialized module 'requests.utils'"): `mlops apply` on the ACI example said the Azure SDK
was not installed. Every first import of an SDK goes through ``load``, and every provider plugin is
loaded (its module imports its SDK) under ``importing()``: one lock for both.
"""

from __future__ import annotations

import importlib
import sys
import threading

_IMPORTS = threading.RLock()


def importing() -> threading.RLock:
    """The lock to hold around an import that may pull in an SDK (a provider plugin's module)."""
    return _IMPORTS


def load(*modules: str) -> None:
    """Import ``modules`` (dotted names) unless already imported; ImportError as ``import`` raises it."""
    if all(name in sys.modules for name in modules):
        return
    with _IMPORTS:
        for name in modules:
            importlib.import_module(name)
