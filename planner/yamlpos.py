"""YAML loading that remembers where every value and key came from (line and column).

PyYAML's plain loaders drop positions and silently keep the last of duplicate keys; a manifest
tool needs both positions (for ``file:line:col`` errors) and a duplicate-key error.

A manifest comes from a pull request, so loading is also bounded: nesting depth, the number of
values after alias and merge expansion ("billion laughs"), integer size and the tags allowed are
all limited, and every failure is a :class:`YamlProblem` with a position, never a traceback.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

Path_ = tuple[str | int, ...]

MAX_DEPTH = 50
"""Nesting levels (mappings and lists); a real manifest needs fewer than ten."""
MAX_VALUES = 200_000
DEFAULT_MANIFEST_KIB = 2048
LIMIT_VARIABLE = "MLOPS_MAX_MANIFEST_KIB"
"""Raises both manifest limits for platform teams with more services (default 2 MiB and 200,000
values; the values limit scales with it). The defaults accept a 10,000-service platform manifest
(about 1.3-1.7 MB) and keep validate of the largest accepted hostile manifest near 2 s
(benchmarks/hostile_bench.py); a larger limit is a decision to trust the manifest's authors that
much more."""


def max_manifest_kib() -> int:
    import os

    try:
        return max(DEFAULT_MANIFEST_KIB, int(os.environ.get(LIMIT_VARIABLE) or DEFAULT_MANIFEST_KIB))
    except ValueError:
        return DEFAULT_MANIFEST_KIB


def max_values() -> int:
    return MAX_VALUES * max_manifest_kib() // DEFAULT_MANIFEST_KIB
"""Values after aliases and merges are expanded; bounds memory and time for any input."""
MAX_INT_DIGITS = 30
"""Longer integers are refused before Python parses them (it refuses > 4300 digits itself)."""
MAX_KEY_CHARS = 1024
"""YAML's own limit for an implicit (plain) key; longer keys need a clearer error than PyYAML's."""
_MESSAGE_CHARS = 200

_YAML = "tag:yaml.org,2002:"
_MAP, _SEQ, _MERGE = _YAML + "map", _YAML + "seq", _YAML + "merge"
# Scalars become str/int/float/bool/None only; a timestamp keeps its text (JSON has no dates),
# and ``=``/``<<`` used as values are plain text.
_AS_TEXT = {_YAML + "str", _YAML + "timestamp", _YAML + "value", _MERGE}
_CONSTRUCTED = {_YAML + "int", _YAML + "float", _YAML + "bool", _YAML + "null"}


@dataclass
class Positions:
    """1-based (line, col) of each value and of each mapping key, by path from the root."""

    values: dict[Path_, tuple[int, int]] = field(default_factory=dict)
    keys: dict[Path_, tuple[int, int]] = field(default_factory=dict)

    def of(self, path: Path_, *, key: bool = False) -> tuple[int, int]:
        """Position of ``path``; falls back to the nearest ancestor that has one."""
        table = self.keys if key else self.values
        p = tuple(path)
        while p:
            if p in table:
                return table[p]
            if p in self.values:
                return self.values[p]
            p = p[:-1]
        return self.values.get((), (1, 1))


class YamlProblem(Exception):
    def __init__(self, line: int, col: int, message: str):
        super().__init__(message)
        self.line, self.col, self.message = line, col, message


def one_line(text: str, limit: int = _MESSAGE_CHARS) -> str:
    """``text`` with control characters escaped and cut to ``limit``: a message stays one line."""
    out = "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in str(text))
    return out if len(out) <= limit else out[: limit - 3] + "..."


def _pos(node: yaml.Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


def _mark_pos(mark: Any) -> tuple[int, int]:
    return (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)


def _offset_pos(text: str, offset: int) -> tuple[int, int]:
    offset = max(0, min(offset, len(text)))
    line = text.count("\n", 0, offset) + 1
    return line, offset - (text.rfind("\n", 0, offset) + 1) + 1


def decode(raw: bytes) -> str:
    """Bytes of a manifest as text: UTF-8 (a BOM is allowed); a bad byte is a located problem."""
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        start = exc.start
        line_start = raw.rfind(b"\n", 0, start) + 1
        line = raw.count(b"\n", 0, start) + 1
        col = len(raw[line_start:start].decode("utf-8", "replace")) + 1
        hint = " (it looks like UTF-16)" if raw[:2] in (b"\xff\xfe", b"\xfe\xff") else ""
        raise YamlProblem(line, col, f"invalid UTF-8: byte 0x{raw[start]:02x}{hint}; "
                                     "save the manifest as UTF-8") from None


class _Loader(yaml.SafeLoader):
    """SafeLoader whose composer refuses nesting deeper than MAX_DEPTH (it recurses per level)."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            return super().compose_node(parent, index)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                line, col = _mark_pos(self.peek_event().start_mark)
                raise YamlProblem(line, col, f"nested more than {MAX_DEPTH} levels deep; "
                                             "a manifest needs far fewer: flatten this value")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


