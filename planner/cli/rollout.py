"""Rollouts on the command line: how apply reports one that failed (its own exit codes).

    5  a rollout failed its analysis and the previous version serves again (rolled back)
    6  a rollout failed and the new version still serves: paused (``on_failure: pause``) or the
       rollback itself failed; a person must decide
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..apply import Outcome

EXIT_ROLLED_BACK = 5
EXIT_ROLLOUT_STOPPED = 6


def rollout_report(rollouts: Sequence[Outcome], total: int) -> tuple[int, str]:
    """The apply's last line and exit code when a rollout failed: loud, naming each service."""
    rolled = [o for o in rollouts if o.rollout == "rolled_back"]
    stopped = [o for o in rollouts if o.rollout != "rolled_back"]
    parts = []
    if rolled:
        parts.append(f"{len(rolled)} rolled back ({', '.join(str(o.change.address) for o in rolled)})")
    if stopped:
        parts.append(f"{len(stopped)} stopped with the new version still serving "
                     f"({', '.join(str(o.change.address) for o in stopped)})")
    result = (f"Apply ROLLED BACK: {'; '.join(parts)}, of {total} changes; the failed metric is on each "
              "`Error:` line above.")
    print(result, file=sys.stderr)
    return (EXIT_ROLLOUT_STOPPED if stopped else EXIT_ROLLED_BACK), result
