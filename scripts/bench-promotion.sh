#!/usr/bin/env bash
# Benchmark of promotion end to end (issue #14), in one run on one machine, with the release binaries:
#   - a SIZE MiB model (one pseudo-random file): push, promote training → registry (signature and every blob
#     re-verified in the source zone, decrypted, re-encrypted under the target zone's key, re-verified there,
#     committed), pull — in local mode, against `cp -r` of the same bytes;
#   - the same push, promote and pull through `sovra-promotion serve` (gRPC over TLS on loopback).
#   scripts/bench-promotion.sh [SIZE_MIB]    (default 4096; BENCH_DIR=where the scratch directory goes, default .)
# Prints a Markdown table for BENCHMARKS.md. Blobs are encrypted at rest in every run (generated zone keys).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
size="${1:-4096}"
cargo build --release --quiet --manifest-path "$repo/Cargo.toml" -p sovra -p sovra-scheduler -p sovra-promotion-server
bin="$repo/target/release"
work="$(mktemp -d "${BENCH_DIR:-.}/sovra-bench-XXXXXX")"
work="$(cd "$work" && pwd)"
trap 'kill "${pid:-0}" 2>/dev/null || true; rm -rf "$work"' EXIT
cd "$work"
cp "$repo/examples/cluster.yaml" .
# Self-declared provenance: this measures the promotion path, not receipts (scripts/auditor-flow.sh).
sed 's/require_receipts: true/require_receipts: false/' "$repo/examples/promotion.yaml" > promotion.yaml
for k in trainer alice bob carol secops service scheduler; do "$bin/sovra" model keygen "keys/$k" >/dev/null; done
mkdir -p model
python3 - "$size" model/weights.bin <<'EOF'
import sys, random
n, path = int(sys.argv[1]), sys.argv[2]
r = random.Random(14)
with open(path, "wb") as f:
    block = r.randbytes(1 << 20)
    for i in range(n):  # distinct blocks: nothing deduplicates or compresses
        f.write(block[i % 997:] + block[:i % 997])
EOF
printf 'training_job: bench\ntraining_zone: fr-par-secnum\n' > provenance.yaml
printf '{"accuracy": 0.95, "toxicity": 0.01}\n' > metrics.json
"$bin/sovra" model sign model --private-key keys/trainer.pem --signature model.sig >/dev/null
push=(model push bench model --signature model.sig --residency-class fr-health --provenance provenance.yaml
  --metrics metrics.json)
now() { date +%s.%N; }
secs() { python3 -c "print(f'{$2 - $1:.2f}')"; }
rate() { python3 -c "print(f'{$size / ($2 - $1):.0f}')"; }
row() { echo "| $1 | $(secs "$2" "$3") s | $(rate "$2" "$3") MiB/s |"; }
sync

export SOVRA_REGISTRY="$work/registry" SOVRA_PROMOTION_CONFIG="$work/promotion.yaml"
t0=$(now); "$bin/sovra" "${push[@]}" >/dev/null 2>&1; sync; t1=$(now)
"$bin/sovra" model promote bench --to registry >/dev/null 2>&1; sync; t2=$(now)
"$bin/sovra" model pull bench pulled-local --stage registry >/dev/null 2>&1; sync; t3=$(now)
cp -r model model-cp; sync; t4=$(now)
echo "| step ($size MiB, encrypted at rest) | time | rate |"
echo "|---|---|---|"
row "local: push (verify + hash + encrypt + write)" "$t0" "$t1"
row "local: promote training → registry" "$t1" "$t2"
row "local: pull (decrypt + verify + write)" "$t2" "$t3"
row "\`cp -r\` of the model directory + sync" "$t3" "$t4"
echo "| ratio promote / cp -r | $(python3 -c "print(f'{($t2 - $t1) / ($t4 - $t3):.2f}')") | |"

# The service: certificates, one token client with every role, a listening line on stdout.
"$bin/sovra-scheduler" certs --dir tls --host localhost >/dev/null
token="$("$bin/sovra-promotion" token | sed -n 's/^token: //p')"
{ cat promotion.yaml
  echo "service:"
  echo "  tls: {cert: tls/server.pem, key: tls/server-key.pem}"
  echo "  staging: $work/staging"
  echo "  clients:"
  echo "    - {name: bench, token_sha256: $(printf '%s' "$token" | sha256sum | cut -d' ' -f1), roles: [pusher, promoter, viewer]}"
} > service.yaml
mkdir -p staging
"$bin/sovra-promotion" serve --listen 127.0.0.1:0 --registry "$work/service-registry" --promotion-config service.yaml \
  > service.out 2> service.log &
pid=$!
for _ in $(seq 100); do grep -q 'https://' service.out 2>/dev/null && break; sleep 0.1; done
url="$(sed -n 's#.*\(https://[^ ]*\).*#\1#p' service.out | head -n 1 | sed 's/127.0.0.1/localhost/')"
export SOVRA_PROMOTION_SERVER="$url" SOVRA_PROMOTION_CA="$work/tls/ca.pem" SOVRA_PROMOTION_TOKEN="$token"
export SOVRA_REGISTRY="$work/unused"
t0=$(now); "$bin/sovra" "${push[@]}" >/dev/null 2>&1; sync; t1=$(now)
"$bin/sovra" model promote bench --to registry >/dev/null 2>&1; sync; t2=$(now)
"$bin/sovra" model pull bench pulled-service --stage registry >/dev/null 2>&1; sync; t3=$(now)
row "service: push (stream over TLS, stage, verify, store)" "$t0" "$t1"
row "service: promote training → registry" "$t1" "$t2"
row "service: pull (read, stream over TLS, verify, write)" "$t2" "$t3"
cmp model/weights.bin pulled-service/weights.bin && cmp model/weights.bin pulled-local/weights.bin
