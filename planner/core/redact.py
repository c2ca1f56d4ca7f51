"""Secrets never reach output: every line the CLI prints passes through one redactor.

Providers keep secrets out of what they show (digests, ``(sensitive)``); this is the net under
that: values known to be secret (deploy keys, secret target settings such as connection strings,
environment variable values) are replaced wherever they appear, error messages included.
"""

from __future__ import annotations

import threading
from typing import TextIO

MASK = "(sensitive)"
MIN_LENGTH = 4
"""Shorter values are not masked: they would mangle ordinary words, and no real secret is that short."""


class Redactor:
    def __init__(self) -> None:
        self._values: set[str] = set()
        self._lock = threading.Lock()
        self._ordered: list[str] = []

    def add(self, *values: str) -> None:
        with self._lock:
            for value in values:
                for part in {value, value.strip(), *value.splitlines()}:
                    if isinstance(part, str) and len(part) >= MIN_LENGTH and part not in self._values:
                        self._values.add(part)
            self._ordered = sorted(self._values, key=len, reverse=True)

    def clear(self) -> None:
        with self._lock:
            self._values.clear()
            self._ordered = []

    def scrub(self, text: str) -> str:
        for value in self._ordered:
            if value in text:
                text = text.replace(value, MASK)
        return text


REDACTOR = Redactor()


class RedactingStream:
    """A text stream wrapper that scrubs every write (stdout and stderr of the CLI)."""

    def __init__(self, inner: TextIO, redactor: Redactor = REDACTOR):
        self._inner = inner
        self._redactor = redactor

    def write(self, text: str) -> int:
        self._inner.write(self._redactor.scrub(text))
        return len(text)

    def __getattr__(self, name: str):
        return getattr(self._inner, name)
