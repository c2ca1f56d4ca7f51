"""Starting the ARM double for tests (the same code `.ci/double-up.sh aci` runs) and the env it needs.

Not a conftest (see tests/docker/docker_fixtures.py for why): test modules and the contract kind
import these helpers by name.
"""

from __future__ import annotations

import contextlib
import secrets
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "doubles"))
sys.path.insert(0, str(ROOT / "docker"))

from aci_double import AciDouble  # noqa: E402
from docker_fixtures import _engine_or_skip, registry_or_skip  # noqa: E402

TARGET_FLOW = ('{provider: aci, subscription_id: "${AZURE_SUBSCRIPTION_ID}", resource_group: ml-dev, '
               'location: westeurope, registry: "${ACR_LOGIN_SERVER}", arm_endpoint: "${AZURE_ARM_ENDPOINT}"}')
CLEARED = ("AZURE_CLIENT_CERTIFICATE_PATH", "AZURE_FEDERATED_TOKEN_FILE", "AZURE_USERNAME", "AZURE_PASSWORD",
           "AZURE_AUTHORITY_HOST", "MLOPS_REGISTRY_USERNAME", "MLOPS_REGISTRY_PASSWORD")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def double_running(state: Path, *, engine: bool = True, **kwargs) -> Iterator[AciDouble]:
    """The double on a thread, its containers removed afterwards whatever happened."""
    double = AciDouble(state, engine=engine, **kwargs).start()
    try:
        yield double
    finally:
        double.stop()


def env_for(double: AciDouble) -> dict[str, str]:
    """Everything a shell would export after `eval "$(bash .ci/double-up.sh aci)"`, the others cleared."""
    return {**{k: "" for k in CLEARED}, **double.env()}


def apply_env(monkeypatch, env: dict[str, str]) -> None:
    for key, value in env.items():
        if value:
            monkeypatch.setenv(key, value)
        else:
            monkeypatch.delenv(key, raising=False)


@contextlib.contextmanager
def engine_double(tmp: Path) -> Iterator[dict[str, str]]:
    """For the contract suite: an engine-backed double whose registry wants the pull credentials."""
    _engine_or_skip()
    registry = registry_or_skip()
    auth = {registry: ("mlops-double", secrets.token_urlsafe(12))}
    with double_running(tmp / "aci-double", registry_auth=auth) as double:
        yield env_for(double)
