"""Who holds the connections of one worker: counts per client address and the silent ones, so
that no single address, and no pile of connections that never sent a byte, can lock others out.

Kept apart from ``guard`` (which enforces it) because it is plain bookkeeping: no I/O, no server
import, testable on its own. Every method is O(1); the loop thread is the only caller.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any


class ClientTable:
    """Open connections by client address, and the *silent* ones (nothing received yet) oldest first."""

    def __init__(self) -> None:
        self._by_address: dict[Hashable, dict[Any, None]] = {}
        self._silent: dict[Any, None] = {}
        self._silent_by_address: dict[Hashable, dict[Any, None]] = {}

    def count(self, address: Hashable) -> int:
        """Connections open from ``address``."""
        held = self._by_address.get(address)
        return len(held) if held else 0

    def add(self, connection: Any, address: Hashable) -> None:
        """A new connection: counted for its address, and silent until it sends something."""
        self._by_address.setdefault(address, {})[connection] = None
        self._silent[connection] = None
        self._silent_by_address.setdefault(address, {})[connection] = None

    def spoke(self, connection: Any, address: Hashable) -> None:
        """The connection sent its first bytes: it is no longer a candidate for eviction."""
        if self._silent.pop(connection, 0) is None:
            _discard(self._silent_by_address, address, connection)

    def remove(self, connection: Any, address: Hashable) -> None:
        """The connection is gone (or refused): forget it everywhere (idempotent)."""
        _discard(self._by_address, address, connection)
        self.spoke(connection, address)

    def oldest_silent(self, address: Hashable | None = None) -> Any | None:
        """The connection that has waited longest without sending a byte, from ``address`` or any."""
        pool = self._silent if address is None else self._silent_by_address.get(address)
        return next(iter(pool), None) if pool else None


def _discard(table: dict[Hashable, dict[Any, None]], address: Hashable, connection: Any) -> None:
    held = table.get(address)
    if held is not None:
        held.pop(connection, None)
        if not held:
            del table[address]
