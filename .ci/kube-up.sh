#!/usr/bin/env bash
# Start a real Kubernetes control plane on 127.0.0.1 for the kubernetes/aks/fpga tests and for
# developers: etcd, kube-apiserver (client certificates, a service-account key, RBAC), the
# controller-manager, the scheduler, and one node (.ci/kube/node_agent.py) whose pods run in the
# Docker engine of .ci/docker-up.sh, each in a network namespace of its own.
#
#     eval "$(bash .ci/docker-up.sh)"; eval "$(bash .ci/kube-up.sh)"   # export lines on stdout
#     kubectl get nodes   # or mlops apply/plan/call with KUBECONFIG set
#     bash .ci/kube-down.sh                                            # stops what this started
#
# The binaries are built once per machine from the Go module in .ci/kube (the go command and its
# module proxy; no release downloads) into the state folder (default /var/tmp/mlops-kube), which
# is kept between runs. A second `up` while the cluster runs reuses it. When the cluster cannot be
# started it still exits 0 and prints only MLOPS_KUBE_UNAVAILABLE=<reason>, so the tests that
# need it skip with that reason instead of the whole run failing.
#
# Addresses: pods get 198.18.N.x (RFC 2544 benchmarking range) on veth pairs this script's node
# agent makes, Services 198.19.0.0/16 (allocated, never routed: no kube-proxy); an `unreachable`
# route for 198.18.0.0/15 keeps any stale address from leaving the machine.
set -uo pipefail
exec 3>&1 1>&2          # stdout is for the export lines only

HERE="$(cd "$(dirname "$0")" && pwd)"
STATE="${MLOPS_KUBE_STATE:-/var/tmp/mlops-kube}"
RUN="$STATE/run"
BIN="$STATE/bin"
ADDR_RANGE=198.18.0.0/15
SERVICE_RANGE=198.19.0.0/16
NODE="${MLOPS_KUBE_NODE:-node-1}"

unavailable() {
  echo "kube-up: $1" >&2
  printf "export MLOPS_KUBE_UNAVAILABLE=%q\n" "$1" >&3
  exit 0
}

alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }
pid_of() { cat "$RUN/$1.pid" 2>/dev/null; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

readyz() {  # readyz: the API server answers /readyz with "ok" using the admin certificate
  [ -f "$RUN/apiserver.port" ] || return 1
  curl -fsS --max-time 3 --cacert "$RUN/pki/ca.crt" --cert "$RUN/pki/admin.crt" --key "$RUN/pki/admin.key" \
    "https://127.0.0.1:$(cat "$RUN/apiserver.port")/readyz" 2>/dev/null | grep -qx ok
}

print_exports() {
  printf "export KUBECONFIG=%q\nexport MLOPS_KUBE_STATE=%q\n" "$RUN/admin.kubeconfig" "$STATE" >&3
}

all_running() {
  local c
  for c in etcd kube-apiserver kube-controller-manager kube-scheduler node-agent; do
    alive "$(pid_of "$c")" || return 1
  done
  readyz
}

if all_running; then
  echo "kube-up: reusing the cluster already running from $STATE" >&2
  print_exports
  exit 0
fi
[ "$(id -u)" = 0 ] || unavailable "the node agent needs root (network namespaces for pods)"
[ -n "${DOCKER_HOST:-}" ] || unavailable "no Docker engine: DOCKER_HOST is not set (run .ci/docker-up.sh first)"
command -v curl >/dev/null || unavailable "curl is not installed"
command -v openssl >/dev/null || unavailable "openssl is not installed"
python3 -c 'import kubernetes, docker' 2>/dev/null || unavailable "the kubernetes and docker Python packages are not installed"
# Something half-started (a crash, a killed run): stop it before starting afresh.
bash "$HERE/kube-down.sh" >&2
bash "$HERE/kube/build.sh" || unavailable "could not build the control plane with the go command (see the lines above)"

mkdir -p "$RUN/pki" "$RUN/log"
rm -rf "$RUN/etcd"

# -- certificates: one CA; the API server's serving certificate; client certificates --------------
pki() {
  local p="$RUN/pki"
  openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=mlops-kube-ca" \
    -keyout "$p/ca.key" -out "$p/ca.crt" 2>/dev/null || return 1
  client() {  # client NAME CN [O]
    openssl req -newkey rsa:2048 -nodes -subj "/CN=$2${3:+/O=$3}" -keyout "$p/$1.key" -out "$p/$1.csr" 2>/dev/null &&
    openssl x509 -req -in "$p/$1.csr" -CA "$p/ca.crt" -CAkey "$p/ca.key" -CAcreateserial -days 30 \
      -extfile <(printf "extendedKeyUsage=%s\n" "${4:-clientAuth}") -out "$p/$1.crt" 2>/dev/null
  }
  openssl req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver" -keyout "$p/apiserver.key" \
    -out "$p/apiserver.csr" 2>/dev/null &&
  openssl x509 -req -in "$p/apiserver.csr" -CA "$p/ca.crt" -CAkey "$p/ca.key" -CAcreateserial -days 30 \
    -extfile <(printf "subjectAltName=IP:127.0.0.1,IP:198.19.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc\nextendedKeyUsage=serverAuth\n") \
    -out "$p/apiserver.crt" 2>/dev/null || return 1
  client admin kubernetes-admin system:masters &&
  client controller-manager system:kube-controller-manager &&
  client scheduler system:kube-scheduler &&
  client kubelet-client kube-apiserver-kubelet-client system:masters &&
  client node-agent "system:node:$NODE" system:nodes "serverAuth,clientAuth" || return 1
  openssl genrsa -out "$p/sa.key" 2048 2>/dev/null && openssl rsa -in "$p/sa.key" -pubout -out "$p/sa.pub" 2>/dev/null
}
[ -f "$RUN/pki/sa.pub" ] || pki || unavailable "openssl could not make the cluster's certificates"

kubeconfig() {  # kubeconfig NAME PORT
  cat >"$RUN/$1.kubeconfig" <<KC
apiVersion: v1
kind: Config
clusters:
- name: mlops-kube
  cluster: {server: "https://127.0.0.1:$2", certificate-authority: "$RUN/pki/ca.crt"}
users:
- name: $1
  user: {client-certificate: "$RUN/pki/$1.crt", client-key: "$RUN/pki/$1.key"}
contexts:
- name: mlops-kube
  context: {cluster: mlops-kube, user: $1}
current-context: mlops-kube
KC
}

start() {  # start NAME COMMAND...: in its own session, not holding the caller's stdout (fd 3)
  local name=$1; shift
  setsid "$@" >"$RUN/log/$name.log" 2>&1 </dev/null 3>&- &
  echo $! >"$RUN/$name.pid"
}

failed() {  # failed NAME: the last lines of its log, then give up
  echo "kube-up: $1 did not start; last lines of $RUN/log/$1.log:" >&2
  tail -n 15 "$RUN/log/$1.log" >&2
  bash "$HERE/kube-down.sh" >&2
  unavailable "$1 did not start (see $RUN/log/$1.log)"
}

ETCD_PORT=$(free_port); PEER_PORT=$(free_port); API_PORT=$(free_port)
echo "$API_PORT" >"$RUN/apiserver.port"
for c in admin controller-manager scheduler node-agent; do kubeconfig "$c" "$API_PORT"; done

start etcd "$BIN/etcd" --name mlops --data-dir "$RUN/etcd" \
  --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
  --listen-peer-urls "http://127.0.0.1:$PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$PEER_PORT" \
  --initial-cluster "mlops=http://127.0.0.1:$PEER_PORT" --unsafe-no-fsync --quota-backend-bytes 2147483648
for _ in $(seq 1 100); do
  curl -fsS --max-time 1 "http://127.0.0.1:$ETCD_PORT/health" 2>/dev/null | grep -q '"health":"true"' && break
  alive "$(pid_of etcd)" || failed etcd
  sleep 0.2
done

# The service proxy is how tests reach pods; --endpoint-reconciler-type=none: the apiserver's own
# address (127.0.0.1) is not a valid endpoint, and nothing here talks to the `kubernetes` Service.
start kube-apiserver "$BIN/kube-apiserver" --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
  --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$API_PORT" \
  --tls-cert-file "$RUN/pki/apiserver.crt" --tls-private-key-file "$RUN/pki/apiserver.key" \
  --client-ca-file "$RUN/pki/ca.crt" --authorization-mode Node,RBAC \
  --service-account-issuer https://kubernetes.default.svc --service-account-key-file "$RUN/pki/sa.pub" \
  --service-account-signing-key-file "$RUN/pki/sa.key" --service-cluster-ip-range "$SERVICE_RANGE" \
  --kubelet-client-certificate "$RUN/pki/kubelet-client.crt" --kubelet-client-key "$RUN/pki/kubelet-client.key" \
  --kubelet-preferred-address-types InternalIP --endpoint-reconciler-type none --profiling=false
for _ in $(seq 1 300); do
  readyz && break
  alive "$(pid_of kube-apiserver)" || failed kube-apiserver
  sleep 0.3
done
readyz || failed kube-apiserver
echo "kube-up: API server ready on https://127.0.0.1:$API_PORT" >&2

start kube-controller-manager "$BIN/kube-controller-manager" --kubeconfig "$RUN/controller-manager.kubeconfig" \
  --authentication-kubeconfig "$RUN/controller-manager.kubeconfig" \
  --authorization-kubeconfig "$RUN/controller-manager.kubeconfig" \
  --bind-address 127.0.0.1 --secure-port "$(free_port)" --leader-elect=false --use-service-account-credentials \
  --service-account-private-key-file "$RUN/pki/sa.key" --root-ca-file "$RUN/pki/ca.crt" \
  --cluster-signing-cert-file "$RUN/pki/ca.crt" --cluster-signing-key-file "$RUN/pki/ca.key" \
  --service-cluster-ip-range "$SERVICE_RANGE" --controllers '*'
start kube-scheduler "$BIN/kube-scheduler" --kubeconfig "$RUN/scheduler.kubeconfig" \
  --authentication-kubeconfig "$RUN/scheduler.kubeconfig" --authorization-kubeconfig "$RUN/scheduler.kubeconfig" \
  --bind-address 127.0.0.1 --secure-port "$(free_port)" --leader-elect=false

# Anything in the pod/service ranges without a veth of ours fails here instead of leaving the machine.
ip route replace unreachable "$ADDR_RANGE" 2>/dev/null || echo "kube-up: WARNING: could not add the unreachable route for $ADDR_RANGE" >&2

start node-agent python3 "$HERE/kube/node_agent.py" --kubeconfig "$RUN/admin.kubeconfig" --node "$NODE" --index 1 \
  --ca "$RUN/pki/ca.crt" --cert "$RUN/pki/node-agent.crt" --key "$RUN/pki/node-agent.key"
for _ in $(seq 1 100); do
  KUBECONFIG="$RUN/admin.kubeconfig" python3 - "$NODE" <<'PY' 2>/dev/null && break
import sys
from kubernetes import client, config
config.load_kube_config()
node = client.CoreV1Api().read_node(sys.argv[1])
assert any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or [])
PY
  for c in kube-controller-manager kube-scheduler node-agent; do alive "$(pid_of $c)" || failed $c; done
  sleep 0.3
done
all_running || failed node-agent
echo "kube-up: node $NODE ready; cluster up (state in $STATE)" >&2
print_exports
