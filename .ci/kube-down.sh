#!/usr/bin/env bash
# Stop what .ci/kube-up.sh started, each by the PID it recorded: the node agent first (it removes
# its pods' containers and veths), then the scheduler, the controller-manager, the API server and
# etcd. The state folder (binaries, certificates) is kept for the next run; --purge removes the
# run folder (certificates, etcd data, logs) too, never the binaries.
#
#     bash .ci/kube-down.sh [--purge]      # state folder: $MLOPS_KUBE_STATE or /var/tmp/mlops-kube
set -uo pipefail
STATE="${MLOPS_KUBE_STATE:-/var/tmp/mlops-kube}"
RUN="$STATE/run"

stop_pid() {  # stop_pid NAME SECONDS: SIGTERM, wait, then SIGKILL
  local name=$1 wait=$2 file="$RUN/$1.pid" pid
  pid=$(cat "$file" 2>/dev/null) || return 0
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    echo "kube-down: stopping $name (pid $pid)" >&2
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 1 $((wait * 10))); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      echo "kube-down: $name did not stop in ${wait} s; killing it" >&2
      kill -KILL "$pid" 2>/dev/null
    fi
  fi
  rm -f "$file"
}

[ -d "$RUN" ] || exit 0
stop_pid node-agent 60
for c in kube-scheduler kube-controller-manager kube-apiserver etcd; do stop_pid "$c" 15; done
ip route del unreachable 198.18.0.0/15 2>/dev/null
[ "${1:-}" = "--purge" ] && { echo "kube-down: removing $RUN" >&2; rm -rf "$RUN"; }
exit 0
