"""Fixtures for the Kubernetes tests: the API double (with or without its kubelet) and a provider on it.

Not a conftest.py (see tests/docker/docker_fixtures.py for why); test modules import these names.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from providers.base import ensure_connected

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "doubles"))
sys.path.insert(0, str(HERE.parent / "docker"))

from docker_fixtures import _engine_or_skip, engine_and_registry_or_skip  # noqa: E402
from kubernetes_double import KubernetesDouble  # noqa: E402

from providers.base import ProjectContext  # noqa: E402
from providers.kubernetes import FpgaProvider, KubernetesProvider  # noqa: E402

__all__ = ["FPGA", "KubernetesDouble", "_engine_or_skip", "api_cluster", "api_double", "engine_and_registry_or_skip",
           "make_provider", "running_double"]

FPGA = "amd.com/xilinx_u250_gen3x16_xdma_shell_4_1-0"


@contextlib.contextmanager
def running_double(state: Path, *, kubelet: bool, **kwargs: Any) -> Iterator[KubernetesDouble]:
    """A double on 127.0.0.1 for the duration; its containers are removed on the way out."""
    double = KubernetesDouble(state, kubelet=kubelet, **kwargs).start()
    try:
        yield double
    finally:
        double.stop()


@pytest.fixture(scope="module")
def api_double(tmp_path_factory) -> Iterator[KubernetesDouble]:
    """The API server and control plane without a kubelet: pods are scheduled, never run."""
    with running_double(tmp_path_factory.mktemp("k8s-api"), kubelet=False) as double:
        yield double


def make_provider(double: KubernetesDouble, tmp: Path, *, kind: type[KubernetesProvider] = KubernetesProvider,
                  project: str = "proj", target: str = "k8s", **config: Any) -> KubernetesProvider:
    context = ProjectContext(project=project, root=tmp, state_dir=tmp / ".mlops", cache_dir=tmp / "cache",
                             git={"commit": "0" * 40})
    settings = {"provider": kind.kind, "kubeconfig": str(double.kubeconfig), "namespace": "ml",
                "registry": "127.0.0.1:5000", **config}
    if kind is FpgaProvider:
        settings.setdefault("resource", FPGA)
    provider = kind(target=target, config=settings, context=context)
    ensure_connected(provider)
    return provider


def _fresh_namespaces(kubeconfig: Path, names: tuple[str, ...], timeout: float = 120) -> None:
    """Delete NAMES (left by an earlier session on a reused cluster) and wait until they are gone."""
    import time

    from kubernetes import client, config

    core = client.CoreV1Api(config.new_client_from_config(str(kubeconfig)))
    for name in names:
        with contextlib.suppress(client.ApiException):
            core.delete_namespace(name)
    deadline = time.monotonic() + timeout
    while any(ns.metadata.name in names for ns in core.list_namespace().items):
        assert time.monotonic() < deadline, f"namespaces {names} still terminating after {timeout} s"
        time.sleep(0.5)


@pytest.fixture(scope="module", params=["real", "double"])
def api_cluster(request, tmp_path_factory) -> Iterator[Any]:
    """The same API tests on the real control plane (.ci/kube-up.sh) and on the double.

    On the real one the node agent runs what is scheduled (these tests' images do not exist, so
    their pods wait in ErrImagePull); the namespaces they use are emptied first.
    """
    if request.param == "double":
        with running_double(tmp_path_factory.mktemp("k8s-api"), kubelet=False) as double:
            yield double
        return
    from real_cluster import shared_cluster

    real = shared_cluster()
    _fresh_namespaces(real.kubeconfig, ("sem", "ml"))
    try:
        yield real
    finally:
        real.remove_nodes()
