"""AKS credentials through Azure Resource Manager: the cluster's user kubeconfig, as `az aks get-credentials` gets it.

``listClusterUserCredential`` (Microsoft.ContainerService/managedClusters) answers the kubeconfig
base64-encoded; it is written 0600 under the state folder and used like any kubeconfig. The login
is ``DefaultAzureCredential`` (a service principal, workload identity, ``az login``); a custom
``arm_endpoint`` (Azure Stack, a local double) is asked for its cloud metadata so the login follows it.
"""

from __future__ import annotations

import base64
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from planner.errors import Unreachable

from .. import sdk

API_VERSION = "2024-05-01"
PUBLIC_ARM = "https://management.azure.com"
CREDENTIAL_HELP = ("log in with az login, or set AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET "
                   "(or use a kubeconfig: az aks get-credentials)")


def _endpoints(arm: str | None) -> tuple[str, str | None, str, bool]:
    """(ARM, login authority, token scope, custom?) for the public cloud or an explicit endpoint."""
    sdk.load("requests")
    import requests

    if not arm:
        return PUBLIC_ARM, None, f"{PUBLIC_ARM}/.default", False
    arm = arm.rstrip("/")
    try:
        reply = requests.get(f"{arm}/metadata/endpoints?api-version=2015-01-01", timeout=20)
        reply.raise_for_status()
        auth = reply.json()["authentication"]
        return arm, str(auth["loginEndpoint"]).rstrip("/"), f"{str(auth['audiences'][0]).rstrip('/')}/.default", True
    except (requests.RequestException, ValueError, KeyError, IndexError, TypeError) as exc:
        raise Unreachable(f"cannot read the cloud metadata of arm_endpoint {arm}: {str(exc)[:160]}") from None


def fetch_user_kubeconfig(config: Mapping[str, Any], dest: Path) -> Path:
    """Write the cluster's user kubeconfig to ``dest`` (0600) and return it; Unreachable (one line) on failure."""
    sdk.load("requests", "azure.core.exceptions", "azure.identity")
    import requests
    from azure.core.exceptions import ClientAuthenticationError
    from azure.identity import CredentialUnavailableError, DefaultAzureCredential

    sub, rg, name = (str(config[k]) for k in ("subscription_id", "resource_group", "cluster"))
    arm, login, scope, custom = _endpoints(config.get("arm_endpoint"))
    logging.getLogger("azure.identity").setLevel(logging.ERROR)
    kwargs: dict[str, Any] = {"authority": login, "disable_instance_discovery": True} if custom else {}
    try:
        token = DefaultAzureCredential(**kwargs).get_token(scope).token
    except (CredentialUnavailableError, ClientAuthenticationError) as exc:
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise Unreachable(f"no Azure login to fetch the credentials of AKS cluster {name} ({first}); "
                          f"{CREDENTIAL_HELP}") from None
    url = (f"{arm}/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.ContainerService/managedClusters/"
           f"{name}/listClusterUserCredential?api-version={API_VERSION}")
    try:
        reply = requests.post(url, headers={"Authorization": f"Bearer {token}"}, timeout=60)
    except requests.RequestException as exc:
        raise Unreachable(f"cannot reach {arm} for the credentials of AKS cluster {name}: {str(exc)[:160]}") from None
    if reply.status_code != 200:
        try:
            error = reply.json()["error"]
            why = f"{error.get('code')}: {error.get('message')}"
        except (ValueError, KeyError, TypeError):
            why = f"HTTP {reply.status_code}"
        raise Unreachable(f"AKS cluster {name} in resource group {rg}: listClusterUserCredential failed ({why})")
    try:
        kubeconfig = base64.b64decode(reply.json()["kubeconfigs"][0]["value"])
    except (ValueError, KeyError, IndexError, TypeError):
        raise Unreachable(f"AKS cluster {name}: listClusterUserCredential answered no kubeconfig") from None
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(kubeconfig)
    os.replace(tmp, dest)
    return dest
