"""Fuzz: structural and textual mutations of ml.yaml.example (issue 9, "hostile inputs").

Every mutated manifest is loaded in this process the way `mlops validate` and `mlops plan` load it
(manifest, then the desired resources with their content hashes), under a guard that fails a case
that never returns. The properties: no exception other than a ManifestError (no traceback), no
hang, every problem a single ``ml.yaml:line:col: message`` line, and no message holding a value
that came from the environment as a secret. A seeded generator gives 600 reproducible cases;
hypothesis adds its own on top. The project folder also holds hostile files (a link to
/dev/zero, a FIFO, a link to /etc/shadow) for paths to point at.
"""

from __future__ import annotations

import copy
import os
import random
import re
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import ROOT, copy_example, run_cli

from planner.errors import ManifestError
from planner.manifest import load_manifest
from planner.project import Project

LOCATED = re.compile(r"^ml\.yaml:\d+:\d+: \S[^\n\r]*$")
SECRET = "Zq9-fuzz-secret-value"
ENV = {"FUZZ_PORT": "8123", "FUZZ_KEY": SECRET, "FUZZ_TEXT": "hello", "FUZZ_BOOL": "true"}
BASE = (ROOT / "ml.yaml.example").read_text()
SEEDED_CASES = 600

HOSTILE_TEXT = [
    "", " ", "x" * 5000, "d" * 40, "../../etc/passwd", "/etc/shadow", "/dev/zero", "hostile/zero", "hostile/fifo",
    "hostile/shadow", "hostile", "hostile/tree", "examples/diabetes/src", "examples", ".", "..",
    "-r/proc/self/environ", "--index-url=http://evil.example", "pkg @ file:///etc/passwd", "numpy\n-r x",
    "${FUZZ_KEY}", "${FUZZ_PORT}", "${FUZZ_BOOL}", "${UNSET_FUZZ_VAR}", "$${FUZZ_KEY}", "${bad name}", "a\0b",
    "line\nbreak", "tab\there", "\u202eevil", "日本語", "auto", "key", "none", "docker", "process", "3.11", "2.7",
    "score.py", "MLOPS_PRIMARY_KEY", "LD_PRELOAD", "PATH", "https://user:pw@example.org/simple",
    "diabetes-api\n", "3.11\n", "dev\n", "ridge\n", "sklearn\r\n", "python:3.11-slim\n",
    "pkg @ git+https://github.com/acme/pkg@v1", "pkg @ https://example.org/pkg-1.0-py3-none-any.whl",
    "joblib @ https://files.example.org/joblib-1.3.2.tar.gz", "pkg[x] @ git+https://h.example/p ; python_version>'3'",
]
HOSTILE_VALUES: list[Any] = [
    *HOSTILE_TEXT, None, True, False, 0, -1, 80, 1023, 1024, 65535, 65536, 8123, 2**63, 10**29, 1e308, -0.0,
    [], {}, [[[]]], {"a": {"b": {"c": None}}}, ["numpy", "-r/etc/passwd"], {"LD_PRELOAD": "x", "OK_VAR": SECRET},
    {"port": 9001}, {"primary_key": "${FUZZ_KEY}"}, {"provider": "local"}, {"provider": "nope"},
]
HOSTILE_KEYS = ["x", "provider", "engine", "path", "pip", "pip_index_url", "port", "primary_key", "deploy",
                "environment_variables", "<<", "registry", "d" * 300, "Bad Name!", "ok-name", "1", "true", "null",
                "ok-name\n", "dev\n", "OK_VAR\n"]
SNIPPETS = [
    ": ", "- ", "{", "}", "[", "]", "&a ", "*a", "*undefined", "!!python/name:os.system ", "!secret ", "!!binary ",
    "<<: *a\n", "<<: ", "%TAG ! tag:x\n", "---\n", "...\n", "? ", "|\n", ">-\n", "'", '"', "#", "\t", "\\", "\n",
    "  ", "9" * 5000, "[" * 300, "{a: " * 100, "&x [*x]\n", "a" * 3000, "${FUZZ_KEY}", "${FUZZ_PORT}", "\u2028",
    "\x85", "\ufeff", "\x1b[31m", "@", "`", "%",
]
RAW = [b"\xff", b"\xfe", b"\x00", b"\xc3", b"\xe2\x82", b"\xed\xa0\x80", b"\r", b"\r\n"]


@contextmanager
def no_hang(seconds: int = 30) -> Iterator[None]:
    def expired(signum: int, frame: Any) -> None:
        raise TimeoutError(f"still running after {seconds}s: a hang")

    old = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@pytest.fixture(scope="module")
