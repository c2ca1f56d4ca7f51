"""Secrets never reach output: every line the CLI prints passes through one redactor.

Providers keep secrets out of what they show (digests, ``(sensitive)``); this is the net under
that: values known to be secret (deploy keys, secret target settings such as connection strings,
environment variable values) are replaced wherever they appear, error messages included. Values the
manifest took from the environment (``${VAR}``, see planner.envrefs) are replaced by their reference.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from typing import TextIO

MASK = "(sensitive)"
MIN_LENGTH = 4
"""Shorter values are not masked: they would mangle ordinary words, and no real secret is that short."""


WHOLE_WORD_BELOW = 8
"""Shorter references (``8080``, ``3.11``, ``westeu``) and hexadecimal ones are replaced only as a
whole word: inside a digest or a longer word they are a coincidence, and replacing them there
would corrupt a fingerprint."""
_HEX = re.compile(r"[0-9A-Fa-f.:-]+")


class Redactor:
    def __init__(self) -> None:
        self._values: dict[str, str] = {}
        """value -> what replaces it: MASK for secrets, ``${NAME}`` for values from the environment."""
        self._lock = threading.Lock()
        self._ordered: list[tuple[str, str, re.Pattern[str] | None]] = []

    def add(self, *values: str) -> None:
        """Secret values: replaced by ``(sensitive)`` (this wins over a reference)."""
        with self._lock:
            for value in values:
                for part in {value, value.strip(), *value.splitlines()}:
                    if isinstance(part, str) and len(part) >= MIN_LENGTH:
                        self._values[part] = MASK
            self._order()

    def reference(self, references: Mapping[str, str]) -> None:
        """Values taken from the environment: replaced by their ``${NAME}`` reference."""
        with self._lock:
            for value, ref in references.items():
                for part in {value, value.strip(), *value.splitlines()}:
                    if isinstance(part, str) and len(part) >= MIN_LENGTH and part not in self._values:
                        self._values[part] = ref
            self._order()

    def _order(self) -> None:
        self._ordered = [(v, r, _whole_word(v) if r != MASK and _short_or_hex(v) else None)
                         for v, r in sorted(self._values.items(), key=lambda item: len(item[0]), reverse=True)]

    def clear(self) -> None:
        with self._lock:
            self._values.clear()
            self._ordered = []

    def scrub(self, text: str) -> str:
        for value, replacement, word in self._ordered:
            if value in text:
                text = text.replace(value, replacement) if word is None else word.sub(replacement, text)
        return text


def replace_value(text: str, value: str, replacement: str) -> str:
    """``text`` with ``value`` replaced; a short or hexadecimal value only as a whole word."""
    return _whole_word(value).sub(replacement, text) if _short_or_hex(value) else text.replace(value, replacement)


def _short_or_hex(value: str) -> bool:
    return len(value) < WHOLE_WORD_BELOW or _HEX.fullmatch(value) is not None


def _whole_word(value: str) -> re.Pattern[str]:
    return re.compile(rf"(?<![0-9A-Za-z]){re.escape(value)}(?![0-9A-Za-z])")


REDACTOR = Redactor()


class RedactingStream:
    """A text stream wrapper that scrubs every write (stdout and stderr of the CLI)."""

    def __init__(self, inner: TextIO, redactor: Redactor = REDACTOR):
        self._inner = inner
        self._redactor = redactor

    def write(self, text: str) -> int:
        self._inner.write(self._redactor.scrub(text))
        return len(text)

    @property
    def unredacted(self) -> TextIO:
        """The stream itself, for what the user explicitly asked to see (``mlops endpoint --show-key``)."""
        return self._inner

    def __getattr__(self, name: str):
        return getattr(self._inner, name)
