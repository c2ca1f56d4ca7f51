"""What a failed start-up says, in one clean line, and where the whole story is.

A start attempt's output (the runtime's log records and the user's traceback) goes to the
service's log file, each attempt after a ``--- mlops: starting instance …`` line. An apply that
fails quotes one line of it: the exception (``KeyError: 'missing'``), located in the user's own
file (``app/score.py, line 5, in init``), never the snapshot the process really ran from, nor the
caret lines Python prints under a failing expression; and it names ``mlops logs SERVICE``, which
shows that attempt in full even when no instance runs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

MARKER = "--- mlops: starting instance"
_FRAME = re.compile(r'^\s*File "(?P<path>[^"]+)", line (?P<line>\d+), in (?P<func>.+)$')
_RECORD = re.compile(r"^\d{4}-\d\d-\d\d[ T][\d:,.]+ +[A-Z]+ +\[\d+\] +[\w.]+: ?")
_EXCEPTION = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt|Warning|Fault)(: .*)?$")


def header(instance: str, name: str, port: int, runtime: str, when: str) -> str:
    return f"{MARKER} {instance} of {name} on port {port} ({runtime}, {when})"


def last_attempt(lines: Iterable[str]) -> tuple[str | None, list[str]]:
    """(the start line of the last attempt, the lines it wrote); (None, all lines) if none is marked."""
    lines = list(lines)
    starts = [i for i, ln in enumerate(lines) if ln.startswith(MARKER)]
    if not starts:
        return None, lines
    return lines[starts[-1]], lines[starts[-1] + 1:]


def attempt_label(start_line: str | None) -> str:
    """``instance 26afaea7, started 2026-12-03T14:05:51Z`` from an attempt's start line."""
    if not start_line:
        return "the last start attempt"
    m = re.match(rf"{re.escape(MARKER)} (\w+) of \S+ on port (\d+) \((?:[^,]*), ([^)]*)\)", start_line)
    return f"instance {m.group(1)} on port {m.group(2)}, started {m.group(3)}" if m else start_line[4:]


def cause(lines: Iterable[str], ran_from: str, user_path: str) -> str:
    """One line: the exception (or the last thing said) and where in the user's code it happened.

    ``ran_from`` is the source folder the process ran (a snapshot, or the image's app folder);
    ``user_path`` is the same folder as the user knows it (``app``, relative to the manifest).
    """
    lines = [ln.rstrip() for ln in lines if ln.strip()]
    ran_from = ran_from.rstrip("/")

    def users(text: str) -> str:
        return text.replace(ran_from + "/", user_path.rstrip("/") + "/").replace(ran_from, user_path)

    where = ""
    for ln in lines:
        frame = _FRAME.match(ln)
        if frame and (frame.group("path") == ran_from or frame.group("path").startswith(ran_from + "/")):
            where = f"{users(frame.group('path'))}, line {frame.group('line')}, in {frame.group('func')}"
    exception = ""
    traceback_at = max((i for i, ln in enumerate(lines) if "Traceback (most recent call last)" in ln), default=-1)
    if traceback_at >= 0:
        exception = next((ln.strip() for ln in lines[traceback_at + 1:]
                          if not ln.startswith((" ", "\t")) and _EXCEPTION.match(ln.strip())), "")
    if not exception:
        said = [_RECORD.sub("", ln).strip() for ln in lines]
        said = [s for s in said if s and not set(s) <= set("^~ ") and not _FRAME.match(s)]
        exception = said[-1] if said else "no output"
    text = users(exception)
    return f"{text} ({where})" if where and where not in text else text


def user_source(source_dir: str | Path, root: Path) -> str:
    """The source folder as the user wrote it: relative to the project root when inside it."""
    path = Path(source_dir)
    try:
        return str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)
