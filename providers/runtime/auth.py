"""Key authentication: ``Authorization: Bearer <key>`` against the primary or secondary key.

The comparison is constant-time (``hmac.compare_digest``) and always checks every configured key,
so response timing says nothing about which key, or how much of one, matched.
"""

from __future__ import annotations

import hmac


class KeyCheck:
    """Decides whether a request's Authorization header carries one of the service keys."""

    __slots__ = ("_keys",)

    def __init__(self, keys: tuple[str, ...]) -> None:
        self._keys = tuple(key.encode() for key in keys)

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def problem(self, authorization: bytes | None) -> str | None:
        """None when the request may pass, else the 401 message (which never echoes the key)."""
        if not self._keys:
            return None
        if not authorization:
            return "Authorization header is missing: send 'Authorization: Bearer <key>'"
        scheme, _, token = authorization.partition(b" ")
        if scheme.lower() != b"bearer" or not token.strip():
            return "Authorization header must be 'Bearer <key>'"
        token = token.strip()
        matched = False
        for key in self._keys:
            matched |= hmac.compare_digest(token, key)
        return None if matched else "Invalid key"
