#!/usr/bin/env bash
# Start a cloud double by hand, the way .ci/docker-up.sh starts the engine, and print the export
# lines with which examples/KIND/ml.yaml runs as it is:
#
#     eval "$(bash .ci/double-up.sh KIND)"      # KIND: aci | kubernetes | iotedge
#     bash .ci/double-down.sh KIND              # stops it by PID
#
# The double is tests/doubles/KIND_double.py, the same code the tests start. It needs the Docker
# engine and the local registry (its containers are the services' real images): when DOCKER_HOST or
# MLOPS_TEST_REGISTRY is not set, .ci/docker-up.sh is run first and its exports are printed too.
# Only export lines go to stdout; progress goes to stderr.
set -euo pipefail
cd "$(dirname "$0")/.."
KIND="${1:?usage: double-up.sh aci|kubernetes|iotedge}"
SCRIPT="tests/doubles/${KIND}_double.py"
[ -f "$SCRIPT" ] || { echo "double-up: no double for '$KIND' ($SCRIPT is missing)" >&2; exit 2; }

if [ -z "${DOCKER_HOST:-}" ] || [ -z "${MLOPS_TEST_REGISTRY:-}" ]; then
  exports="$(bash .ci/docker-up.sh)"
  eval "$exports"
  echo "$exports"
fi

STATE="${MLOPS_DOUBLES_STATE:-/var/tmp/mlops-doubles}/$KIND"
mkdir -p "$STATE"
if [ -f "$STATE/pid" ] && kill -0 "$(cat "$STATE/pid")" 2>/dev/null; then
  echo "double-up: $KIND double already runs (pid $(cat "$STATE/pid"))" >&2
  cat "$STATE/env"
  exit 0
fi
rm -f "$STATE/env"
nohup python3 "$SCRIPT" --serve --state-dir "$STATE" </dev/null >"$STATE/double.log" 2>&1 &
echo $! > "$STATE/pid"
for _ in $(seq 1 600); do
  [ -s "$STATE/env" ] && break
  kill -0 "$(cat "$STATE/pid")" 2>/dev/null || { echo "double-up: the $KIND double exited:" >&2; tail -20 "$STATE/double.log" >&2; exit 1; }
  sleep 0.1
done
[ -s "$STATE/env" ] || { echo "double-up: the $KIND double did not come up in 60 s (see $STATE/double.log)" >&2; exit 1; }
echo "double-up: $KIND double ready (pid $(cat "$STATE/pid"), log $STATE/double.log)" >&2
cat "$STATE/env"
