"""Version numbers without a server: an append-only registration log in tags, numbered by one rule.

The distribution API has no compare-and-swap on tags (``If-None-Match`` is ignored; a tag PUT is
last-writer-wins), so "claim tag v<N>, read back" lets two machines both believe they own N.
Instead a registration writes a tag no other writer can write, unique per (time, content):

    m.<model key>.r<YYYYmmddTHHMMSSffffff>.<content sha256>

and every reader numbers a model's entries with the same pure function of the tag list: sort them
(time, then content), skip repeats of a content, number 1, 2, 3 … Two racing writers make two
entries, hence two numbers; no number can name two contents. An entry younger than the settle
window is *pending* (no number yet), and a writer whose tag PUT took longer than a quarter of the
window withdraws it and retries, so an entry can never appear behind one already numbered when
``settle > PUT latency + 2 x clock skew``. The embedded registry serialises writers with a file
lock instead, so its window is 0.
"""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime

STAMP = "%Y%m%dT%H%M%S%f"
ENTRY_RE = re.compile(r"^m\.(?P<key>.+)\.r(?P<stamp>\d{8}T\d{12})\.(?P<sha>[0-9a-f]{64})$")
MAX_KEY = 32


def model_key(name: str) -> str:
    """A tag-safe key for a model name (names may be 255 long; tags 128): long names are shortened."""
    if len(name) <= MAX_KEY:
        return name
    return f"{name[:15]}_{hashlib.sha256(name.encode()).hexdigest()[:16]}"


def entry_tag(key: str, stamp: datetime, sha: str) -> str:
    return f"m.{key}.r{stamp.strftime(STAMP)}.{sha}"


def current_tag(key: str) -> str:
    return f"m.{key}.current"


def alias_tag(key: str, number: int) -> str:
    return f"m.{key}.v{number}"


def environment_tag(key: str) -> str:
    return f"e.{key}.current"


def parse_stamp(text: str) -> datetime:
    """``YYYYmmddTHHMMSSffffff`` (slicing: strptime costs 100 us a tag, and a read parses every tag)."""
    if len(text) != 21 or text[8] != "T":
        raise ValueError(text)
    return datetime(int(text[0:4]), int(text[4:6]), int(text[6:8]), int(text[9:11]), int(text[11:13]),
                    int(text[13:15]), int(text[15:21]), tzinfo=UTC)


@dataclass(frozen=True)
class Entry:
    key: str
    stamp: datetime
    sha256: str
    tag: str


@dataclass(frozen=True)
class Numbering:
    """One model's versions as every reader derives them."""

    numbers: dict[str, int]          # content sha256 -> version number (final)
    pending: list[str]               # contents registered inside the settle window, in order
    entries: dict[str, Entry]        # content sha256 -> its first entry

    def number_or_next(self, sha256: str) -> int:
        """The number this content has, or will get if nothing else is registered before it."""
        if sha256 in self.numbers:
            return self.numbers[sha256]
        position = self.pending.index(sha256) if sha256 in self.pending else len(self.pending)
        return len(self.numbers) + position + 1


@functools.lru_cache(maxsize=1 << 16)
def parse_entry(tag: str) -> Entry | None:
    """One registration tag, or None for any other tag (cached: every read parses every tag)."""
    match = ENTRY_RE.match(tag)
    if not match:
        return None
    try:
        return Entry(match["key"], parse_stamp(match["stamp"]), match["sha"], tag)
    except ValueError:
        return None


def entries_by_key(tags: list[str]) -> dict[str, list[Entry]]:
    out: dict[str, list[Entry]] = {}
    for tag in tags:
        entry = parse_entry(tag)
        if entry is not None:
            out.setdefault(entry.key, []).append(entry)
    return out


def derive(entries: list[Entry], now: datetime, settle_s: float) -> Numbering:
    """Number the entries: sorted by (time, content), repeats skipped; the young ones are pending."""
    numbers: dict[str, int] = {}
    pending: list[str] = []
    first: dict[str, Entry] = {}
    for entry in sorted(entries, key=lambda e: (e.stamp, e.sha256)):
        if entry.sha256 in first:
            continue
        first[entry.sha256] = entry
        if settle_s > 0 and (now - entry.stamp).total_seconds() < settle_s:
            pending.append(entry.sha256)
        elif pending:
            # An older entry is still pending: a later one cannot be numbered before it.
            pending.append(entry.sha256)
        else:
            numbers[entry.sha256] = len(numbers) + 1
    return Numbering(numbers, pending, first)
