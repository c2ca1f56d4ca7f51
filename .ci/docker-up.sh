#!/usr/bin/env bash
# Start a private Docker engine, the default Python base image and a local registry for the
# `engine: docker` target and its tests. Usable in CI (root, fresh machine) and by developers:
#
#     eval "$(bash .ci/docker-up.sh)"      # prints export lines on stdout, diagnostics on stderr
#     ...
#     bash .ci/docker-down.sh              # stops what this started (by PID), unmounts leftovers
#
# Prints DOCKER_HOST, MLOPS_TEST_REGISTRY (127.0.0.1:PORT) and MLOPS_DOCKER_STATE. When no engine
# can be started it still exits 0 and prints only MLOPS_DOCKER_UNAVAILABLE=<reason>, so the tests
# that need an engine skip with that reason instead of the whole run failing.
#
# Why a private dockerd: nothing on these machines runs one, and the engine must not touch the
# host's firewall or networks: --bridge=none and --iptables=false (containers use host networking).
# Why mmdebstrap: there is no registry to pull a Python image from; Debian's packages are reachable.
# The state folder (default /var/tmp/mlops-docker) is kept between runs so the base image and the
# build cache survive; a second `up` while the engine runs reuses it.
set -uo pipefail
exec 3>&1 1>&2          # stdout is for the export lines only

STATE="${MLOPS_DOCKER_STATE:-/var/tmp/mlops-docker}"
BASE_IMAGE="${MLOPS_BASE_IMAGE:-mlops/python-base:bookworm}"
SUITE=bookworm
SOCK="unix://$STATE/docker.sock"

unavailable() {
  echo "docker-up: $1" >&2
  printf "export MLOPS_DOCKER_UNAVAILABLE=%q\n" "$1" >&3
  exit 0
}

alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }

install_packages() {
  local missing=()
  command -v dockerd >/dev/null || missing+=(docker.io)
  command -v mmdebstrap >/dev/null || missing+=(mmdebstrap)
  command -v docker-registry >/dev/null || missing+=(docker-registry)
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "docker-up: missing ${missing[*]} and cannot apt-get install as $(id -un)" >&2
    return 1
  fi
  echo "docker-up: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >&2 && apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
}

start_dockerd() {
  if alive "$(cat "$STATE/dockerd.pid" 2>/dev/null)" && docker -H "$SOCK" info >/dev/null 2>&1; then
    echo "docker-up: reusing the engine already running from $STATE" >&2
    return 0
  fi
  [ "$(id -u)" = 0 ] || { echo "docker-up: starting dockerd needs root" >&2; return 1; }
  command -v dockerd >/dev/null || return 1
  mkdir -p "$STATE"
  rm -f "$STATE/docker.sock" "$STATE/dockerd.pid"
  # A dockerd that was killed (not stopped by docker-down.sh) leaves its mounts; clear them first.
  awk -v s="$STATE/" 'index($2, s) == 1 {print $2}' /proc/mounts | sort -r | while read -r m; do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
  done
  # setsid: the engine outlives this script and is not hit by the caller's job-control signals;
  # 3>&-: it must not hold the caller's stdout (fd 3), or `eval "$(bash .ci/docker-up.sh)"` waits forever.
  setsid dockerd --storage-driver=overlay2 --iptables=false --ip-masq=false --bridge=none \
    -H "$SOCK" --data-root "$STATE/data" --exec-root "$STATE/exec" --pidfile "$STATE/dockerd.pid" \
    >"$STATE/dockerd.log" 2>&1 </dev/null 3>&- &
  for _ in $(seq 1 150); do
    docker -H "$SOCK" info >/dev/null 2>&1 && { echo "docker-up: engine ready at $SOCK" >&2; return 0; }
    sleep 0.2
  done
  echo "docker-up: dockerd did not answer within 30 s; last lines of $STATE/dockerd.log:" >&2
  tail -n 15 "$STATE/dockerd.log" >&2
  return 1
}

