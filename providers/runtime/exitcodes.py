"""Process exit codes, shared by the CLI, the supervisor and the workers.

They are part of the contract with whoever runs the runtime (the local provider, a container
orchestrator): 3 matches Azure's server, which exits with 3 when the entry script or its
``init()`` fails.
"""

OK = 0
"""Clean shutdown (SIGTERM/SIGINT, in-flight requests finished)."""

ERROR = 1
"""Unexpected failure of the runtime itself, or workers crashing in a loop."""

USAGE = 2
"""Bad flags, bad environment variables, missing entry script, address not available."""

SCRIPT_FAILED = 3
"""The entry script could not be loaded, or its ``init()`` raised."""

REPLACE_WORKER = 75
"""A worker asks to be replaced (a timed-out ``run()`` never returned); never seen outside."""
