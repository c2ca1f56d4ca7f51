"""The provider contract over ``provider: kubernetes``, against the real control plane of .ci/kube-up.sh
(its node agent runs the pods in the Docker engine): each case deploys its own project in a namespace
of its own, with the cluster's kubeconfig exported as KUBECONFIG; images go
to the local test registry."""

from __future__ import annotations

import contextlib
import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "kubernetes"))
sys.path.insert(0, str(HERE.parent / "docker"))
sys.path.insert(0, str(HERE))

from test_provider_contract import ContractKind  # noqa: E402


@contextlib.contextmanager
def _real_cluster(tmp: Path) -> Iterator[dict[str, str]]:
    from docker_fixtures import _engine_or_skip
    from real_cluster import shared_cluster

    _engine_or_skip()
    if not os.environ.get("MLOPS_TEST_REGISTRY"):
        pytest.skip("no local registry: MLOPS_TEST_REGISTRY is not set (run .ci/docker-up.sh)")
    from kubernetes import client, config

    cluster = shared_cluster()
    namespace = f"contract-{uuid.uuid4().hex[:8]}"   # the machine's cluster: other sessions may use it too
    try:
        yield {"KUBECONFIG": str(cluster.kubeconfig), "MLOPS_CONTRACT_NAMESPACE": namespace}
    finally:
        with contextlib.suppress(Exception):
            client.CoreV1Api(config.new_client_from_config(str(cluster.kubeconfig))).delete_namespace(namespace)


KIND = ContractKind(
    "kubernetes",
    '{provider: kubernetes, namespace: "${MLOPS_CONTRACT_NAMESPACE}", registry: "${MLOPS_TEST_REGISTRY}"}',
    {"auth": "key", "replicas": 1},
    (pytest.mark.slow, pytest.mark.docker),
    _real_cluster,
)