_CLoader: Any = getattr(yaml, "CSafeLoader", None) if yaml.__with_libyaml__ else None
_OPEN = (yaml.MappingStartEvent, yaml.SequenceStartEvent)
_CLOSE = (yaml.MappingEndEvent, yaml.SequenceEndEvent)


def _compose(text: str) -> yaml.Node | None:
    """The node graph of one document; libyaml when present (4x faster), else PyYAML's own."""
    if _CLoader is not None:
        try:
            return _compose_fast(text)
        except yaml.YAMLError:
            pass  # the pure-Python composer below finds the same error and words it as always
    return _compose_python(text)


def _compose_fast(text: str) -> yaml.Node | None:
    """libyaml's composer recurses in C per nesting level (5,000 levels crash the process), so
    a first pass over libyaml's events bounds the depth before it composes anything."""
    depth = 0
    for event in yaml.parse(text, Loader=_CLoader):
        if isinstance(event, _CLOSE):
            depth -= 1
            continue
        if isinstance(event, (*_OPEN, yaml.ScalarEvent)) and depth + 1 > MAX_DEPTH:
            line, col = _mark_pos(event.start_mark)
            raise YamlProblem(line, col, f"nested more than {MAX_DEPTH} levels deep; "
                                         "a manifest needs far fewer: flatten this value")
        if isinstance(event, _OPEN):
            depth += 1
    return yaml.compose(text, Loader=_CLoader)


def _compose_python(text: str) -> yaml.Node | None:
    loader: _Loader | None = None
    try:
        loader = _Loader(text)  # a str is checked for unprintable characters right here
        return loader.get_single_node()
    except yaml.reader.ReaderError as exc:
        line, col = _offset_pos(text, exc.position)
        what = "NUL" if exc.character in (0, "\0") else f"#x{_code(exc.character):04x}"
        raise YamlProblem(line, col, f"invalid YAML: character {what} is not allowed in YAML; "
                                     "remove it (control characters cannot appear in a manifest)") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = _mark_pos(mark)
        long_key = _long_key(text, mark)
        if long_key:
            raise YamlProblem(line, _indent(text, mark) + 1,
                              f"a key of {long_key} characters is longer than YAML allows ({MAX_KEY_CHARS}); "
                              "names are at most 255 characters (service and project names 32)") from None
        raise YamlProblem(line, col, f"invalid YAML: {one_line(exc.problem or exc)}") from None
    except yaml.YAMLError as exc:  # pragma: no cover - every PyYAML error above carries a mark
        raise YamlProblem(1, 1, f"invalid YAML: {one_line(exc)}") from None
    finally:
        if loader is not None:
            loader.dispose()


def _code(character: Any) -> int:
    return character if isinstance(character, int) else ord(str(character)[:1] or "\0")


def _long_key(text: str, mark: Any) -> int:
    """Length of the over-long plain key PyYAML stumbled on at ``mark``, else 0."""
    if mark is None:
        return 0
    lines = text.splitlines()
    if not 0 <= mark.line < len(lines):
        return 0
    head = lines[mark.line][: mark.column].strip().lstrip("-? ").strip()
    return len(head) if len(head) > MAX_KEY_CHARS else 0


def _indent(text: str, mark: Any) -> int:
    lines = text.splitlines()
    line = lines[mark.line] if 0 <= mark.line < len(lines) else ""
    return len(line) - len(line.lstrip(" "))


def _tag_name(tag: str) -> str:
    return one_line("!!" + tag[len(_YAML):] if tag.startswith(_YAML) else tag, 60)


