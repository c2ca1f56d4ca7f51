"""pip's own reason for a failed install, in a few lines an apply can show.

pip explains most failures in ``ERROR:`` lines, but a failure in a build subprocess (a package
with no wheel for this Python, whose ``setup.py`` or build dependencies fail) only says
``× Getting requirements to build wheel did not run successfully`` and quotes the subprocess's
output in a box; the reason is that output's last line (``ModuleNotFoundError: No module named
'numpy'``). Both are kept, with the package pip was working on. Lines are cut short and any
credentials in a URL are masked; requirement-file lines pip quotes are never shown.
"""

from __future__ import annotations

import re

LINE_LIMIT = 300
MAX_REASONS = 4
_PACKAGE = re.compile(r"^\s*(?:Collecting|Building wheel for) (\S+)")
_EXCEPTION = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit)\b(: .*)?$")
_CREDENTIALS = re.compile(r"(://)[^/@\s]+@")
_BOX_START = re.compile(r"^\s*╰─> \[\d+ lines? of output\]")
_BOX_END = "[end of output]"


def _clean(line: str) -> str:
    line = _CREDENTIALS.sub(r"\1***@", line.strip())
    return line if len(line) <= LINE_LIMIT else line[:LINE_LIMIT - 1] + "…"


def reasons(output: str) -> list[str]:
    """The lines that say why pip failed, in the order pip printed them (at most MAX_REASONS)."""
    lines = output.splitlines()
    found: list[str] = []
    package = ""
    i = 0
    while i < len(lines):
        text = lines[i].strip()
        if m := _PACKAGE.match(lines[i]):
            package = m.group(1).rstrip(",")
        if text.startswith("×") and i + 1 < len(lines):
            what = text.lstrip("× ").rstrip(".")
            box: list[str] = []
            j = i + 1
            while j < len(lines) and not _BOX_START.match(lines[j]) and not lines[j].strip().startswith("╰─>"):
                j += 1
            if j < len(lines) and _BOX_START.match(lines[j]):
                j += 1
                while j < len(lines) and lines[j].strip() != _BOX_END:
                    box.append(lines[j].strip())
                    j += 1
            said = [ln for ln in box if ln.startswith("ERROR:") and "(from line" not in ln] \
                or [ln for ln in box if _EXCEPTION.match(ln)][-1:] \
                or [ln for ln in box if ln and not set(ln) <= set("^~ ")][-1:]
            if box or what not in " ".join(found):
                head = f"{what}{f' (for {package})' if package else ''}"
                found.append(f"{head}: {' '.join(said)}" if said else head)
            i = j + 1
            continue
        if text.startswith("ERROR:") and "(from line" not in text:
            found.append(text)
        i += 1
    unique = list(dict.fromkeys(_clean(f) for f in found))
    return unique[:MAX_REASONS]