def fuzz_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fuzz")
    copy_example(root)
    hostile = root / "hostile"
    (hostile / "tree").mkdir(parents=True)
    (hostile / "zero").symlink_to("/dev/zero")
    (hostile / "shadow").symlink_to("/etc/shadow")
    os.mkfifo(hostile / "fifo")
    (hostile / "tree" / "ok.txt").write_text("ok")
    (hostile / "tree" / "link").symlink_to("/etc/passwd")
    return root


# -- mutations ------------------------------------------------------------------------------------
def _paths(value: Any, path: tuple = ()) -> list[tuple]:
    out = [path]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*path, i))
    return out


def _parent(data: Any, path: tuple) -> Any:
    for p in path[:-1]:
        data = data[p]
    return data


def _deep(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = [value]
    return value


def structural(rng: random.Random) -> str:
    """Change the parsed example (set, delete, add, rename, duplicate), then dump it as YAML."""
    data = yaml.safe_load(BASE)
    for _ in range(rng.randint(1, 4)):
        paths = [p for p in _paths(data) if p]
        path = rng.choice(paths)
        parent = _parent(data, path)
        op = rng.randrange(6)
        if op == 0:
            parent[path[-1]] = copy.deepcopy(rng.choice(HOSTILE_VALUES + [_deep(rng.choice([10, 49, 60]))]))
        elif op == 1:
            del parent[path[-1]]
        elif op == 2 and isinstance(parent, dict):
            parent[rng.choice(HOSTILE_KEYS)] = copy.deepcopy(rng.choice(HOSTILE_VALUES))
        elif op == 3 and isinstance(parent, dict):
            parent[rng.choice(HOSTILE_KEYS)] = parent.pop(path[-1])
        elif op == 4 and isinstance(data.get("services"), dict) and data["services"]:
            name, service = next(iter(data["services"].items()))
            twin = copy.deepcopy(service)
            if isinstance(twin, dict) and isinstance(twin.get("deploy"), dict):
                twin["deploy"]["port"] = rng.choice([9001, "auto", "${FUZZ_PORT}"])
            data["services"][rng.choice(["second-api", name + "-b", "x" * 40])] = twin
        else:
            parent[path[-1]] = [parent[path[-1]]]
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=rng.random() < 0.5,
                          default_flow_style=rng.choice([False, None, True]), width=rng.choice([80, 10**6]))


def textual(rng: random.Random, text: str = BASE) -> bytes:
    """Edit the example's text (delete, insert, duplicate, swap, indent, truncate, raw bytes)."""
    raw = text.encode()
    for _ in range(rng.randint(1, 3)):
        lines = raw.split(b"\n")
        op = rng.randrange(8)
        at = rng.randrange(len(raw) + 1)
        if op == 0:
            raw = raw[:at] + raw[at + rng.randint(1, 40):]
        elif op == 1:
            raw = raw[:at] + rng.choice(SNIPPETS).encode() + raw[at:]
        elif op == 2:
            i = rng.randrange(len(lines))
            lines.insert(i, lines[i])
            raw = b"\n".join(lines)
        elif op == 3:
            i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
            lines[i], lines[j] = lines[j], lines[i]
            raw = b"\n".join(lines)
        elif op == 4:
            i = rng.randrange(len(lines))
            lines[i] = (b" " * rng.choice([1, 2, 4])) + lines[i] if rng.random() < 0.5 else lines[i].lstrip()
            raw = b"\n".join(lines)
        elif op == 5:
            raw = raw[:at]
        elif op == 6:
            raw = raw[:at] + rng.choice(RAW) + raw[at:]
        else:
            value = rng.choice(HOSTILE_TEXT)
            raw = raw.replace(rng.choice([b"auto", b"score.py", b"examples/diabetes/src", b"joblib>=1.3", b"key",
                                          b"diabetes-api", b"ridge", b"sklearn", b"dev", b"3.11", b"1"]),
                              yaml.safe_dump(value).removesuffix("\n...\n").strip().encode(), 1)
    return raw


def mutation(seed: int) -> bytes:
    rng = random.Random(seed)
    if rng.random() < 0.5:
        return structural(rng).encode()
    if rng.random() < 0.3:
        return textual(rng, structural(rng))
    return textual(rng)


