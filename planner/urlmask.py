"""Credentials in URLs that we echo: ``user:password@``, query values, token-like path segments.

Package indexes take tokens in many places (``https://TOKEN@pypi.fury.io/``,
``https://pypi.fury.io/TOKEN/acme/``, ``...?token=...``), as does an Azure Stack ``arm_endpoint``
with a password in it. Whatever prints a URL (a plan, an error, an import warning) masks those
parts with ``(sensitive)`` and keeps the rest readable; ``url_secrets`` lists them for the
redactor that guards every line the CLI prints.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl, urlsplit

MASK = "(sensitive)"
_URL = re.compile(r"(?i)\b[a-z][a-z0-9+.-]*://[^\s'\"<>`]+")
_TOKEN = re.compile(r"[A-Za-z0-9_-]{16,}")
"""A path segment this long, of letters and digits both, reads as a key (a feed GUID too): masked."""


def _token_like(segment: str) -> bool:
    return (_TOKEN.fullmatch(segment) is not None and any(c.isdigit() for c in segment)
            and any(c.isalpha() for c in segment))


def url_secrets(url: str) -> list[str]:
    """The parts of ``url`` that may be credentials (empty for an ordinary URL)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return []
    found: list[str] = []
    if "@" in parts.netloc:
        userinfo = parts.netloc.rsplit("@", 1)[0]
        user, _, password = userinfo.partition(":")
        found += [p for p in (password or user, userinfo) if p]
    found += [value for _, value in parse_qsl(parts.query, keep_blank_values=False)]
    found += [s for s in parts.path.split("/") if _token_like(s)]
    return found


def mask_url(url: str) -> str:
    """``url`` with its credentials replaced by ``(sensitive)``; a URL without any is unchanged."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return MASK
    if not url_secrets(url):
        return url
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user, colon, _ = userinfo.partition(":")
        netloc = f"{user}:{MASK}@{host}" if colon else f"{MASK}@{host}"
    path = "/".join(MASK if _token_like(s) else s for s in parts.path.split("/"))
    query = "&".join(f"{k}={MASK}" if sep else k for k, sep, _ in (p.partition("=") for p in parts.query.split("&"))
                     ) if parts.query else ""
    text = f"{parts.scheme}://{netloc}{path}"
    text += f"?{query}" if query else ""
    return text + (f"#{parts.fragment}" if parts.fragment else "")


def mask_urls(text: str) -> str:
    """Every URL in a line of text, masked (``--extra-index-url https://u:p@host/`` in a warning)."""
    return _URL.sub(lambda m: mask_url(m.group(0)), text) if "://" in text else text


def secrets_in(data: Any) -> list[str]:
    """The URL credentials anywhere in JSON-like data (a manifest): for the output redactor."""
    if isinstance(data, dict):
        return [s for v in data.values() for s in secrets_in(v)]
    if isinstance(data, list):
        return [s for v in data for s in secrets_in(v)]
    return url_secrets(data) if isinstance(data, str) and "://" in data else []


_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*:/{1,3})(?P<userinfo>[^\s/@?#]+)@")
"""A login, whatever characters it holds (a quote ends ``_URL``), also in a URL that went through
``pathlib.Path`` and lost a slash (``https:/user:pw@host``)."""


def mask_url_credentials(text: str) -> str:
    """``mask_urls``, and every login masked even in a URL mangled into a path (import warnings)."""

    def userinfo(match: re.Match[str]) -> str:
        user, colon, _ = match["userinfo"].partition(":")
        return f"{match['scheme']}{user}:{MASK}@" if colon else f"{match['scheme']}{MASK}@"

    return _USERINFO.sub(userinfo, mask_urls(text))
