"""Talking to Azure Resource Manager: endpoints per cloud, the credential, the client, errors as one line.

Retries: the SDK's own ``RetryPolicy`` (azure-core), configured here, not planner/retrying.py —
it is the only layer that also covers the requests the SDK's long-running-operation poller makes
on its own thread. It retries 408/429/500/502/503/504 and dropped connections ``RETRIES`` times,
honouring ``Retry-After`` (capped at ``MAX_RETRY_AFTER`` s, so a throttled run stays bounded) and
backing off exponentially otherwise; waits between polls of an operation are ours (``Events``)
and stop at once on Ctrl-C. When retries run out, the error says so in one line.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from planner.errors import ProviderError, Unreachable

from .. import sdk
from .settings import CLOUDS

T = TypeVar("T")
RETRIES = 4
MAX_RETRY_AFTER = 60.0
POLL_INTERVAL = 5
"""Seconds between polls of an operation when ARM gives no Retry-After (the SDK's default is 30)."""
CREDENTIAL_HELP = ("set AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET (a service principal) or "
                   "AZURE_FEDERATED_TOKEN_FILE (workload identity, e.g. GitHub Actions OIDC via azure/login), "
                   "use a managed identity, or run `az login`")


@dataclass
class Connection:
    """A logged-in client for one target: where ARM is, which token scope, the SDK client."""

    client: Any
    credential: Any
    arm_endpoint: str
    scope: str


def endpoints(config: Mapping[str, Any], verify: Any) -> tuple[str, str, str, bool]:
    """(ARM endpoint, login authority, token scope, custom cloud?) from ``cloud`` or ``arm_endpoint``.

    An explicit endpoint is asked for its cloud metadata (Azure Stack's ``/metadata/endpoints``),
    as ``az cloud register --endpoint-resource-manager`` does, so the login follows it.
    """
    arm = config.get("arm_endpoint")
    if not arm:
        arm, login = CLOUDS[config.get("cloud") or "AzureCloud"]
        return arm, login, f"{arm}/.default", False
    arm = str(arm).rstrip("/")
    sdk.load("requests")
    import requests

    url = f"{arm}/metadata/endpoints?api-version=2015-01-01"
    try:
        reply = requests.get(url, timeout=20, verify=verify)
        reply.raise_for_status()
        meta = reply.json()
        login = str(meta["authentication"]["loginEndpoint"]).rstrip("/")
        audience = str(meta["authentication"]["audiences"][0]).rstrip("/")
    except requests.exceptions.SSLError:
        raise Unreachable(f"cannot verify the TLS certificate of {arm} (arm_endpoint); trust its CA with the "
                          "target's ca_bundle setting or REQUESTS_CA_BUNDLE") from None
    except (requests.RequestException, ValueError, KeyError, IndexError, TypeError) as exc:
        raise Unreachable(f"cannot read the cloud metadata at {arm}/metadata/endpoints (arm_endpoint): "
                          f"{_short(exc)}; check arm_endpoint") from None
    return arm, login, f"{audience}/.default", True


def connect(config: Mapping[str, Any], describe: str) -> Connection:
    """Log in with DefaultAzureCredential and build the client; Unreachable (one line) when that fails."""
    try:
        sdk.load("requests", "azure.core.exceptions", "azure.identity", "azure.mgmt.containerinstance")
        from azure.core.exceptions import ClientAuthenticationError
        from azure.identity import CredentialUnavailableError, DefaultAzureCredential
        from azure.mgmt.containerinstance import ContainerInstanceManagementClient
    except ImportError:
        raise Unreachable(f"{describe} needs the Azure SDK: pip install 'mlops[aci]'") from None
    verify = config.get("ca_bundle") or True
    arm, login, scope, custom = endpoints(config, verify)
    extra: dict[str, Any] = {"connection_verify": verify} if config.get("ca_bundle") else {}
    # DefaultAzureCredential logs each failed attempt as a multi-line warning; we say it in one line.
    logging.getLogger("azure.identity").setLevel(logging.ERROR)
    credential = DefaultAzureCredential(authority=login, disable_instance_discovery=custom, **extra)
    try:
        credential.get_token(scope)
    except CredentialUnavailableError:
        raise Unreachable(f"{describe}: no Azure credential is available; {CREDENTIAL_HELP}") from None
    except ClientAuthenticationError as exc:
        if _all_unavailable(exc):
            raise Unreachable(f"{describe}: no Azure credential is available; {CREDENTIAL_HELP}") from None
        raise Unreachable(f"{describe}: Azure login failed ({_auth_reason(exc)}); {CREDENTIAL_HELP}") from None
    client = ContainerInstanceManagementClient(
        credential, str(config["subscription_id"]), base_url=arm, credential_scopes=[scope],
        polling_interval=POLL_INTERVAL, retry_policy=_retry_policy(), **extra)
    return Connection(client, credential, arm, scope)


def _retry_policy() -> Any:
    from azure.core.pipeline.policies import RetryPolicy

    class BoundedRetryPolicy(RetryPolicy):
        """azure-core's policy with Retry-After honoured up to MAX_RETRY_AFTER seconds."""

        def get_retry_after(self, response: Any) -> float | None:
            value = super().get_retry_after(response)
            return None if value is None else min(float(value), MAX_RETRY_AFTER)

    return BoundedRetryPolicy(retry_total=RETRIES, retry_status=RETRIES, retry_connect=2, retry_read=2,
                              retry_backoff_factor=1.0, retry_backoff_max=30)


def arm_call(describe: str, what: str, fn: Callable[[], T]) -> T:
    """Run one SDK call; any failure becomes one ProviderError line naming what was being done.

    ``describe`` (the target) is left out where the caller already names it (reading live state).
    """
    from azure.core.exceptions import AzureError, ClientAuthenticationError, HttpResponseError

    where = f"{describe}: {what}" if describe else what
    try:
        return fn()
    except HttpResponseError as exc:
        raise ProviderError(f"{where}: {error_line(exc)}") from None
    except ClientAuthenticationError as exc:
        raise ProviderError(f"{where}: Azure login failed ({_auth_reason(exc)}); {CREDENTIAL_HELP}") from None
    except AzureError as exc:
        raise ProviderError(f"{where}: cannot reach Azure Resource Manager ({_short(exc)})") from None


def error_code(exc: Any) -> str:
    err = getattr(exc, "error", None)
    return str(getattr(err, "code", None) or getattr(exc, "status_code", None) or "error")


def error_line(exc: Any) -> str:
    """ARM's error code and message on one line; throttling that outlived the retries says so."""
    status = getattr(exc, "status_code", None)
    err = getattr(exc, "error", None)
    code = getattr(err, "code", None)
    message = getattr(err, "message", None) or getattr(exc, "reason", None) or str(exc)
    text = f"{code}: {message}" if code else str(message)
    text = " ".join(text.split())[:400]
    if status == 429:
        return (f"Azure Resource Manager kept throttling ({text}) after {RETRIES} retries honouring Retry-After; "
                "wait a few minutes and re-run")
    if status and status >= 500:
        return f"Azure Resource Manager failed ({status} {text}) after {RETRIES} retries; re-run later"
    return text


def is_not_found(exc: Any) -> bool:
    return getattr(exc, "status_code", None) == 404


def _all_unavailable(exc: BaseException) -> bool:
    """Whether every credential DefaultAzureCredential tried said it has nothing to try (no login at all)."""
    attempts = [ln.strip() for ln in str(exc).splitlines() if ln.startswith("\t")]
    return bool(attempts) and all("unavailable" in a.lower() for a in attempts)


def _auth_reason(exc: BaseException) -> str:
    text = str(getattr(exc, "message", None) or exc)
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("DefaultAzureCredential failed", "Attempted credentials", "To mitigate",
                                         "Visit https")):
            return _short(line)
    return _short(text)


def _short(exc: BaseException | str) -> str:
    return " ".join(str(exc).split())[:200]
