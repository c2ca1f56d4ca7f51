"""The provider contract over ``provider: kubernetes``: each case gets its own Kubernetes double (pods run in
the Docker engine), its kubeconfig exported as KUBECONFIG; images go to the local test registry."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "doubles"))
sys.path.insert(0, str(HERE.parent / "docker"))
sys.path.insert(0, str(HERE))

from test_provider_contract import ContractKind  # noqa: E402


@contextlib.contextmanager
def _double(tmp: Path) -> Iterator[dict[str, str]]:
    from docker_fixtures import _engine_or_skip
    from kubernetes_double import KubernetesDouble

    _engine_or_skip()
    if not os.environ.get("MLOPS_TEST_REGISTRY"):
        pytest.skip("no local registry: MLOPS_TEST_REGISTRY is not set (run .ci/docker-up.sh)")
    double = KubernetesDouble(tmp / "k8s-double").start()
    try:
        yield {"KUBECONFIG": str(double.kubeconfig)}
    finally:
        double.stop()


KIND = ContractKind(
    "kubernetes",
    '{provider: kubernetes, namespace: contract, registry: "${MLOPS_TEST_REGISTRY}"}',
    {"auth": "key", "replicas": 1},
    (pytest.mark.slow, pytest.mark.docker),
    _double,
)