class _Builder:
    """Node graph -> plain data with positions, expanding aliases and merges within the bounds."""

    def __init__(self) -> None:
        self.positions = Positions()
        self.count = 0
        self.max_values = max_values()
        self.constructor = yaml.SafeLoader("")

    def value(self, n: yaml.Node, path: Path_) -> Any:
        self.count += 1
        if self.count > self.max_values:
            line, col = _pos(n)
            raise YamlProblem(line, col, f"the manifest expands to more than {self.max_values} values "
                                         "(aliases or merge keys repeat too much); write the entries out")
        if len(path) > MAX_DEPTH:
            line, col = _pos(n)
            raise YamlProblem(line, col, f"nested more than {MAX_DEPTH} levels deep (an alias may refer to "
                                         "itself); flatten this value")
        self.positions.values.setdefault(path, _pos(n))
        if isinstance(n, yaml.MappingNode):
            self._tag(n, _MAP)
            out: dict[str, Any] = {}
            for key, key_node, value_node in self.pairs(n, len(path)):
                self.positions.keys.setdefault((*path, key), _pos(key_node))
                out[key] = self.value(value_node, (*path, key))
            return out
        if isinstance(n, yaml.SequenceNode):
            self._tag(n, _SEQ)
            return [self.value(item, (*path, i)) for i, item in enumerate(n.value)]
        return self.scalar(n)

    def pairs(self, n: yaml.MappingNode, depth: int) -> list[tuple[str, yaml.Node, yaml.Node]]:
        """A mapping's entries: its own keys (each once) over merged ones (the first merge wins)."""
        if depth > MAX_DEPTH:
            line, col = _pos(n)
            raise YamlProblem(line, col, f"merge keys nest more than {MAX_DEPTH} levels (a mapping may merge "
                                         "itself); remove the `<<` cycle")
        own: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        merged: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        for key_node, value_node in n.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag == _MERGE:
                self._merge(value_node, merged, depth)
                continue
            key = self.key(key_node)
            if key in own:
                line, col = _pos(key_node)
                raise YamlProblem(line, col, f"duplicate key {one_line(repr(key), 80)} (each key may appear once)")
            own[key] = (key_node, value_node)
        # PyYAML's order: merged keys first (where they are overridden too), then the mapping's own.
        order = [*merged, *(k for k in own if k not in merged)]
        return [(k, *(own.get(k) or merged[k])) for k in order]

    def _merge(self, value: yaml.Node, merged: dict[str, tuple[yaml.Node, yaml.Node]], depth: int) -> None:
        sources = value.value if isinstance(value, yaml.SequenceNode) else [value]
        for source in sources:
            self.count += 1
            if self.count > self.max_values:
                line, col = _pos(source)
                raise YamlProblem(line, col, f"the manifest expands to more than {self.max_values} values "
                                             "(merge keys repeat too much); write the entries out")
            if not isinstance(source, yaml.MappingNode):
                line, col = _pos(source)
                kind = "a list" if isinstance(source, yaml.SequenceNode) else "a single value"
                raise YamlProblem(line, col, f"`<<` merges a mapping or a list of mappings, not {kind}; "
                                             "point it at an anchored mapping (`<<: *defaults`)")
            self._tag(source, _MAP)
            for key, key_node, value_node in self.pairs(source, depth + 1):
                self.count += 1
                if self.count > self.max_values:
                    line, col = _pos(key_node)
                    raise YamlProblem(line, col, f"the manifest expands to more than {self.max_values} values "
                                                 "(merge keys repeat too much); write the entries out")
                merged.setdefault(key, (key_node, value_node))

    def key(self, n: yaml.Node) -> str:
        if not isinstance(n, yaml.ScalarNode):
            line, col = _pos(n)
            raise YamlProblem(line, col, "a key must be plain text, not a list or mapping; "
                                         "write the key as a name")
        value = self.scalar(n)
        return value if isinstance(value, str) else str(value)

    def scalar(self, n: yaml.Node) -> Any:
        tag = n.tag
        if tag in _AS_TEXT:
            return n.value
        if tag not in _CONSTRUCTED:
            line, col = _pos(n)
            raise YamlProblem(line, col, f"unsupported YAML tag {_tag_name(tag)} (a manifest is plain YAML); "
                                         "remove the tag, or quote the value if it is text")
        if (tag == _YAML + "int" and len(n.value) > MAX_INT_DIGITS
                and sum(ch.isdigit() for ch in n.value) > MAX_INT_DIGITS):
            line, col = _pos(n)
            raise YamlProblem(line, col, f"an integer of {sum(ch.isdigit() for ch in n.value)} digits is too "
                                         f"large (at most {MAX_INT_DIGITS}); quote it if it is text")
        try:
            return self.constructor.construct_object(n, deep=True)
        except (yaml.YAMLError, ValueError, TypeError, OverflowError):
            line, col = _pos(n)
            raise YamlProblem(line, col, f"{_tag_name(tag)} value {one_line(repr(n.value), 60)} is not valid; "
                                         "fix the value or remove the tag") from None

    @staticmethod
    def _tag(n: yaml.Node, expected: str) -> None:
        if n.tag != expected:
            line, col = _pos(n)
            raise YamlProblem(line, col, f"unsupported YAML tag {_tag_name(n.tag)} (a manifest is plain YAML); "
                                         "remove the tag")


