#!/usr/bin/env bash
# Stop a cloud double started by .ci/double-up.sh KIND, by the PID it recorded (SIGTERM, then SIGKILL).
# The double removes the containers it started on the way out.
set -uo pipefail
KIND="${1:?usage: double-down.sh aci|kubernetes|iotedge}"
STATE="${MLOPS_DOUBLES_STATE:-/var/tmp/mlops-doubles}/$KIND"
pid=$(cat "$STATE/pid" 2>/dev/null) || { echo "double-down: no $KIND double recorded" >&2; exit 0; }
if kill -0 "$pid" 2>/dev/null; then
  echo "double-down: stopping the $KIND double (pid $pid)" >&2
  kill -TERM "$pid"
  for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
fi
rm -f "$STATE/pid" "$STATE/env"
