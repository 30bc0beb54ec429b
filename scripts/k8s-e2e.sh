#!/usr/bin/env bash
# End-to-end test of the Sovra scheduler extender against a real kube-scheduler on a kind cluster
# (checklist points 11 and 13 of the extender protocol; see docs/kubernetes.md, "End to end on a real cluster").
#
# Needs: kind, kubectl, docker, openssl, cargo, curl. Creates the kind cluster "sovra-e2e" (two workers that pretend
# to have 4 GPUs each: one in a French SecNumCloud pool, one in a US-owned German pool), deploys deploy/ with test
# certificates, and checks:
#   1. an eu-restricted pod asking for 1 GPU is bound, by Sovra, to the French node;
#   2. a fr-health pod asking for 8 GPUs stays Pending, and its FailedScheduling event carries Sovra's reasons;
#   3. a CPU-only pod is scheduled without reaching Sovra (managedResources): the filter counter does not move.
# KEEP=1 keeps the cluster afterwards. BASE_IMAGE picks the runtime image (its glibc must be at least the build
# machine's; default debian:trixie-slim).
set -euo pipefail

CLUSTER=sovra-e2e
NS=sovra-system
IMAGE=sovra-extender:e2e
BASE_IMAGE=${BASE_IMAGE:-debian:trixie-slim}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d)
PF_PID=""

for tool in kind kubectl docker openssl cargo curl; do
  command -v "$tool" >/dev/null || { echo "k8s-e2e: $tool is not installed; this test needs kind, kubectl, docker, openssl, cargo and curl" >&2; exit 2; }
done

