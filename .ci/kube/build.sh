#!/usr/bin/env bash
# Build etcd, kube-apiserver, kube-controller-manager and kube-scheduler from this module (the
# release pinned in version.env) into $MLOPS_KUBE_STATE/bin, once per machine: a later call with
# the binaries present and built from the same go.sum returns at once. GOCACHE and GOMODCACHE are
# the go command's defaults, so developers' and CI's later builds reuse them.
#
#     bash .ci/kube/build.sh            # diagnostics on stderr; exit 1 when the build fails
set -euo pipefail
cd "$(dirname "$0")"
STATE="${MLOPS_KUBE_STATE:-/var/tmp/mlops-kube}"
BIN="$STATE/bin"
STAMP="$BIN/.built-from"
want=$( (cat version.env go.sum; go env GOVERSION) | sha256sum | cut -d' ' -f1)
if [ "$(cat "$STAMP" 2>/dev/null)" = "$want" ]; then
  echo "kube-build: binaries in $BIN are current" >&2
  exit 0
fi
command -v go >/dev/null || { echo "kube-build: the go command is not installed" >&2; exit 1; }
mkdir -p "$BIN"
started=$SECONDS
echo "kube-build: building the control plane of $(sed -n 's/^K8S_VERSION=//p' version.env) into $BIN (first time: 10-30 min)" >&2
# CGO off: static binaries, no C toolchain needed. -trimpath: the same binary from any checkout.
# etcd: package main is the module root, and go names the binary after it without the /v3: "server".
CGO_ENABLED=0 nice -n 10 go build -trimpath -o "$BIN/" \
  k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kube-scheduler go.etcd.io/etcd/server/v3 >&2
mv -f "$BIN/server" "$BIN/etcd"
echo "$want" >"$STAMP"
echo "kube-build: built in $((SECONDS - started)) s" >&2
