"""The plan as a pull-request comment: the same plan model the terminal and JSON renderings use.

A pure function of the plan and a few inputs (the manifest path, why each resource is in the
plan): no I/O, no clock, no environment, so golden files are stable. The diff block is made of
the terminal renderer's own lines (``render_text.render_change``); only the action symbol moves
to the first column so that GitHub colours the lines.

The comment leads with what a reviewer must not miss (counts, deletions, replacements, services
that lose traffic) and keeps the ``Plan: ...`` summary outside the folded block. GitHub refuses
comments over 65,536 characters, so a long plan is split into several comments (each carrying
the hidden marker that lets the next push find and update it in place) and, past a number of
comments, cut: the summary lives in the first comment and always survives.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import quote

from .graph_render import mermaid_of_changes
from .plan import Action, Change, Plan
from .render_text import render_change, rollout_line, summary_line
from .rollout.resume import risk_kind, shows_rollout

COMMENT_LIMIT = 65_536
"""GitHub's maximum comment body, in characters."""
MAX_PARTS = 4
"""More comments than this per manifest is spam; the rest of the diff is cut instead."""
FOLD_LINES = 12
"""Atlantis' threshold: a diff longer than this goes into <details>."""
LIST_LIMIT = 10
"""Names listed in the risk line before "and N more", so the header stays small."""
MARKER_PREFIX = "<!-- mlops:plan manifest="
_COLOURS = {"+": "+", "-": "-", "~": "!"}
_SYMBOL = re.compile(r"^( *)([-+~])(?= )")


def marker(manifest: str, part: int = 1) -> str:
    """The hidden first line that identifies the sticky comment (and its part) for a manifest."""
    return f"{manifest_marker(manifest)} part={part} -->"


def manifest_marker(manifest: str) -> str:
    """The part of the marker shared by every comment of one manifest (quoted: no ``--`` inside)."""
    return MARKER_PREFIX + quote(manifest, safe="/._~+").replace("-", "%2D")


def parse_part(body: str, manifest: str) -> int | None:
    """The part number if ``body`` is one of this manifest's plan comments, else None."""
    first = body.split("\n", 1)[0].strip()
    prefix = manifest_marker(manifest) + " part="
    if not first.startswith(prefix) or not first.endswith("-->"):
        return None
    number = first[len(prefix):-3].strip()
    return int(number) if number.isdigit() else None


@dataclass(frozen=True)
class Provenance:
    """Why resources are in the plan: what changed in git since a base revision."""

    ref: str
    reasons: Mapping[str, Sequence[str]]


def render_markdown(
    plan: Plan,
    *,
    manifest: str,
    why: Provenance | None = None,
    limit: int = COMMENT_LIMIT,
    max_parts: int = MAX_PARTS,
) -> list[str]:
    """The comment bodies to post for one manifest, in order; usually one."""
    head = _head(plan, manifest, why)
    if not plan.has_changes:
        return [head + _footer(plan)]
    lines = _diff_lines(plan)
    single = head + _block(lines, len(lines) > FOLD_LINES, "Show plan") + mermaid_of_changes(plan) + _footer(plan)
    if size(single) <= limit:
        return [single]
    return _split(plan, manifest, head, lines, limit, max_parts)


def size(text: str) -> int:
    """Length as GitHub counts it (UTF-16 code units), so an emoji cannot push a part over."""
    return len(text.encode("utf-16-le")) // 2


# -- the header ---------------------------------------------------------------------------------

def _head(plan: Plan, manifest: str, why: Provenance | None) -> str:
    title = "destroy plan" if plan.destroy else "plan"
    out = [marker(manifest), f"### mlops {title} for `{manifest}`", ""]
    if plan.targeted:
        out += [f"> [!NOTE]\n> Resource targeting is in effect ({', '.join(plan.targeted)}): "
                "this plan covers only these resources and what they depend on.", ""]
    if plan.has_changes:
        out += [*_risk(plan), "", f"**{summary_line(plan)}**", ""]
        if why is not None:
            out += [*_why(plan, why), ""]
    elif not plan.destroy:
        out += ["**No changes.** The deployment matches the manifest.", ""]
    else:
        out += ["**No changes.** No objects need to be destroyed.", ""]
    return "\n".join(out) + "\n"