# The host's Debian mirror, read from its apt configuration (never written into the project).
apt_mirror() {
  local uri
  uri=$(awk '/^URIs:/ {u=$2} /^Suites:/ {for (i=2;i<=NF;i++) if ($i ~ /^[a-z]+$/) {print u; exit}}' \
        /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n1)
  [ -z "$uri" ] && uri=$(awk '$1=="deb" && $0 !~ /security/ {for (i=2;i<=NF;i++) if ($i ~ /^(https?|file):/) {print $i; exit}}' \
        /etc/apt/sources.list 2>/dev/null | head -n1)
  echo "$uri"
}

build_base_image() {
  if docker -H "$SOCK" image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    echo "docker-up: base image $BASE_IMAGE present" >&2
    return 0
  fi
  command -v mmdebstrap >/dev/null || { echo "docker-up: mmdebstrap missing; cannot build $BASE_IMAGE" >&2; return 1; }
  local mirror
  mirror=$(apt_mirror)
  [ -n "$mirror" ] || { echo "docker-up: no Debian mirror found in the host's apt configuration" >&2; return 1; }
  echo "docker-up: building $BASE_IMAGE from Debian $SUITE packages (about 30 s)" >&2
  local started=$SECONDS
  mmdebstrap --quiet --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --aptopt='APT::Install-Recommends "false"' \
    "$SUITE" - "deb $mirror $SUITE main" \
    | docker -H "$SOCK" import -c 'ENV LANG=C.UTF-8' \
        -c 'LABEL org.opencontainers.image.description="Debian bookworm minbase + python3 (mlops default base)"' \
        - "$BASE_IMAGE" >&2 || { echo "docker-up: building $BASE_IMAGE failed" >&2; return 1; }
  echo "docker-up: base image built in $((SECONDS - started)) s" >&2
}

start_registry() {
  local pid port
  pid=$(cat "$STATE/registry.pid" 2>/dev/null)
  port=$(cat "$STATE/registry.port" 2>/dev/null)
  if alive "$pid" && [ -n "$port" ] && python3 - "$port" <<'EOF' 2>/dev/null
import sys, urllib.request
urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/v2/", timeout=2)
EOF
  then
    echo "docker-up: reusing the registry on 127.0.0.1:$port" >&2
    REGISTRY_PORT=$port
    return 0
  fi
  command -v docker-registry >/dev/null || { echo "docker-up: docker-registry missing" >&2; return 1; }
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  mkdir -p "$STATE/registry"
  cat >"$STATE/registry.yml" <<EOF
version: 0.1
log: {level: warn}
storage:
  filesystem: {rootdirectory: $STATE/registry}
  delete: {enabled: true}
http:
  addr: 127.0.0.1:$port
EOF
  setsid docker-registry serve "$STATE/registry.yml" >"$STATE/registry.log" 2>&1 </dev/null 3>&- &
  echo $! >"$STATE/registry.pid"
  echo "$port" >"$STATE/registry.port"
  for _ in $(seq 1 50); do
    if python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/v2/', timeout=1)" 2>/dev/null; then
      echo "docker-up: registry ready on 127.0.0.1:$port" >&2
      REGISTRY_PORT=$port
      return 0
    fi
    sleep 0.2
  done
  echo "docker-up: registry did not start; last lines of $STATE/registry.log:" >&2
  tail -n 10 "$STATE/registry.log" >&2
  return 1
}

install_packages || unavailable "Docker packages (docker.io, mmdebstrap, docker-registry) are not installed and cannot be installed here"
start_dockerd || unavailable "could not start a private dockerd (see $STATE/dockerd.log)"
printf "export DOCKER_HOST=%q\nexport MLOPS_DOCKER_STATE=%q\n" "$SOCK" "$STATE" >&3
build_base_image || echo "docker-up: WARNING: no base image $BASE_IMAGE; builds on the default base will fail" >&2
REGISTRY_PORT=
if start_registry; then
  printf "export MLOPS_TEST_REGISTRY=%q\n" "127.0.0.1:$REGISTRY_PORT" >&3
else
  echo "docker-up: WARNING: no local registry; push tests will skip" >&2
fi
