"""Kubernetes targets: any cluster (``kubernetes``), Azure Kubernetes Service (``aks``) and FPGA nodes (``fpga``)."""

from .provider import KubernetesProvider
from .variants import AksProvider, FpgaProvider

__all__ = ["AksProvider", "FpgaProvider", "KubernetesProvider"]
