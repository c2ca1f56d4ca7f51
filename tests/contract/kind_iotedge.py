"""The provider contract over ``provider: iotedge``: the IoT Hub double, its devices' modules in Docker."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def _fleet(tmp: Path) -> Iterator[dict[str, str]]:
    sys.path.insert(0, str(TESTS / "docker"))
    sys.path.insert(0, str(TESTS / "doubles"))
    from docker_fixtures import _engine_or_skip

    _engine_or_skip()
    registry = os.environ.get("MLOPS_TEST_REGISTRY")
    if not registry:
        pytest.skip("no local registry: MLOPS_TEST_REGISTRY is not set (run .ci/docker-up.sh)")
    import iotedge_double

    with tempfile.TemporaryDirectory(dir=tmp) as folder, iotedge_double.running(Path(folder)) as double:
        yield double.env(registry)


def _kind():
    from test_provider_contract import ContractKind

    target = ("{provider: iotedge, hub: '${IOTHUB_CONNECTION_STRING}', target_condition: \"tags.site='plant-3'\", "
              "registry: '${IOTEDGE_REGISTRY}', device_host: '{tags.host}'}")
    return ContractKind("iotedge", target, {"auth": "key", "rollout_timeout_s": 120},
                        (pytest.mark.slow, pytest.mark.docker), _fleet)


KIND = _kind()
