#!/usr/bin/env bash
# Stop what .ci/docker-up.sh started: the local registry and the private dockerd, each by the PID
# it recorded, then unmount what dockerd leaves behind (its netns bind mount, overlay mounts of
# containers it could not stop). The state folder is kept so the base image and the build cache
# survive for the next run; pass --purge to remove it too.
#
#     bash .ci/docker-down.sh [--purge]     # state folder: $MLOPS_DOCKER_STATE or /var/tmp/mlops-docker
set -uo pipefail
STATE="${MLOPS_DOCKER_STATE:-/var/tmp/mlops-docker}"
PURGE=0
[ "${1:-}" = "--purge" ] && PURGE=1

stop_pid() {  # stop_pid NAME PIDFILE SECONDS: SIGTERM, wait, then SIGKILL
  local name=$1 file=$2 wait=$3 pid
  pid=$(cat "$file" 2>/dev/null) || return 0
  [ -n "$pid" ] || return 0
  if kill -0 "$pid" 2>/dev/null; then
    echo "docker-down: stopping $name (pid $pid)" >&2
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 1 $((wait * 10))); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      echo "docker-down: $name did not stop in ${wait} s; killing it" >&2
      kill -KILL "$pid" 2>/dev/null
      sleep 0.5
    fi
  fi
  rm -f "$file"
}

[ -d "$STATE" ] || { echo "docker-down: nothing to stop ($STATE does not exist)" >&2; exit 0; }
stop_pid registry "$STATE/registry.pid" 10
stop_pid dockerd "$STATE/dockerd.pid" 30

# Deepest first, so a mount inside another comes off before its parent.
awk -v s="$STATE/" 'index($2, s) == 1 {print $2}' /proc/mounts | sort -r | while read -r m; do
  umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || echo "docker-down: could not unmount $m" >&2
done

if [ "$PURGE" = 1 ]; then
  echo "docker-down: removing $STATE" >&2
  rm -rf "$STATE"
fi
exit 0