cleanup() {
  [ -n "$PF_PID" ] && kill "$PF_PID" 2>/dev/null || true
  if [ "${KEEP:-0}" != 1 ]; then kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

fail() { echo "FAIL: $*" >&2; kubectl -n "$NS" logs deploy/sovra-extender --tail=50 >&2 || true; exit 1; }
step() { echo "== $*"; }

step "kind cluster $CLUSTER"
cat > "$WORK/kind.yaml" <<YAML
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
nodes:
  - role: control-plane
  - role: worker
  - role: worker
YAML
kind get clusters | grep -qx "$CLUSTER" || kind create cluster --name "$CLUSTER" --config "$WORK/kind.yaml" --wait 120s
kubectl config use-context "kind-$CLUSTER" >/dev/null
FR=$CLUSTER-worker
DE=$CLUSTER-worker2

step "pretend GPUs and pools on the workers"
for node in "$FR" "$DE"; do
  kubectl patch node "$node" --subresource=status --type=json \
    -p '[{"op":"add","path":"/status/capacity/nvidia.com~1gpu","value":"4"},{"op":"add","path":"/status/allocatable/nvidia.com~1gpu","value":"4"}]' >/dev/null
  kubectl label node "$node" --overwrite nvidia.com/gpu.product=NVIDIA-H100-80GB-HBM3 nvidia.com/gpu.memory=81559 >/dev/null
done
kubectl label node "$FR" --overwrite node-restriction.kubernetes.io/sovra-pool=fr-par-train >/dev/null
kubectl label node "$DE" --overwrite node-restriction.kubernetes.io/sovra-pool=de-hyper-train >/dev/null

step "build the extender image"
(cd "$ROOT" && cargo build --release -p sovra-extender)
mkdir -p "$WORK/image"
cp "$ROOT/target/release/sovra-extender" "$WORK/image/"
cat > "$WORK/image/Dockerfile" <<DOCKER
FROM $BASE_IMAGE
COPY sovra-extender /usr/local/bin/sovra-extender
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/sovra-extender"]
DOCKER
docker build -q -t "$IMAGE" "$WORK/image" >/dev/null
kind load docker-image "$IMAGE" --name "$CLUSTER"

step "test certificates"
cd "$WORK"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=sovra-e2e-ca -keyout ca.key -out ca.crt 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=sovra-extender -keyout server.key -out server.csr 2>/dev/null
printf "subjectAltName=DNS:sovra-extender.sovra-system.svc,DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n" > server.ext
openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -extfile server.ext -out server.crt 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=kube-scheduler -keyout client.key -out client.csr 2>/dev/null
printf "extendedKeyUsage=clientAuth\n" > client.ext
openssl x509 -req -in client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -extfile client.ext -out client.crt 2>/dev/null
cd "$ROOT"

step "deploy"
kubectl apply -f deploy/rbac.yaml >/dev/null
kubectl -n "$NS" delete secret sovra-extender-tls sovra-scheduler-tls --ignore-not-found >/dev/null
kubectl -n "$NS" create secret generic sovra-extender-tls --from-file=tls.crt="$WORK/server.crt" \
  --from-file=tls.key="$WORK/server.key" --from-file=ca.crt="$WORK/ca.crt" >/dev/null
kubectl -n "$NS" create secret generic sovra-scheduler-tls --from-file=tls.crt="$WORK/client.crt" \
  --from-file=tls.key="$WORK/client.key" --from-file=ca.crt="$WORK/ca.crt" >/dev/null
K8S_VERSION=$(kubectl version -o json | sed -n 's/.*"gitVersion": *"\(v[0-9.]*\).*/\1/p' | tail -1)
sed -e "s#image: ghcr.io/sovra/sovra-extender:0.1.0#image: $IMAGE\n          imagePullPolicy: Never#" \
  deploy/extender.yaml > "$WORK/extender.yaml"
sed -e "s#registry.k8s.io/kube-scheduler:v[0-9.]*#registry.k8s.io/kube-scheduler:$K8S_VERSION#" deploy/scheduler.yaml > "$WORK/scheduler.yaml"
kubectl apply -f "$WORK/extender.yaml" -f deploy/scheduler-config.yaml -f "$WORK/scheduler.yaml" >/dev/null
kubectl -n "$NS" rollout status deploy/sovra-extender --timeout=180s
kubectl -n "$NS" rollout status deploy/sovra-scheduler --timeout=180s

filter_calls() {
  curl -s --cacert "$WORK/ca.crt" --cert "$WORK/client.crt" --key "$WORK/client.key" https://127.0.0.1:18443/metrics \
    | sed -n 's/^sovra_extender_requests_total{verb="filter"} \([0-9]*\)$/\1/p'
}
kubectl -n "$NS" port-forward svc/sovra-extender 18443:8443 >/dev/null 2>&1 &
PF_PID=$!
sleep 3

pod() { # name class gpus
  local res=""
  [ "$3" != 0 ] && res="limits: {nvidia.com/gpu: $3}"
  kubectl apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Pod
metadata:
  name: $1
  namespace: default
  labels: {sovra.io/residency: $2, sovra.io/kind: training}
spec:
  schedulerName: sovra-scheduler
  terminationGracePeriodSeconds: 0
  containers:
    - name: main
      image: registry.k8s.io/pause:3.10
      resources: {requests: {cpu: 10m}, $res}
YAML
}
node_of() { kubectl get pod "$1" -o jsonpath='{.spec.nodeName}'; }
wait_bound() {
  for _ in $(seq 60); do n=$(node_of "$1"); [ -n "$n" ] && { echo "$n"; return; }; sleep 2; done
  echo ""
}

step "1. eu-restricted, 1 GPU: bound to the French node"
pod e2e-eu-restricted eu-restricted 1
got=$(wait_bound e2e-eu-restricted)
[ "$got" = "$FR" ] || fail "e2e-eu-restricted is on '$got', expected $FR"
echo "   spec.nodeName = $got"

step "2. fr-health, 8 GPUs: Pending, with Sovra's reasons in FailedScheduling"
pod e2e-fr-health fr-health 8
msg=""
for _ in $(seq 60); do
  msg=$(kubectl get events --field-selector involvedObject.name=e2e-fr-health,reason=FailedScheduling -o jsonpath='{.items[*].message}')
  [ -n "$msg" ] && break
  sleep 2
done
echo "   $msg"
[ -z "$(node_of e2e-fr-health)" ] || fail "e2e-fr-health was bound"
case "$msg" in *"fails residency class fr-health"*) ;; *) fail "FailedScheduling lacks the residency reason: $msg" ;; esac

step "3. CPU-only pod: scheduled without reaching Sovra"
before=$(filter_calls)
pod e2e-cpu-only eu-any 0
got=$(wait_bound e2e-cpu-only)
[ -n "$got" ] || fail "e2e-cpu-only was not scheduled"
after=$(filter_calls)
[ -n "$before" ] && [ "$before" = "$after" ] || fail "filter calls moved from '$before' to '$after' for a CPU-only pod"
echo "   on $got; filter calls stayed at $after"

echo "PASS: sovra-extender end to end on kind ($K8S_VERSION)"
