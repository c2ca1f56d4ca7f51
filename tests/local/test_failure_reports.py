"""What a failed start and a failed pip install say (pure functions over real outputs), and a port
keeper's own lifetime (a real process)."""

from __future__ import annotations

import time
from pathlib import Path

from providers.local import pipreport, startlog
from providers.local.ports import PortKeepers
from providers.local.processes import free_port, is_running, port_in_use

INIT_CRASH = """\
portkeeper: holding 127.0.0.1:34015; handing it out at /tmp/mlops-ports-0/c04d.sock
--- mlops: starting instance 11111111 of echo-api on port 34015 (mlops-runtime@db16, 2026-12-03T14:05:01Z)
2026-12-03 14:05:02,100 ERROR [26000] mlops.runtime: init() failed: OSError: an older attempt
--- mlops: starting instance 26afaea7 of echo-api on port 34015 (mlops-runtime@db16, 2026-12-03T14:05:51Z)
2026-12-03 14:05:52,195 INFO [26986] mlops.runtime: listening (entry script /p/.mlops/sources/3a7c/app/score.py)
2026-12-03 14:05:52,517 ERROR [27002] mlops.runtime: Traceback (most recent call last):
  File "/venvs/d675/lib/python3.11/site-packages/mlops_runtime/scorer.py", line 122, in init
    await loop.run_in_executor(self._pool, self._script.init)
  File "/p/.mlops/sources/3a7c/app/score.py", line 5, in init
    return x["missing"]
           ~^^^^^^^^^^^
KeyError: 'missing'
2026-12-03 14:05:52,517 ERROR [27002] mlops.runtime: init() failed: KeyError: 'missing'
"""

BUILD_SUBPROCESS = """\
Collecting mlops-broken-probe==0.2
  Downloading http://user:s3cret@127.0.0.1:9/simple/mlops-broken-probe/mlops_broken_probe-0.2.tar.gz (1 kB)
  error: subprocess-exited-with-error

  × Getting requirements to build wheel did not run successfully.
  │ exit code: 1
  ╰─> [4 lines of output]
      Traceback (most recent call last):
        File "<string>", line 1, in <module>
      ModuleNotFoundError: No module named 'numpy'
      [end of output]

  note: This error originates from a subprocess, and is likely not a problem with pip.
error: subprocess-exited-with-error

× Getting requirements to build wheel did not run successfully.
│ exit code: 1
╰─> See above for output.
"""


def test_a_start_failure_is_the_exception_in_the_users_file():
    start, attempt = startlog.last_attempt(INIT_CRASH.splitlines())
    assert startlog.attempt_label(start) == "instance 26afaea7 on port 34015, started 2026-12-03T14:05:51Z"
    assert not any("older attempt" in ln for ln in attempt)
    assert startlog.cause(attempt, "/p/.mlops/sources/3a7c/app", "app") == \
        "KeyError: 'missing' (app/score.py, line 5, in init)"


def test_a_start_failure_without_a_traceback_is_the_last_thing_said():
    lines = ["2026-12-03 14:05:52,517 ERROR [1] mlops.runtime: cannot load /img/app/score.py: no such file",
             "   ^^^^"]
    assert startlog.cause(lines, "/img/app", "src") == "cannot load src/score.py: no such file"
    assert startlog.cause([], "/img/app", "src") == "no output"


def test_pip_build_subprocess_failures_are_explained_with_credentials_masked():
    found = pipreport.reasons(BUILD_SUBPROCESS)
    assert found == ["Getting requirements to build wheel did not run successfully (for mlops-broken-probe==0.2): "
                     "ModuleNotFoundError: No module named 'numpy'"]
    plain = "ERROR: Could not find a version that satisfies the requirement x==1 (from versions: none)\n" \
            "ERROR: Invalid requirement: 'secret-token' (from line 3 of requirements.txt)\n" \
            "ERROR: No matching distribution found for x==1\n"
    assert pipreport.reasons(plain) == [
        "ERROR: Could not find a version that satisfies the requirement x==1 (from versions: none)",
        "ERROR: No matching distribution found for x==1"]
    assert pipreport.reasons("ERROR: cannot reach https://me:tok@example.invalid/simple") == \
        ["ERROR: cannot reach https://***@example.invalid/simple"]


def test_a_keeper_writes_its_record_and_stops_when_it_goes(tmp_path: Path):
    keepers = PortKeepers(tmp_path / "state", "127.0.0.1")
    keeper = keepers.ensure("api", free_port(), tmp_path / "keeper.log", target="dev")
    try:
        assert keepers.owner_of(keeper) == ("dev", "process") and port_in_use(keeper.port)
        (tmp_path / "state" / "ports" / f"api-{keeper.port}.json").unlink()
        deadline = time.monotonic() + 15
        while is_running(keeper.pid, keeper.start_id) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not is_running(keeper.pid, keeper.start_id), "a keeper whose record is gone stops by itself"
        assert not port_in_use(keeper.port)
    finally:
        keepers.stop(keeper)
