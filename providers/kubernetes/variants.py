"""The variants of the Kubernetes kind: Azure Kubernetes Service (``aks``) and FPGA nodes (``fpga``)."""

from __future__ import annotations

from typing import ClassVar

from ..base import Unreachable
from .manifests import Placement
from .provider import KubernetesProvider


class AksProvider(KubernetesProvider):
    """Azure Kubernetes Service: the same kind; its context defaults to the cluster's name (what
    ``az aks get-credentials`` writes) and an unreachable cluster says how to fetch its credentials."""

    kind: ClassVar[str] = "aks"

    def fetches_credentials(self) -> bool:
        """``subscription_id`` + ``resource_group`` + ``cluster`` and no ``kubeconfig``: ask ARM for it."""
        return not self.config.get("kubeconfig") and all(
            self.config.get(k) for k in ("subscription_id", "resource_group", "cluster"))

    def kubeconfig(self) -> str | None:
        if self.fetches_credentials():
            from .aks import fetch_user_kubeconfig

            dest = self.context.state_dir / "kubernetes" / f"{self.target}.kubeconfig"
            return str(fetch_user_kubeconfig(self.config, dest))
        return super().kubeconfig()

    def kube_context(self) -> str | None:
        if self.fetches_credentials():
            return self.config.get("context") or None   # the fetched file's own current context
        return self.config.get("context") or self.config.get("cluster") or None

    def connect(self) -> None:
        try:
            super().connect()
        except Unreachable as exc:
            rg, cluster = self.config.get("resource_group", "RG"), self.config.get("cluster", "CLUSTER")
            if self.fetches_credentials():
                raise
            raise Unreachable(f"{exc} (fetch the credentials with: az aks get-credentials --resource-group {rg} "
                              f"--name {cluster}, or set subscription_id to have mlops fetch them)") from None


class FpgaProvider(KubernetesProvider):
    """Pods that request an FPGA device plugin's extended resource (request = limit) on matching nodes."""

    kind: ClassVar[str] = "fpga"

    def placement(self) -> Placement:
        return Placement(resource=str(self.config["resource"]), count=int(self.config.get("count", 1)),
                         node_selector=dict(self.config.get("node_selector") or {}),
                         tolerations=tuple(self.config.get("tolerations") or ()))