# -- the property ---------------------------------------------------------------------------------
def check(project: Path, raw: bytes) -> str:
    """Load like validate and plan do; return "accepted" or "refused", or raise what went wrong."""
    (project / "ml.yaml").write_bytes(raw)
    old = Path.cwd()
    os.chdir(project)
    try:
        with no_hang():
            try:
                manifest = load_manifest(Path("ml.yaml"), env=ENV)
                Project(manifest).desired()
            except ManifestError as exc:
                for problem in exc.problems:
                    line = str(problem)
                    assert LOCATED.match(line), f"not one located line: {line!r}"
                    assert SECRET not in line, f"secret in message: {line!r}"
                return "refused"
            _accepted_holds_no_newline_name_or_url_requirement(manifest.data)
    finally:
        os.chdir(old)
    return "accepted"


def _accepted_holds_no_newline_name_or_url_requirement(data: Any) -> None:
    """What validation promises of an accepted manifest: names end where they seem to, pip entries
    are index requirements."""
    def walk(value: Any, path: tuple) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                assert not (isinstance(k, str) and k[-1:] in ("\n", "\r")), f"name with a newline at {path}: {k!r}"
                walk(v, (*path, k))
        elif isinstance(value, list):
            for i, v in enumerate(value):
                walk(v, (*path, i))
    walk(data, ())
    assert not str(data.get("project", ""))[-1:].isspace(), data.get("project")
    for env in (data.get("environments") or {}).values():
        if isinstance(env, dict):
            assert not str(env.get("python", "3.11"))[-1:].isspace(), env
            for entry in env.get("pip") or []:
                assert "://" not in str(entry), f"URL requirement accepted: {entry!r}"


def test_seeded_mutations_never_crash_hang_or_leak(fuzz_project: Path, capsys: pytest.CaptureFixture[str]):
    outcomes: dict[str, int] = {"accepted": 0, "refused": 0}
    failures: list[str] = []
    for seed in range(SEEDED_CASES):
        raw = mutation(seed)
        try:
            outcomes[check(fuzz_project, raw)] += 1
        except Exception as exc:  # noqa: BLE001 - every failure is collected with its seed
            failures.append(f"seed {seed}: {type(exc).__name__}: {str(exc)[:300]}")
    with capsys.disabled():
        print(f"\nfuzz: {SEEDED_CASES} seeded cases, {outcomes['accepted']} accepted, {outcomes['refused']} refused")
    assert not failures, f"{len(failures)} of {SEEDED_CASES} cases failed:\n" + "\n".join(failures[:10])
    assert outcomes["refused"] > SEEDED_CASES // 4 and outcomes["accepted"] > 0  # the mutations do bite


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, len(BASE)), st.sampled_from(SNIPPETS + [r.decode("latin-1") for r in RAW])),
                min_size=1, max_size=4))
def test_inserted_snippets_never_crash_hang_or_leak(fuzz_project: Path, edits: list[tuple[int, str]]):
    raw = BASE.encode()
    for at, snippet in sorted(edits, reverse=True):
        data = snippet.encode("latin-1") if all(ord(c) < 256 for c in snippet) else snippet.encode()
        raw = raw[:at] + data + raw[at:]
    check(fuzz_project, raw)


@pytest.mark.parametrize("seed", range(0, SEEDED_CASES, 40))
def test_the_cli_prints_only_located_lines(fuzz_project: Path, seed: int):
    (fuzz_project / "ml.yaml").write_bytes(mutation(seed))
    for command in ("validate", "plan"):
        with no_hang():
            result = run_cli(command, "-f", "ml.yaml", cwd=fuzz_project)
        assert result.code in (0, 1, 2), result.err
        assert "Traceback" not in result.err
        if result.code == 1 and "the manifest has" in result.err:
            *problems, summary = result.err.rstrip("\n").split("\n")
            assert summary.startswith("Error: the manifest has"), result.err
            assert problems and all(LOCATED.match(p) for p in problems), result.err
        elif result.code == 1:  # not the manifest (a target that cannot be reached): one line
            assert result.err.count("\n") == 1 and result.err.startswith("Error: "), result.err


NAMES = ["project: diabetes", "diabetes-api:", "ridge:", "sklearn:", "dev:", 'python: "3.11"']


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(NAMES), st.sampled_from(["\\n", "\\r\\n", "\\n\\n", "\\r"]))
def test_a_name_with_a_trailing_newline_is_refused(fuzz_project: Path, name: str, ending: str):
    """`$` matches before a final newline in Python: every name and enum check must still refuse one."""
    assert name.split(":")[0] + ":" in BASE or name in BASE
    if name.endswith(":"):
        quoted = f'"{name[:-1]}{ending}":'
    else:
        key, value = name.split(": ", 1)
        quoted = f'{key}: "{value.strip(chr(34))}{ending}"'
    raw = BASE.replace(name, quoted, 1).encode()
    assert raw != BASE.encode()
    assert check(fuzz_project, raw) == "refused", quoted
