#!/usr/bin/env bash
# Builds the real Kubernetes control plane the Kubernetes tests run against — etcd, kube-apiserver and
# kube-scheduler, from the Go modules pinned in go.mod (k8s.io/kubernetes v1.37.2, its staging modules at v0.37.2
# through `replace`, etcd v3.7.0 as kube-apiserver's go.mod requires) — once, into a cache keyed by go.sum:
#   ${SOVRA_K8S_CACHE:-~/.cache/sovra-k8s}/<sha256 of go.mod+go.sum, 16 hex>/bin/{etcd,kube-apiserver,kube-scheduler}
# Prints that bin directory on stdout. Cold: ~700 MiB of modules and a long build on 2 cores (BENCHMARKS.md); warm:
# instant. GOMODCACHE and GOCACHE are Go's defaults (under ~/go and ~/.cache), so CI caches can keep them.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"
command -v go >/dev/null || { echo "tests/k8s/build.sh: Go is not installed (go 1.26 or newer is needed)" >&2; exit 1; }
key="$(cat go.mod go.sum | sha256sum | cut -c1-16)"
root="${SOVRA_K8S_CACHE:-$HOME/.cache/sovra-k8s}"
bin="$root/$key/bin"
mkdir -p "$root"
# One builder at a time (test binaries may ask concurrently).
exec 9>"$root/.lock"
flock 9
if [[ -x "$bin/etcd" && -x "$bin/kube-apiserver" && -x "$bin/kube-scheduler" ]]; then
  echo "$bin"
  exit 0
fi
echo "tests/k8s/build.sh: building etcd, kube-apiserver and kube-scheduler into $bin (first run only)" >&2
tmp="$root/$key/tmp.$$"
mkdir -p "$tmp"
go build -trimpath -buildvcs=false -ldflags=-s -o "$tmp/" ./cmd/etcd k8s.io/kubernetes/cmd/kube-apiserver \
  k8s.io/kubernetes/cmd/kube-scheduler >&2
rm -rf "$bin"
mv "$tmp" "$bin"
echo "$bin"