class _NeedKey:
    """A mapping frame's key slot while it waits for its next key."""


_NEED_KEY = _NeedKey()


def _load_plain(text: str) -> tuple[Any, Positions] | None:
    """The common document (no anchors, aliases, merge keys or tags) straight from libyaml's events.

    One pass, no node graph and no recursion: depth is counted as it goes, so no separate pass is
    needed to protect libyaml's recursive composer. It gives exactly the data and positions the
    node-graph path (``_Builder``) gives such a document; anything else, including every error
    and every limit reached, returns None and that path decides and words it.
    """
    if _CLoader is None:
        return None
    builder = _Builder()
    values, keys = builder.positions.values, builder.positions.keys
    resolve = _RESOLVER.resolve
    limit, count, root = builder.max_values, 0, None
    stack: list[list[Any]] = []   # [container, path, key slot] per open mapping or list
    events = yaml.parse(text, Loader=_CLoader)
    try:
        if type(next(events)) is not yaml.StreamStartEvent or type(next(events)) is not yaml.DocumentStartEvent:
            return None
        for event in events:
            kind = type(event)
            if kind is yaml.MappingEndEvent or kind is yaml.SequenceEndEvent:
                stack.pop()
                continue
            if kind is yaml.DocumentEndEvent:
                break
            if kind is yaml.AliasEvent or event.anchor is not None or event.tag is not None:
                return None
            top = stack[-1] if stack else None
            mark = event.start_mark
            if top is not None and top[2] is _NEED_KEY:
                if kind is not yaml.ScalarEvent:
                    return None
                tag = resolve(yaml.ScalarNode, event.value, event.implicit)
                if tag == _MERGE:
                    return None
                key = event.value if tag in _AS_TEXT else builder.key(yaml.ScalarNode(tag, event.value, mark))
                if key in top[0]:
                    return None   # a duplicate key: the node-graph path reports it
                keys[(*top[1], key)] = (mark.line + 1, mark.column + 1)
                top[2] = key
                continue
            path = () if top is None else (*top[1], top[2] if top[2] is not None else len(top[0]))
            count += 1
            if count > limit or len(path) > MAX_DEPTH:
                return None
            values[path] = (mark.line + 1, mark.column + 1)
            if kind is yaml.ScalarEvent:
                tag = resolve(yaml.ScalarNode, event.value, event.implicit)
                value = event.value if tag in _AS_TEXT else builder.scalar(yaml.ScalarNode(tag, event.value, mark))
                frame = None
            elif kind is yaml.MappingStartEvent:
                value, frame = {}, [None, path, _NEED_KEY]
            elif kind is yaml.SequenceStartEvent:
                value, frame = [], [None, path, None]
            else:
                return None
            if top is None:
                root = value
            elif top[2] is None:
                top[0].append(value)
            else:
                top[0][top[2]] = value
                top[2] = _NEED_KEY
            if frame is not None:
                frame[0] = value
                stack.append(frame)
        if type(next(events)) is not yaml.StreamEndEvent:
            return None   # a second document: the node-graph path refuses it
    except (yaml.YAMLError, YamlProblem, StopIteration, ValueError, TypeError, OverflowError):
        return None
    return root, builder.positions


_RESOLVER = yaml.resolver.Resolver()


def load(text: str) -> tuple[Any, Positions]:
    """Parse one YAML document into plain data plus positions; raise YamlProblem on bad input."""
    plain = _load_plain(text)
    if plain is not None:
        return plain
    node = _compose(text)
    builder = _Builder()
    if node is None:
        return None, builder.positions
    return builder.value(node, ()), builder.positions
