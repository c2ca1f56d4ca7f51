"""Credentials in URLs we echo are masked: an index URL may carry ``user:password@`` or a token.

Pure text in, text out, so every message can pass through it; it knows nothing of who prints.
"""

from __future__ import annotations

import re

MASK = "***"
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*:/{1,3})(?P<userinfo>[^\s/@?#]+)@")
"""``scheme://`` or, once a URL went through ``pathlib.Path``, ``scheme:/``."""
_SECRET_QUERY = re.compile(
    r"(?P<key>[?&;](?:[A-Za-z0-9_.-]*(?:token|key|secret|password|passwd|pwd|sig|signature|auth|credential)"
    r"[A-Za-z0-9_.-]*)=)(?P<value>[^&;#\s'\"]+)",
    re.IGNORECASE,
)


def mask_url_credentials(text: str) -> str:
    """``text`` with every URL's password (``user:***@``), bare token (``***@``) and secret-named
    query value (``?token=***``) masked; the rest of the URL stays readable."""

    def userinfo(match: re.Match[str]) -> str:
        user, colon, _ = match["userinfo"].partition(":")
        return f"{match['scheme']}{user}:{MASK}@" if colon else f"{match['scheme']}{MASK}@"

    return _SECRET_QUERY.sub(lambda m: f"{m['key']}{MASK}", _USERINFO.sub(userinfo, text))
