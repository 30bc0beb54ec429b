#!/usr/bin/env bash
# Measures RSS and CPU of the node daemon *reporting to a scheduler* (gRPC over mutual TLS, heartbeat every 1 s)
# with 8 fake GPUs, over 60 s. Needs the release binaries:
#   cargo build --release -p sovra-node-daemon -p sovra-scheduler
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
bin=$root/target/release
work=$(mktemp -d)
trap 'kill $sched $daemon 2>/dev/null || true; rm -rf "$work"' EXIT
cat > "$work/cluster.yaml" <<YAML
zones: [{id: fr, country: FR, region: Paris, jurisdiction: EU, operator: o, operator_hq: FR}]
pools: [{id: p, zone: fr, purpose: training}]
residency_classes: [{name: fr, countries: [FR]}]
nodes: [{name: gpu-1, pool: p, cpu_milli: 64000, memory_mib: 262144, gpus: {model: H100-80GB-HBM3, count: 8, memory_mib: 81559}}]
YAML
"$bin/sovra-scheduler" certs --dir "$work/tls" --node gpu-1 > /dev/null
"$bin/sovra-scheduler" serve --config "$work/cluster.yaml" --listen 127.0.0.1:17171 --tls-dir "$work/tls" \
  --heartbeat-ms 1000 --require-daemons --token t > "$work/sched.out" 2> "$work/sched.err" &
sched=$!
sleep 1
# The fixture's XID 79 on GPU 5 at 0.2 s exercises the health path once.
"$bin/sovra-node-daemon" run --backend fake --fixture "$root/node-daemon/tests/fixtures/fake-8gpu.yaml" \
  --server https://127.0.0.1:17171 --node gpu-1 --tls-dir "$work/tls" 2> "$work/daemon.err" &
daemon=$!
sleep 3
t0=$(awk '{print $14+$15}' /proc/$daemon/stat); s0=$(date +%s.%N)
max=0
for i in $(seq 1 60); do
  r=$(awk '/VmRSS/{print $2}' /proc/$daemon/status); [ "$r" -gt "$max" ] && max=$r
  sleep 1
done
t1=$(awk '{print $14+$15}' /proc/$daemon/stat); s1=$(date +%s.%N)
hz=$(getconf CLK_TCK)
cpu=$(echo "($t1-$t0)/$hz" | bc -l); wall=$(echo "$s1-$s0" | bc -l)
printf 'daemon: peak RSS %d KiB (%.1f MiB) over 60 s; CPU %.2f s of %.1f s wall = %.3f%% of one core\n' \
  "$max" "$(echo "$max/1024" | bc -l)" "$cpu" "$wall" "$(echo "100*$cpu/$wall" | bc -l)"
echo "daemon log: $(grep -c 'registered with the scheduler' "$work/daemon.err") registration(s), $(grep -c 'GPU health changed' "$work/daemon.err") health change(s)"
echo "scheduler view: $(grep -o 'node registered.*' "$work/sched.err" | head -1)"
