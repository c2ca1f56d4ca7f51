"""The provider contract over ``provider: minimal``, a kind written in tests/contract/minimal_provider.py
against the provider interface alone (registered in-process, as a plugin's entry point would)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))


@contextlib.contextmanager
def _registered(tmp: Path) -> Iterator[dict[str, str]]:
    from minimal_provider import MinimalProvider

    from providers import registry

    registry.register("minimal", MinimalProvider)
    try:
        yield {}
    finally:
        registry.unregister("minimal")


def _kind():
    from aci_fixtures import free_port
    from test_provider_contract import ContractKind

    return ContractKind("minimal", "{provider: minimal}", {"port": free_port(), "auth": "key"}, (pytest.mark.slow,),
                        _registered)


sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "aci"))
KIND = _kind()
