#!/usr/bin/env bash
# An auditor's flow: residency proven end to end, then checked offline without sovra.
#   scripts/auditor-flow.sh [WORKDIR]     (default: a new temporary directory; SOVRA=path/to/sovra to choose the binary)
# 1. `sovra dev` starts the scheduler, a node daemon per node (FAKE GPUs, real processes) and the promotion
#    service, whose config trusts the dev scheduler's receipt key (docs/receipts.md).
# 2. A fr-health training job runs (2 replicas); its signed placement receipts become the model's provenance:
#    push --training-job, promote to the registry, two approvals, promote to inference.
# 3. An inference job naming the model (any EU zone would do for its class) is placed only where the model was
#    promoted: the scheduler asks the promotion service.
# 4. The evidence is exported (receipts, the model's promotion statements, both audit logs) and verified by the
#    independent checkers tests/evidence_verify.py and tests/audit_verify.py (Python; no sovra code).
# Exit 0 when every check passes.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
sovra="${SOVRA:-}"
if [ -z "$sovra" ]; then
  cargo build --release --quiet --manifest-path "$repo/Cargo.toml" -p sovra
  sovra="$repo/target/release/sovra"
fi
work="${1:-$(mktemp -d -t sovra-audit-XXXXXX)}"
mkdir -p "$work" && cd "$work"
echo "== working in $work"
step() { echo; echo "\$ sovra $*"; "$sovra" "$@"; }

"$sovra" dev --data "$work/dev" --listen 127.0.0.1:0 --promotion-listen 127.0.0.1:0 > dev.log 2>&1 &
dev=$!
trap 'kill -INT $dev 2>/dev/null || true; wait $dev 2>/dev/null || true' EXIT
for _ in $(seq 1 300); do grep -q "Ctrl-C stops everything" dev.log && break; sleep 0.1; done
grep -q "Ctrl-C stops everything" dev.log || { cat dev.log; echo "sovra dev did not start"; exit 1; }
eval "$(grep '^  export SOVRA_SERVER=' dev.log)"
eval "$(grep '^  export SOVRA_PROMOTION_SERVER=' dev.log)"
keys="$work/dev/promotion/keys"
scheduler_key="$work/dev/state/receipt-key.pub.pem"

# 1. A training job that runs: two replicas on the French HDS + SecNumCloud nodes.
cat > train.yaml <<'YAML'
name: radiology-train
kind: training
residency: fr-health
replicas: 2
resources: {gpus: 1, cpu_milli: 1000, memory_mib: 1024}
run:
  command: sh
  args: ["-c", "echo rank $RANK of $WORLD_SIZE on $CUDA_VISIBLE_DEVICES; sleep 1"]
YAML
id=$("$sovra" submit train.yaml -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
echo "submitted training job $id"
for _ in $(seq 1 300); do
  state=$("$sovra" job "$id" -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])')
  [ "$state" = succeeded ] && break
  [ "$state" = failed ] && { "$sovra" job "$id"; exit 1; }
  sleep 0.1
done
[ "$state" = succeeded ] || { echo "job $id is $state"; exit 1; }
step logs "$id" --replica 1
step job receipts "$id" --verify-key "$scheduler_key"

# 2. The receipts as provenance, then the promotions.
mkdir -p model/weights
printf '{"layers": 2}\n' > model/config.json
head -c 65536 /dev/urandom > model/weights/w0.bin
printf '{"accuracy": 0.94, "toxicity": 0.01}\n' > metrics.json
step model sign model --private-key "$keys/trainer.pem" --signature model.sig
step model push radiology model --signature model.sig --residency-class fr-health --metrics metrics.json --training-job "$id"
step model promote radiology --to registry
step model approve radiology --to inference --key "$keys/alice.pem"
step model approve radiology --to inference --key "$keys/bob.pem"
step model promote radiology --to inference --zone fr-par-secnum

# 3. Serving it: an eu-any inference job naming the version lands only in fr-par-secnum, where it was promoted.
digest=$("$sovra" model status radiology -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["digest"])')
cat > serve.yaml <<YAML
name: radiology-serve
kind: inference
residency: eu-any
replicas: 2
model: radiology@${digest:0:12}
resources: {gpus: 1, cpu_milli: 1000, memory_mib: 1024}
YAML
serve=$("$sovra" submit serve.yaml -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
for _ in $(seq 1 100); do
  zones=$("$sovra" job "$serve" -o json | python3 -c 'import json,sys; j=json.load(sys.stdin); print(" ".join(sorted({r["zone"] for r in j["replicas"]})))')
  [ -n "$zones" ] && break
  sleep 0.2
done
step job "$serve"
[ "$zones" = fr-par-secnum ] || { echo "the inference job landed in '$zones', not only fr-par-secnum"; exit 1; }

# 4. The evidence, exported and checked offline.
mkdir -p evidence
"$sovra" job receipts "$id" -o json --out evidence/receipts.json > /dev/null
"$sovra" model status radiology -o json > evidence/model-status.json
"$sovra" audit export --scheduler --out evidence/scheduler-audit.jsonl
cp "$keys/service.pub.pem" evidence/promotion-service.pub.pem
cp "$scheduler_key" evidence/scheduler.pub.pem
kill -INT $dev; wait $dev || true; trap - EXIT
SOVRA_PROMOTION_SERVER= "$sovra" audit export --registry "$work/dev/promotion/registry" --out evidence/registry-audit.jsonl
echo
echo "== offline checks (no sovra code): tests/evidence_verify.py, tests/audit_verify.py"
python3 "$repo/tests/evidence_verify.py" receipts evidence/receipts.json --key evidence/scheduler.pub.pem > evidence/receipts-check.json
python3 "$repo/tests/evidence_verify.py" model evidence/model-status.json --key evidence/promotion-service.pub.pem \
  --scheduler-key evidence/scheduler.pub.pem > evidence/model-check.json
python3 "$repo/tests/audit_verify.py" evidence/scheduler-audit.jsonl
python3 "$repo/tests/audit_verify.py" evidence/registry-audit.jsonl
python3 - evidence/model-check.json <<'EOF'
import json, sys
m = json.load(open(sys.argv[1]))
runs = m["training"]["runs"]
print(f"{m['model']}@{m['digest'][:12]}: {m['promotion_statements']} promotion statement(s) signed by the promotion service;")
print(f"trained by job {m['training']['job']}: " + "; ".join(f"replica {r['replica']} on {r['node']} in {r['zone']} ({r['outcome']})" for r in runs))
assert all(r["zone"] == "fr-par-secnum" for r in runs), "a replica ran outside fr-par-secnum"
assert m["promotion_statements"] == 2, "expected two promotion statements (registry, inference)"
EOF
echo "== all evidence verified; it is in $work/evidence"
