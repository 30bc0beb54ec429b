#!/usr/bin/env bash
# Measures RSS and CPU of the node daemon reporting at 1 Hz with 8 fake GPUs for 65 s.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
bin=$root/target/release/sovra-node-daemon
fix=$root/node-daemon/tests/fixtures/fake-8gpu.yaml
$bin watch --backend fake --fixture $fix --interval-ms 1000 --duration-s 65 > /tmp/sovra-fp.out 2>/tmp/sovra-fp.err &
pid=$!
sleep 2
t0=$(awk '{print $14+$15}' /proc/$pid/stat); s0=$(date +%s.%N)
max=0
for i in $(seq 1 60); do
  r=$(awk '/VmRSS/{print $2}' /proc/$pid/status); [ "$r" -gt "$max" ] && max=$r
  sleep 1
done
t1=$(awk '{print $14+$15}' /proc/$pid/stat); s1=$(date +%s.%N)
hz=$(getconf CLK_TCK)
echo "peak RSS ${max} KiB over 60 s; CPU $(echo "($t1-$t0)/$hz" | bc -l) s of $(echo "$s1-$s0" | bc -l) s wall"
wait $pid
echo "heartbeats: $(grep -c heartbeat /tmp/sovra-fp.out), health changes: $(grep -c '"health"' /tmp/sovra-fp.out)"
