"""Reaching a service on its devices: the endpoint and key of one device's module, a scoring call, and
its log through the agent's ``GetModuleLogs`` direct method."""

from __future__ import annotations

import base64
import gzip
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from planner.core.errors import ProviderError
from planner.core.resources import Live

from ..base import Endpoint
from ..http import request
from . import manifest as mf

if TYPE_CHECKING:
    from providers.keys import KeyStore

    from .hub import HubClient

LOG_POLL_S = 2.0


class ReachesDevices:
    """endpoint / call / logs of the iotedge provider (mixed into it). Without ``--device``, a call goes
    to the first healthy device, or during a ring rollout to each healthy device in turn (the driver's
    sample requests then see each version in proportion to its ring)."""

    hub: HubClient
    keys: KeyStore
    _turn: int

    def _device(self, live: Live, instance: str | None) -> dict[str, Any]:
        devices = list(live.details.get("devices") or [])
        if instance:
            found = next((d for d in devices if d["device"] == instance), None)
            if found is None:
                names = ", ".join(d["device"] for d in devices) or "none"
                raise ProviderError(f"{live.address}: device {instance!r} is not targeted by it (targeted: {names})")
            return found
        healthy = [d for d in devices if d.get("ok")]
        if healthy and len(live.versions) > 1:   # a ring rollout: turn by turn, so callers meet both versions
            self._turn = getattr(self, "_turn", -1) + 1
            return healthy[self._turn % len(healthy)]
        if healthy:
            return healthy[0]
        if devices:
            return devices[0]
        raise ProviderError(f"{live.address}: no device runs it ({live.details.get('message') or live.status})")

    def _headers(self, name: str, auth: str | None, live: Live | None = None) -> dict[str, str]:
        if auth != "key":
            return {}
        key = self.keys.load(name).get("primary")
        if not key and live is not None:   # another machine applied it: the deployment has them
            config = self.hub.get_configuration(str(live.details.get("deployment")))
            env = mf.module_of(config or {}, name).get("env") or {}
            key = (env.get("MLOPS_PRIMARY_KEY") or {}).get("value")
        return {"Authorization": f"Bearer {key}"} if key else {}

    def endpoint(self, live: Live, instance: str | None = None) -> Endpoint | None:
        """A device's module (a healthy one unless ``instance`` names one); None without device_host."""
        device = self._device(live, instance)
        if not device.get("url"):
            return None
        return Endpoint(scoring_url=device["url"], headers=self._headers(live.address.name, live.details.get("auth"),
                                                                         live))

    def call(self, live: Live, body: bytes, *, instance: str | None = None,
             timeout: float = 120) -> tuple[int, bytes, str]:
        device = self._device(live, instance)
        found = self.endpoint(live, device["device"])
        if found is None:
            raise ProviderError(f"{live.address}: device {device['device']}'s endpoint is not reachable from here "
                                "(set device_host on the target); `mlops status` shows its health")
        try:
            reply = request(found.scoring_url, data=body, timeout=timeout,
                            headers={**found.headers, "Content-Type": "application/json"})
        except OSError as exc:
            raise ProviderError(f"device {device['device']}: cannot reach {found.scoring_url}: {exc}") from None
        return reply.status, reply.body, f"device {device['device']} ({found.scoring_url})"

    def logs(self, live: Live, *, follow: bool = False, tail: int | None = None,
             instance: str | None = None) -> Iterator[str]:
        """The module's log through the agent's GetModuleLogs direct method (the device must be online)."""
        device = self._device(live, instance)["device"]
        if not instance:
            yield f"# device {device} (choose another with --device)"
        since: int | None = None
        while True:
            filt: dict[str, Any] = {}
            if since is not None:
                filt["since"] = str(since)
            elif tail is not None:
                filt["tail"] = tail
            payload = {"schemaVersion": "1.0", "items": [{"id": live.address.name, "filter": filt}],
                       "encoding": "none", "contentType": "text"}
            now = int(time.time())
            status, answer = self.hub.invoke_module_method(device, "$edgeAgent", "GetModuleLogs", payload)
            if status != 200:
                raise ProviderError(f"{live.address}: GetModuleLogs on device {device} answered {status}: "
                                    f"{str(answer)[:200]}")
            for item in answer or []:
                text = item.get("payload")
                if text is None and item.get("payloadBytes"):
                    text = gzip.decompress(base64.b64decode(item["payloadBytes"])).decode(errors="replace")
                yield from str(text or "").splitlines()
            if not follow:
                return
            since = now
            time.sleep(LOG_POLL_S)