def _risk(plan: Plan) -> list[str]:
    """Deletions, replacements and which services lose traffic, in one alert a reviewer sees."""
    changes = plan.actionable
    deleted = [c for c in changes if c.action is Action.DELETE]
    replaced = [c for c in changes if c.action.is_replace]
    restarted = [c for c in changes if c.reason == "update_restarts_service"]
    warnings = [f"> **Warning:** {w}" for w in plan.warnings]
    rollouts = [f"> - `{c.address}`: {rollout_line(c)}" for c in changes if shows_rollout(c)]
    if rollouts and not deleted and not replaced and not restarted:
        return ["> [!WARNING]", f"> **Risk:** {_rollout_risk(changes)}; no deletions, no replacements.", ">",
                *rollouts, *([">", *warnings] if warnings else [])]
    if not deleted and not replaced and not restarted:
        if warnings:
            return ["> [!WARNING]", "> **Risk:** no deletions, no replacements; no service loses traffic.", ">",
                    *warnings]
        return ["**Risk:** no deletions, no replacements; no service loses traffic."]
    parts = []
    if deleted:
        parts.append(f"{_count(len(deleted), 'deletion')} ({_names(deleted)})")
    if replaced:
        parts.append(f"{_count(len(replaced), 'replacement')} ({_names(replaced)})")
    if restarted:
        parts.append(f"{_count(len(restarted), 'restarting update')} ({_names(restarted)})")
    lines = ["> [!WARNING]", f"> **Risk:** {', '.join(parts)}."]
    losing = [_traffic(c) for c in changes if c.address.kind == "service" and _traffic(c)]
    if losing:
        shown = losing[:LIST_LIMIT] + ([f"and {len(losing) - LIST_LIMIT} more"] if len(losing) > LIST_LIMIT else [])
        lines += [">", f"> **Services that lose traffic:** {'; '.join(shown)}."]
    else:
        lines += [">", "> **Services that lose traffic:** none (replacements start the new instance first)."]
    if rollouts:
        lines[1] = lines[1].removesuffix(".") + f"; {_rollout_risk(changes)}."
        lines += [">", *rollouts]
    if warnings:
        lines += [">", *warnings]
    return lines


def _rollout_risk(changes: Sequence[Change]) -> str:
    """``canary: service.a; blue_green: service.b`` — which services go live gradually, and how."""
    by: dict[str, list[Change]] = {}
    for c in changes:
        kind = risk_kind(c)
        if kind:
            by.setdefault(kind, []).append(c)
    return "; ".join(f"{strategy}: {_names(cs)}" for strategy, cs in sorted(by.items()))


def _traffic(change: Change) -> str:
    """How a service change interrupts its callers, or "" when it does not."""
    name = f"`{change.address.name}`"
    if change.action is Action.DELETE:
        return f"{name} is destroyed"
    moves = change.action.is_replace and change.before_target != change.after_target
    where = f", moving from target {change.before_target} to {change.after_target} (new endpoint)" if moves else ""
    if change.reason == "update_restarts_service":
        return f"{name} restarts to update (callers briefly lose it)"
    if change.action is Action.DELETE_THEN_CREATE:
        already = f" (already {change.live_status})" if _replaced_for_state(change) else ""
        return f"{name} is down while it is replaced{already}{where}"
    if moves:
        return f"{name} keeps serving while it is replaced{where}"
    return ""


def _why(plan: Plan, why: Provenance) -> list[str]:
    out = [f"**Why** (changes since `{why.ref}`):"]
    changes = plan.actionable
    for change in changes[:LIST_LIMIT * 5]:
        reasons = list(why.reasons.get(str(change.address), ()))
        if not reasons:
            reasons = [_live_reason(change)]
        shown = reasons[:LIST_LIMIT] + ([f"and {len(reasons) - LIST_LIMIT} more"] if len(reasons) > LIST_LIMIT
                                        else [])
        out.append(f"- `{change.address}`: {_clip('; '.join(shown), 500)}")
    if len(changes) > LIST_LIMIT * 5:
        out.append(f"- and {len(changes) - LIST_LIMIT * 5} more")
    return out


def _replaced_for_state(change: Change) -> bool:
    """Whether the target's rules replace this service because of its live state (not its spec)."""
    reason = change.reason or ""
    return bool(change.live_status) and reason.startswith("replace_because_") and reason not in (
        "replace_because_cannot_update", "replace_because_target_changed")


def _live_reason(change: Change) -> str:
    """Why a resource is in the plan when no file changed: it is the live side that differs."""
    if change.action is Action.CREATE:
        return "not deployed yet"
    if change.action is Action.DELETE:
        return "still live, but no longer in the manifest"
    if _replaced_for_state(change):
        return f"its live status is {change.live_status}"
    return "the live state differs from the manifest (drift)"


