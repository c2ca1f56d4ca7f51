"""Kubernetes targets: any cluster (``kubernetes``), Azure Kubernetes Service (``aks``) and FPGA nodes (``fpga``)."""

from .provider import AksProvider, FpgaProvider, KubernetesProvider

__all__ = ["AksProvider", "FpgaProvider", "KubernetesProvider"]
