"""``provider: aks`` fetching the cluster's user kubeconfig through Azure Resource Manager (a local ARM double
with its login endpoints), then talking to the Kubernetes double with it. Real azure-identity, real client."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path

import k8s_fixtures
import pytest
from aks_arm_double import AksArmDouble

from planner.errors import Unreachable
from providers.base import ProjectContext, ensure_connected
from providers.kubernetes import AksProvider

api_double = k8s_fixtures.api_double
SUB, RG = "00000000-0000-0000-0000-000000000001", "ml-rg"


@pytest.fixture
def arm(api_double, tmp_path: Path, monkeypatch) -> Iterator[AksArmDouble]:
    double = AksArmDouble(tmp_path / "arm", {(SUB, RG, "prod-aks"): api_double.kubeconfig}).start()
    for key, value in double.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("KUBECONFIG", raising=False)
    try:
        yield double
    finally:
        double.stop()


def _provider(arm: AksArmDouble, tmp: Path, cluster: str = "prod-aks") -> AksProvider:
    context = ProjectContext(project="aks", root=tmp, state_dir=tmp / ".mlops", cache_dir=tmp / "cache")
    return AksProvider(target="prod", context=context, config={
        "provider": "aks", "subscription_id": SUB, "resource_group": RG, "cluster": cluster, "namespace": "ml",
        "registry": "127.0.0.1:5000", "arm_endpoint": arm.url})


def test_aks_fetches_the_user_kubeconfig_through_arm_and_connects_with_it(arm: AksArmDouble, tmp_path: Path):
    provider = _provider(arm, tmp_path)
    ensure_connected(provider)
    assert provider.read() == []
    saved = tmp_path / ".mlops" / "kubernetes" / "prod.kubeconfig"
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    assert ("POST", f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.ContainerService/"
                    "managedClusters/prod-aks/listClusterUserCredential") in arm.calls


def test_an_unknown_aks_cluster_is_one_line_with_arms_reason(arm: AksArmDouble, tmp_path: Path):
    with pytest.raises(Unreachable) as err:
        ensure_connected(_provider(arm, tmp_path, cluster="nope"))
    assert "ResourceNotFound" in str(err.value) and "nope" in str(err.value) and "\n" not in str(err.value)


def test_no_azure_login_is_one_line_saying_how(arm: AksArmDouble, tmp_path: Path, monkeypatch):
    monkeypatch.setenv("AZURE_CLIENT_SECRET", "wrong")
    with pytest.raises(Unreachable) as err:
        ensure_connected(_provider(arm, tmp_path))
    assert "no Azure login" in str(err.value) and "az login" in str(err.value) and "\n" not in str(err.value)
    assert "wrong" not in str(err.value)