def _footer(plan: Plan) -> str:
    git = plan.git or {}
    commit = git.get("commit")
    if commit:
        branch = f" on branch `{git['branch']}`" if git.get("branch") else ""
        where = f"Planned at commit `{commit[:12]}`{branch}"
        if git.get("dirty"):
            where += " — :warning: the work tree had uncommitted changes, so this plan is not reproducible"
    else:
        where = "Planned outside a git repository"
    if not plan.has_changes:
        merge = "**On merge:** nothing to apply."
    else:
        merge = ("**On merge:** `mlops apply` applies exactly this plan if the resources it touches are unchanged; "
                 "if anything moved since, it plans again, applies that, and says so in the job summary.")
    return f"\n{where} with mlops {plan.tool_version or '?'}.\n\n{merge}\n"


# -- the diff block -----------------------------------------------------------------------------

def _diff_lines(plan: Plan) -> list[str]:
    lines: list[str] = []
    for change in plan.actionable:
        if lines:
            lines.append("")
        lines += [_colour(line) for line in render_change(change)]
    lines += ["", summary_line(plan)]
    return lines


def _colour(line: str) -> str:
    """Move a leading ``+``/``-``/``~`` to column 0 (``~`` as ``!``) so GitHub's diff colours it."""
    return _SYMBOL.sub(lambda m: _COLOURS[m[2]] + m[1], line, count=1)


def _block(lines: Sequence[str], fold: bool, summary: str) -> str:
    body = "\n".join(lines)
    fence = "`" * max(3, _longest_backtick_run(body) + 1)
    code = f"{fence}diff\n{body}\n{fence}\n"
    if not fold:
        return code
    return f"<details><summary>{summary} ({len(lines)} lines)</summary>\n\n{code}\n</details>\n"


def _longest_backtick_run(text: str) -> int:
    return max((len(m) for m in re.findall(r"`+", text)), default=0)


# -- splitting ------------------------------------------------------------------------------------

CONTINUED = "\n**Warning:** the plan is longer than one comment allows; it continues in the next comment.\n"


def _split(plan: Plan, manifest: str, head: str, lines: list[str], limit: int, max_parts: int) -> list[str]:
    """Greedy split of the diff lines across comments; past ``max_parts`` the middle is cut."""
    footer = _footer(plan)
    cut_note_room = 200
    reserve = size(_block(["x"], True, "Show plan, part 99 of 99")) + size(CONTINUED) + cut_note_room + 80
    budgets = [limit - size(head) - size(footer) - reserve] + [
        limit - size(marker(manifest, 99)) - size(footer) - reserve - 60] * (max_parts - 1)
    if budgets[0] < 200:
        raise ValueError(f"comment limit {limit} is too small for the plan header")
    chunks: list[list[str]] = []
    rest = list(lines)
    for budget in budgets:
        if not rest:
            break
        chunk, used = [], 0
        while rest:
            line = _clip(rest[0], budget - 1)
            if chunk and used + size(line) + 1 > budget:
                break
            chunk.append(line)
            used += size(line) + 1
            rest.pop(0)
        chunks.append(chunk)
    dropped = len(rest)
    if dropped:
        # The summary line is the diff's last line: keep it at the end of what is shown.
        chunks[-1].append("")
        chunks[-1].append(f"# ... {dropped} more lines not shown here: run `mlops plan` or see the job log.")
        chunks[-1].append(summary_line(plan))
    total = len(chunks)
    parts = []
    for i, chunk in enumerate(chunks, start=1):
        block = _block(chunk, True, f"Show plan, part {i} of {total}")
        last = i == total
        if i == 1:
            body = head + block
        else:
            body = f"{marker(manifest, i)}\nContinued from the previous comment (part {i} of {total}).\n\n" + block
        parts.append(body + (footer if last else CONTINUED))
    return parts


def _clip(text: str, limit: int) -> str:
    if size(text) <= limit:
        return text
    keep = max(0, limit - 40)
    return text[:keep] + f" … ({len(text) - keep} characters cut)"


def _count(n: int, word: str) -> str:
    return f"{n} {word}{'s' if n != 1 else ''}"


def _names(changes: Sequence[Change]) -> str:
    names = [f"`{c.address}`" for c in changes[:LIST_LIMIT]]
    if len(changes) > LIST_LIMIT:
        names.append(f"and {len(changes) - LIST_LIMIT} more")
    return ", ".join(names)
