"""Values a manifest took from the environment (``${VAR}``) are shown as their reference.

A pull request controls ml.yaml, and CI runs `mlops plan` with its secrets in the environment:
``description: "${AZURE_CLIENT_SECRET}"`` must not post the secret as a PR comment. So every
value interpolated from a variable that the manifest does not list in ``public_vars`` is shown
as the text the manifest wrote (``${AZURE_CLIENT_SECRET}``, ``https://${HOST}/simple``) in every
plan, in every format. Plans still see a change of value: the diff runs on the real values (and
fingerprints hash them), and the rendering marks the changed attribute ``(changed)``.

Two mechanisms, one list of values:

- ``EnvReferences.mask_change``: the plan's before/after values, attribute by attribute. A value
  equal to what the manifest wrote at an attribute of the same name shows that attribute's text
  (this covers short values such as ``cpu: ${CPU}``); any other string loses every occurrence
  of a value of ``MIN_LENGTH`` characters or more, replaced by ``${NAME}``.
- ``Redactor.reference`` (planner.redact): the net under every line the CLI prints (status,
  errors, warnings), for values of ``MIN_LENGTH`` characters or more.

Credentials inside URLs (planner.urlmask) are masked on the same walk, whether or not they came
from the environment.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from .plan import Change
from .redact import replace_value
from .urlmask import mask_urls

MIN_LENGTH = 4
"""Shorter values are masked only where the manifest put them (an attribute of the same name):
replaced in free text they would mangle ordinary words and numbers."""
CHANGED = " (changed)"
EARLIER = "(earlier value)"


@dataclass(frozen=True)
class EnvReferences:
    """What the manifest took from the environment, and how each piece is shown.

    ``values``: value -> ``${NAME}`` for every non-public variable used.
    ``written``: (attribute name, interpolated text) -> the text as written in the manifest.
    """

    values: Mapping[str, str] = field(default_factory=dict)
    written: Mapping[tuple[str, str], str] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.values)

    def text(self, text: str) -> str:
        """``text`` with every value of MIN_LENGTH characters or more replaced by its reference."""
        if not self.values:
            return text
        for value in sorted(self.values, key=len, reverse=True):
            if len(value) >= MIN_LENGTH and value in text:
                text = replace_value(text, value, self.values[value])
        return text

    def value(self, value: Any, key: str | None) -> Any:
        """One attribute's value as shown: the manifest's text where it came from the environment."""
        if isinstance(value, dict | Mapping):
            return {k: self.value(v, str(k)) for k, v in value.items()}
        if isinstance(value, list):
            return [self.value(v, key) for v in value]
        if value is None:
            return None
        scalar = value if isinstance(value, str) else _spelled(value)
        if key is not None and (key, scalar) in self.written:
            return mask_urls(self.written[(key, scalar)])
        if isinstance(value, str):
            return mask_urls(self.text(value))
        return self.text(scalar) if scalar in self.values else value

    def mask_change(self, change: Change) -> Change:
        """A change fit to show: environment values replaced, a changed one still visibly changed."""
        if change.before is None and change.after is None:
            return change
        if not self.values and "://" not in repr(change.before) and "://" not in repr(change.after):
            return change   # nothing to hide: a platform plan of 10,000 services costs no walk
        after = self._spec(change.after)
        before = self._spec(change.before)
        if before is not None and after is not None:
            before, after = _mark(change.before, change.after, before, after)
        return replace(change, before=before, after=after,
                       live_message=mask_urls(self.text(change.live_message)) if change.live_message else None)

    def _spec(self, spec: Mapping[str, Any] | None) -> dict[str, Any] | None:
        return None if spec is None else {k: self.value(v, str(k)) for k, v in spec.items()}

    def texts(self, texts: Iterable[str]) -> tuple[str, ...]:
        return tuple(mask_urls(self.text(t)) for t in texts)


def _spelled(value: Any) -> str:
    """A typed value as the environment spelled it (``port: ${PORT}`` -> 8080 from "8080")."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _mark(real_before: Mapping[str, Any], real_after: Mapping[str, Any], before: dict[str, Any],
          after: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Where masking hid a difference, say so; where it hid only the new value, hide the old one too.

    The old value of an attribute now taken from the environment may be a rotated secret that the
    current environment no longer holds, so it is not shown either.
    """
    for key in set(real_after) | set(real_before):
        old, new = real_before.get(key, _ABSENT), real_after.get(key, _ABSENT)
        if old == new or old is _ABSENT or new is _ABSENT:
            continue
        if isinstance(old, Mapping) and isinstance(new, Mapping):
            before[key], after[key] = _mark(old, new, dict(before[key]), dict(after[key]))
            continue
        masked = after[key] != new
        if not masked:
            continue
        if before[key] == after[key]:
            after[key] = f"{_plain(after[key])}{CHANGED}"
        else:
            before[key] = EARLIER
    return before, after


def _plain(value: Any) -> str:
    return value if isinstance(value, str) else str(value)


_ABSENT = object()
