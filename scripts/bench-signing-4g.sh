#!/usr/bin/env bash
# The 4 GiB signing comparison of BENCHMARKS.md: `sovra model sign` vs `sha256sum` vs `model_signing sign key` over
# the same synthetic model (7 files of random data, one of 1.5 GiB), three interleaved runs, load printed per run.
#   scripts/bench-signing-4g.sh [WORKDIR]     (needs ~4.1 GiB free; model_signing from PyPI model-signing==1.1.1)
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
S="${SOVRA:-$repo/target/release/sovra}"
[ -x "$S" ] || cargo build --release --quiet --manifest-path "$repo/Cargo.toml" --bin sovra
work="${1:-$(mktemp -d -t sovra-4g-XXXXXX)}"
mkdir -p "$work/model/shards" && cd "$work"
cp "$repo/oms/tests/data/key.pem" "$repo/oms/tests/data/key.pub.pem" .
if [ ! -f model/config.json ]; then
  head -c $((1536*1024*1024)) /dev/urandom > model/shards/model-00001-of-00006.safetensors
  for i in 2 3 4 5 6; do head -c $((512*1024*1024)) /dev/urandom > "model/shards/model-0000$i-of-00006.safetensors"; done
  echo '{"layers": 80, "hidden": 8192}' > model/config.json
fi
echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2), SHA-NI: $(grep -qw sha_ni /proc/cpuinfo && echo yes || echo no)"
T='%e s wall, %U s user, %S s sys, %P CPU'
cat model/config.json model/shards/* > /dev/null     # warm the page cache
for r in 1 2 3; do
  echo "== run $r, load $(cut -d' ' -f1-3 /proc/loadavg)"
  echo -n "sovra model sign:            "; /usr/bin/time -f "$T" "$S" model sign model --private-key key.pem --signature rs.sig > /dev/null
  echo -n "sovra model sign --threads 1: "; /usr/bin/time -f "$T" "$S" model sign model --private-key key.pem --signature rs1.sig --threads 1 > /dev/null
  echo -n "sha256sum:                   "; /usr/bin/time -f "$T" sha256sum model/config.json model/shards/* > sums.txt
  echo -n "sha256sum x2 (xargs -P2):    "; /usr/bin/time -f "$T" sh -c 'ls -S model/config.json model/shards/* | xargs -P2 -n1 sha256sum > sums2.txt'
  if command -v model_signing > /dev/null; then
    echo -n "model_signing sign key:      "; /usr/bin/time -f "$T" model_signing sign key model --private_key key.pem --signature py.sig > /dev/null
  fi
done
echo "== cross-check"
"$S" model verify model --signature rs.sig --public-key key.pub.pem
if command -v model_signing > /dev/null; then
  "$S" model verify model --signature py.sig --public-key key.pub.pem
  model_signing verify key model --signature rs.sig --public_key key.pub.pem
fi
echo "model in $work (4 GiB): remove it when done"
