"""What a port keeper tells about its service, for both engines of the local target.

A keeper outlives every instance on purpose, which makes two situations possible that the live
read must show, or they stay forever:

- a keeper with no instance (a create that failed, or an apply killed between starting the keeper
  and starting the instance): the port is held, connections to it wait in a queue nobody
  accepts. It is read as a Failed service, so the next apply reuses its port (or destroy frees it);
- an instance whose keeper is gone (killed): the service still answers, but no new version can
  get the port's listener. It is read as Unhealthy, so the next apply replaces the instance on
  the same port, the new keeper taking the listener over from the old instance.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from planner.addresses import Address
from planner.resources import FAILED, Live

from .ports import PortKeepers


def keeper_gone(ports: PortKeepers, name: str, port: int) -> str | None:
    """The problem to show when ``name``'s running instance on ``port`` has no live keeper, else None."""
    if ports.find(name, port) is not None:
        return None
    return (f"the port keeper of port {port} is gone (killed?): the service still answers but no new version can "
            "take the port; the next apply replaces it on the same port")


def keeper_only(ports: PortKeepers, *, engine: str, kind: str, host: str, known: set[str],
                wanted: Callable[[str], bool], log_dir: Path | None = None) -> list[Live]:
    """Services of ``engine`` that are nothing but a port keeper (no instance runs): Failed, one each."""
    out: dict[str, Live] = {}
    for keeper in ports.all():
        owner = ports.owner_of(keeper)
        if keeper.name in known or keeper.name in out or owner is None or owner[1] != engine or not wanted(owner[0]):
            continue
        held = sorted(k.port for k in ports.of_service(keeper.name))
        message = (f"only a port keeper runs (port {', '.join(map(str, held))}, pid {keeper.pid}): a create failed or "
                   "an apply was interrupted before the instance started; the next apply starts the service on "
                   "that port, destroy frees it")
        details = {"instance": None, "pid": None, "container": None, "port": keeper.port, "auth": "none",
                   "endpoint": f"http://{host}:{keeper.port}/score", "message": message, "keeper_only": True,
                   "git": {}}
        if log_dir is not None:
            details["log"] = str(log_dir / f"{keeper.name}.log")
        out[keeper.name] = Live(Address("service", keeper.name), {}, FAILED, target=owner[0], provider=kind,
                                details=details)
    return [out[name] for name in sorted(out)]
