"""Using a Kubernetes service from this machine: its keys, scoring calls, logs and each version's metrics.

Everything goes through the API server (its service and pod proxies, pod logs), so a ClusterIP
service is usable from wherever the kubeconfig works. The API server removes ``Authorization``
before proxying, so the scoring key rides in ``X-Mlops-Authorization`` too (``Cluster.proxy``).
"""

from __future__ import annotations

import base64
import contextlib
import queue
import threading
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

from planner.errors import ProviderError
from planner.resources import Live, Resource

from ..base import Endpoint, Reachable
from ..exposition import relabel
from . import manifests

if TYPE_CHECKING:
    from ..keys import KeyStore
    from .client import Cluster

METRICS_TIMEOUT_S = 10


class Access:
    """Mixin of the provider: keys, ``endpoint``/``call``/``logs`` and the runtime's metrics per version."""

    cluster: Cluster
    namespace: str
    keys: KeyStore

    def _proxy_path(self, name: str, instance: str | None = None, *, port: int = manifests.PORT,
                    path: str = "score") -> str:
        """The API server's proxy to the service's ``http`` port, or to one pod's ``port``."""
        if instance:
            return f"/api/v1/namespaces/{self.namespace}/pods/{instance}:{port}/proxy/{path}"
        return f"/api/v1/namespaces/{self.namespace}/services/{name}:http/proxy/{path}"

    # -- keys -----------------------------------------------------------------------------------
    def _keys(self, desired: Resource) -> dict[str, str]:
        """Explicit keys win; else the ones clients already have: this machine's store, or the key Secret
        that another machine's apply left in the cluster (a fresh CI runner, a reconciler replica), so an
        apply from anywhere never rotates the keys by itself."""
        name = desired.address.name
        if desired.spec["deploy"].get("auth") == "key" and not self.keys.load(name):
            found = self._cluster_keys(name)
            if found:
                self.keys.save(name, found)
        return self.keys.keys_for(name, desired.spec["deploy"].get("auth"), desired.secrets)

    def _cluster_keys(self, name: str) -> dict[str, str]:
        """The keys in the service's key Secret ({} when there is none or it is unreadable)."""
        with contextlib.suppress(ProviderError, KeyError, ValueError, TypeError):
            data = self.cluster.get("Secret", manifests.key_secret_name(name), self.namespace)["data"]
            keys = {k: base64.b64decode(data[f"{k}_key"]).decode() for k in ("primary", "secondary")}
            return keys if all(keys.values()) else {}
        return {}

    def _headers_for(self, live: Live) -> dict[str, str]:
        if live.details.get("auth") != "key":
            return {}
        # another machine applied it: the key Secret in the cluster has them
        primary = (self.keys.load(live.address.name) or self._cluster_keys(live.address.name)).get("primary")
        return {"Authorization": f"Bearer {primary}"} if primary else {}

    # -- calling --------------------------------------------------------------------------------
    def endpoint(self, live: Live, instance: str | None = None) -> Endpoint | None:
        url = str(live.details.get("endpoint") or "")
        if instance:
            url = f"{self.cluster.host}{self._proxy_path(live.address.name, instance)}"
        return Endpoint(scoring_url=url, headers=self._headers_for(live)) if url else None

    def _post(self, name: str, body: bytes, headers: Mapping[str, str], *, instance: str | None = None,
              timeout: float = 120) -> tuple[int, bytes]:
        return self.cluster.proxy("POST", self._proxy_path(name, instance), body=body,
                                  headers={**headers, "Content-Type": "application/json"}, timeout=timeout)

    def call(self, live: Live, body: bytes, *, instance: str | None = None,
             timeout: float = 120) -> tuple[int, bytes, str]:
        """Through the LoadBalancer address when it has one, else the API server's service (or pod) proxy."""
        url = str(live.details.get("endpoint") or "")
        if instance is None and url.startswith("http") and "/proxy/" not in url:
            return Reachable.call(self, live, body, timeout=timeout)   # type: ignore[arg-type]
        if instance is not None and instance not in live.details.get("pods", []):
            known = ", ".join(live.details.get("pods") or []) or "none"
            raise ProviderError(f"{live.address}: no pod {instance!r} (pods: {known})")
        status, answer = self._post(live.address.name, body, self._headers_for(live), instance=instance,
                                    timeout=timeout)
        return status, answer, f"{self.cluster.host}{self._proxy_path(live.address.name, instance)}"

    # -- metrics --------------------------------------------------------------------------------
    def metrics(self, live: Live, version: str) -> str | None:
        """Every running pod of ``version`` scraped on its probe port through the API server's pod proxy.

        Each pod's series are relabelled with ``version`` and ``instance`` (the pod's name,
        ``exposition.relabel``): the analysis differences each pod's counters on their own, so a
        pod that does not answer one scrape (left out here), restarts or is new never hides what
        the others counted. None when no pod of that version runs here.
        """
        pods = (live.details.get("serving") or {}).get(version)
        if not pods:
            return None
        headers = self._headers_for(live)
        texts = []
        for pod in pods:
            path = self._proxy_path(live.address.name, pod, port=manifests.PROBE_PORT, path="metrics")
            try:
                status, body = self.cluster.proxy("GET", path, body=None, headers=headers, timeout=METRICS_TIMEOUT_S)
            except ProviderError:
                continue
            if status == 200:
                texts.append(relabel(body.decode(errors="replace"), version, pod))
        return "".join(texts)

    # -- logs -----------------------------------------------------------------------------------
    def logs(self, live: Live, *, follow: bool = False, tail: int | None = None,
             instance: str | None = None) -> Iterator[str]:
        """Every pod's lines prefixed with its name (``instance``: one pod); ``follow`` merges them live."""
        pods = list(live.details.get("pods") or [])
        if instance is not None:
            if instance not in pods:
                raise ProviderError(f"{live.address}: no pod {instance!r} (pods: {', '.join(pods) or 'none'})")
            pods = [instance]
        if not pods:
            raise ProviderError(f"{live.address}: no pods run (see `mlops status`)")
        if not follow:
            for pod in pods:
                for line in self._pod_lines(pod, tail=tail, follow=False):
                    yield f"[{pod}] {line}"
            return
        lines: queue.Queue[str | None] = queue.Queue()

        def pump(pod: str) -> None:
            try:
                for line in self._pod_lines(pod, tail=tail, follow=True):
                    lines.put(f"[{pod}] {line}")
            finally:
                lines.put(None)

        for pod in pods:
            threading.Thread(target=pump, args=(pod,), daemon=True).start()
        open_streams = len(pods)
        while open_streams:
            item = lines.get()
            if item is None:
                open_streams -= 1
            else:
                yield item

    def _pod_lines(self, pod: str, *, tail: int | None, follow: bool) -> Iterator[str]:
        try:
            yield from self.cluster.pod_log(pod, self.namespace, tail=tail, follow=follow)
        except ProviderError as exc:
            yield f"(no logs: {exc})"

