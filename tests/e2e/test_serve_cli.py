"""`mlops serve` runs the scoring runtime on a score.py, with the flag names scripts rely on."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from support import ECHO_SCORE

from providers.local.processes import free_port


def test_mlops_serve_scores_a_script(tmp_path: Path):
    (tmp_path / "model.txt").write_text("served\n")
    (tmp_path / "score.py").write_text(ECHO_SCORE)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "planner.cli", "serve", "--entry-script", str(tmp_path / "score.py"),
         "--model-dir", str(tmp_path), "--port", str(port), "--workers", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
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
                    raise AssertionError(proc.stdout.read() if proc.stdout else "no output") from None
                time.sleep(0.1)
        req = urllib.request.Request(f"http://127.0.0.1:{port}/score", data=b'{"a": 1}',
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=5) as resp:
            assert json.loads(resp.read()) == {"model": "served", "echo": {"a": 1}}
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
