"""`mlops serve` runs the scoring runtime on a score.py, with the flag names scripts rely on, and
lays models out exactly as a deployment does (issue 22.11)."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import git
import pytest
from support import ECHO_SCORE, project_data

from planner.core.resources import spec_fingerprint
from providers.local.processes import free_port

FOLDER_SCORE = '''\
import json, os

def init():
    global vocab, layout
    root = os.environ["AZUREML_MODEL_DIR"]
    # Written for the deployed layout: a folder model keeps its folder name.
    vocab = open(os.path.join(root, "tokenizer", "vocab.txt")).read().split()
    layout = sorted(os.path.relpath(os.path.join(d, f), root)
                    for d, _, files in os.walk(root, followlinks=True) for f in files)

def run(raw_data):
    return {"vocab": vocab, "layout": layout}
'''


@contextmanager
def serving(*args: str, cwd: Path | None = None) -> Iterator[int]:
    """`mlops serve ARGS` on a free port; yields the port once ready, stops it (exit 0) after."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "planner.cli", "serve", *args, "--port", str(port), "--workers", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=cwd,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=1) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    proc.kill()
                    raise AssertionError(proc.stdout.read() if proc.stdout else "no output") from None
                time.sleep(0.1)
        yield port
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0


def score(port: int, body: bytes = b'{"a": 1}') -> object:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/score", data=body,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        return json.loads(resp.read())


def test_mlops_serve_scores_a_script(tmp_path: Path):
    (tmp_path / "model.txt").write_text("served\n")
    (tmp_path / "score.py").write_text(ECHO_SCORE)
    with serving("--entry-script", str(tmp_path / "score.py"), "--model-dir", str(tmp_path)) as port:
        assert score(port) == {"model": "served", "echo": {"a": 1}}


def make_folder_model(root: Path) -> Path:
    model = root / "tokenizer"
    (model / "sub").mkdir(parents=True)
    (model / "vocab.txt").write_text("hello world\n")
    (model / "sub" / "merges.bin").write_bytes(b"\x00\x01")
    (root / "src").mkdir()
    (root / "src" / "score.py").write_text(FOLDER_SCORE)
    return model


EXPECTED_LAYOUT = ["tokenizer/sub/merges.bin", "tokenizer/vocab.txt"]


def test_a_folder_model_is_served_under_its_folder_name(tmp_path: Path):
    make_folder_model(tmp_path)
    with serving("--entry-script", "src/score.py", "--model", "tok=tokenizer", cwd=tmp_path) as port:
        assert score(port) == {"vocab": ["hello", "world"], "layout": EXPECTED_LAYOUT}


def test_several_models_are_laid_out_by_name_and_version(tmp_path: Path):
    make_folder_model(tmp_path)
    (tmp_path / "ridge.pkl").write_bytes(b"pickle")
    (tmp_path / "src" / "score.py").write_text('''\
import json, os

def init():
    global layout
    root = os.environ["AZUREML_MODEL_DIR"]
    layout = sorted(os.path.relpath(os.path.join(d, f), root)
                    for d, _, files in os.walk(root, followlinks=True) for f in files)

def run(raw_data):
    return layout
''')
    with serving("--entry-script", "src/score.py", "--model", "tok:3=tokenizer", "--model", "ridge=ridge.pkl",
                 cwd=tmp_path) as port:
        assert score(port) == ["ridge/1/ridge.pkl", "tok/3/tokenizer/sub/merges.bin", "tok/3/tokenizer/vocab.txt"]


@pytest.mark.parametrize("args, message", [
    (["--model", "tok"], "--model 'tok': expected NAME=PATH or NAME:VERSION=PATH"),
    (["--model", "tok=missing"], "--model tok: missing does not exist"),
    (["--model", "tok=tokenizer", "--model", "tok=tokenizer"], "--model tok is given more than once"),
    (["--model", "tok=tokenizer", "--model-dir", "."], "give --model or --model-dir, not both"),
])
def test_bad_model_arguments_are_one_line_and_exit_2(tmp_path: Path, args: list[str], message: str):
    make_folder_model(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "planner.cli", "serve", "--entry-script", "src/score.py", *args],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"mlops serve: error: {message}"]


MANIFEST = """\
version: 1
project: serve-layout
models:
  tok: {path: tokenizer}
environments:
  e: {python: "3.11"}
services:
  tok-api:
    models: [tok]
    environment: e
    source_dir: src
    entry_script: score.py
    deploy: {port: auto}
"""


def probe_port_under(root: Path) -> int:
    """The probe port of the one runtime serving from ``root`` (read from its command line)."""
    ports = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
            except OSError:
                continue
            if "--probe-port" in argv and any(str(root) in arg for arg in argv):
                ports.add(int(argv[argv.index("--probe-port") + 1]))
    assert len(ports) == 1, ports
    return ports.pop()


@pytest.mark.slow
def test_a_script_written_for_a_deployed_folder_model_works_under_mlops_serve(tmp_path: Path):
    """The same score.py, deployed on the local target and under `mlops serve --model`, sees the
    same files at the same paths."""
    root = tmp_path / "repo"
    root.mkdir()
    make_folder_model(root)
    (root / "ml.yaml").write_text(MANIFEST)
    repo = git.Repo.init(root)
    repo.git.add(A=True)
    repo.index.commit("initial")

    def mlops(*args: str) -> str:
        proc = subprocess.run([sys.executable, "-m", "planner.cli", *args], cwd=root, capture_output=True,
                              text=True, timeout=600, stdin=subprocess.DEVNULL)
        assert proc.returncode == 0, f"mlops {' '.join(args)}: {proc.stdout}\n{proc.stderr}"
        return proc.stdout

    try:
        mlops("apply", "--auto-approve")
        deployed = json.loads(mlops("call", "tok-api", "--data", "{}"))
        # And the instance labels its metrics (probe port only) with its version: the fingerprint of the
        # spec it is recorded with, as Live.versions and a rollout's state name it.
        fingerprint = spec_fingerprint(json.loads((project_data(root) / "local" / "tok-api.json").read_text())["spec"])
        with urllib.request.urlopen(f"http://127.0.0.1:{probe_port_under(root)}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        found = re.search(r'^mlops_requests_total\{version="([0-9a-f]+)",code="2xx"\} (\d+)$', text, re.MULTILINE)
        assert found and found[1] == fingerprint and int(found[2]) >= 1, text
    finally:
        subprocess.run([sys.executable, "-m", "planner.cli", "destroy", "--auto-approve"], cwd=root,
                       capture_output=True, timeout=300, stdin=subprocess.DEVNULL)
    with serving("--entry-script", "src/score.py", "--model", "tok=tokenizer", cwd=root) as port:
        served = score(port, b"{}")
    assert deployed == served == {"vocab": ["hello", "world"], "layout": EXPECTED_LAYOUT}
