#!/usr/bin/env bash
# A tour of the model registry and gated promotion, on the example cluster, with keys generated here.
#   scripts/model-tour.sh [WORKDIR]       (default: a new temporary directory; SOVRA=path/to/sovra to choose the binary)
# Every step prints what it did; the denied steps are expected (they show the gates at work). The last part runs
# the same flow through the promotion service (`sovra-promotion serve`): separate clients with their own roles.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
sovra="${SOVRA:-}"
if [ -z "$sovra" ]; then
  cargo build --release --quiet --manifest-path "$repo/Cargo.toml" -p sovra -p sovra-scheduler -p sovra-promotion-server
  sovra="$repo/target/release/sovra"
fi
bindir="$(dirname "$sovra")"
work="${1:-$(mktemp -d -t sovra-tour-XXXXXX)}"
mkdir -p "$work" && cd "$work"
echo "== working in $work"
cp "$repo/examples/cluster.yaml" .
# This tour declares its provenance in a file; scripts/auditor-flow.sh proves it with the scheduler's receipts.
sed 's/require_receipts: true/require_receipts: false/' "$repo/examples/promotion.yaml" > promotion.yaml
export SOVRA_REGISTRY="$work/registry" SOVRA_PROMOTION_CONFIG="$work/promotion.yaml"
step() { echo; echo "\$ sovra $*"; "$sovra" "$@"; }
expect_fail() { echo; echo "\$ sovra $*   # expected to fail"; if "$sovra" "$@"; then echo "UNEXPECTED SUCCESS"; exit 1; else echo "(exit $?)"; fi; }

for k in trainer alice bob carol secops service scheduler; do step model keygen "keys/$k"; done

# A small synthetic model, its provenance and its evaluation.
mkdir -p model/weights
printf '{"layers": 2}\n' > model/config.json
head -c 4194304 /dev/urandom > model/weights/w0.bin
printf 'training_job: radiology-train-17\ntraining_zone: fr-par-secnum\n' > provenance.yaml
printf '{"accuracy": 0.94, "toxicity": 0.01}\n' > metrics.json

step model sign model --private-key keys/trainer.pem --signature model.sig
step model push radiology model --signature model.sig --residency-class fr-health \
  --provenance provenance.yaml --metrics metrics.json
expect_fail model promote radiology --to inference                  # never skipping a stage
step model promote radiology --to registry
expect_fail model promote radiology --to inference                  # 0 of 2 approvals
step model approve radiology --to inference --key keys/alice.pem
step model approve radiology --to inference --key keys/bob.pem --out bob.approval.json --no-record
expect_fail model promote radiology --to inference --zone de-fra-c5 --approval bob.approval.json  # fr-health needs FR + HDS
step model promote radiology --to inference --zone fr-par-secnum --approval bob.approval.json
step model status radiology
step model list
step model pull radiology@latest pulled/ --stage inference     # files in pulled/, the bundle beside it: pulled.sig
step model verify pulled --signature pulled.sig --public-key keys/trainer.pub.pem

# Break-glass: a retrained version misses the accuracy threshold; an admin lets it into the registry for 1 hour.
head -c 1048576 /dev/urandom > model/weights/w0.bin
printf '{"accuracy": 0.88, "toxicity": 0.01}\n' > metrics.json
step model sign model --private-key keys/trainer.pem --signature model.sig
step model push radiology model --signature model.sig --residency-class fr-health \
  --provenance provenance.yaml --metrics metrics.json
expect_fail model promote radiology --to registry                   # accuracy 0.88 < 0.9
expect_fail exception grant --model radiology --gate evaluation --ttl 1h --reason "hotfix, incident 7" --key keys/alice.pem
step exception grant --model radiology --gate evaluation --ttl 1h --reason "hotfix, incident 7" --key keys/secops.pem
step model promote radiology --to registry                          # marked UNDER EXCEPTION
step model list
step audit log
step audit verify
head="$("$sovra" audit verify -o json | sed -n 's/.*"hash": "\([0-9a-f]\{64\}\)".*/\1/p' | head -n 1)"
step audit verify --expect-head "$head"                          # what a pipeline that recorded the head runs later
step audit export --out audit.jsonl                              # the stored entries, one per line (docs/audit-log.md)
echo; echo "\$ python3 tests/audit_verify.py audit.jsonl --expect-head $head   # no sovra code involved"
python3 "$repo/tests/audit_verify.py" audit.jsonl --expect-head "$head"
expect_fail exception grant --model radiology --gate evaluation --ttl 30d --reason "too long" --key keys/secops.pem  # > exceptions.max_ttl
step registry gc                                                 # nothing left behind by killed writers

# The promotion service: one process holds the registry and the service key; CI clients call it with --server,
# each with its own identity (a client certificate or a bearer token) and roles.
echo; echo "== the promotion service"
"$bindir/sovra-scheduler" certs --dir tls --host localhost --node alice-ci --node bob-ci --node nobody >/dev/null
tok() { "$bindir/sovra-promotion" token | sed -n 's/^token: //p'; }
hash() { printf '%s' "$1" | sha256sum | cut -d' ' -f1; }
pusher="$(tok)"; promoter="$(tok)"; admin="$(tok)"
{ cat promotion.yaml
  echo "service:"
  echo "  tls: {cert: tls/server.pem, key: tls/server-key.pem, client_ca: tls/ca.pem}"
  echo "  clients:"
  echo "    - {name: alice-ci, cert: alice-ci, roles: [approver]}"
  echo "    - {name: bob-ci, cert: bob-ci, roles: [approver]}"
  echo "    - {name: nobody, cert: nobody, roles: [viewer]}"
  echo "    - {name: pusher-ci, token_sha256: $(hash "$pusher"), roles: [pusher, viewer]}"
  echo "    - {name: promoter-ci, token_sha256: $(hash "$promoter"), roles: [promoter, viewer]}"
  echo "    - {name: secops-ci, token_sha256: $(hash "$admin"), roles: [exception-admin, withdrawer, auditor, viewer]}"
} > service.yaml
"$bindir/sovra-promotion" serve --listen 127.0.0.1:0 --registry "$work/service-registry" \
  --promotion-config service.yaml > service.out 2> service.log &
service_pid=$!
trap 'kill "$service_pid" 2>/dev/null || true' EXIT
for _ in $(seq 100); do grep -q 'https://' service.out 2>/dev/null && break; sleep 0.1; done
url="$(sed -n 's#.*\(https://[^ ]*\).*#\1#p' service.out | head -n 1 | sed 's/127.0.0.1/localhost/')"
echo "listening on $url (service.log has its log)"
# The CLI never opens a local registry with --server; the private service key is only the service's.
export SOVRA_PROMOTION_SERVER="$url" SOVRA_PROMOTION_CA="$work/tls/ca.pem" SOVRA_REGISTRY="$work/no-local-registry"
# as CLIENT TOKEN ARGS… / fails CLIENT TOKEN ARGS… (expected to fail) / cert CLIENT ARGS… (client certificate)
as() { local c="$1" t="$2"; shift 2; echo; echo "\$ sovra $*   # as $c"; SOVRA_PROMOTION_TOKEN="$t" "$sovra" "$@"; }
fails() { local c="$1" t="$2"; shift 2; echo; echo "\$ sovra $*   # as $c, expected to fail"
  if SOVRA_PROMOTION_TOKEN="$t" "$sovra" "$@"; then echo "UNEXPECTED SUCCESS"; exit 1; else echo "(exit $?)"; fi; }
cert() { local c="$1"; shift; echo; echo "\$ sovra $*   # as $c (client certificate)"
  "$sovra" "$@" --client-cert "tls/nodes/$c.pem" --client-key "tls/nodes/$c-key.pem"; }
as pusher-ci "$pusher" model push radiology model --signature model.sig --residency-class fr-health \
  --provenance provenance.yaml --metrics metrics.json
fails pusher-ci "$pusher" model promote radiology --to registry               # no promoter role
fails promoter-ci "$promoter" model promote radiology --to registry           # accuracy 0.88 < 0.9
as secops-ci "$admin" exception grant --model radiology --gate evaluation --ttl 1h --reason "incident 7" \
  --key keys/secops.pem
as promoter-ci "$promoter" model promote radiology --to registry
cert alice-ci model approve radiology --to inference --key keys/alice.pem
cert bob-ci model approve radiology --to inference --key keys/bob.pem
echo; echo "\$ sovra model approve radiology --to inference --key keys/carol.pem   # as nobody (viewer), expected to fail"
if "$sovra" model approve radiology --to inference --key keys/carol.pem \
  --client-cert tls/nodes/nobody.pem --client-key tls/nodes/nobody-key.pem; then exit 1; else echo "(exit $?)"; fi
as promoter-ci "$promoter" model promote radiology --to inference --zone fr-par-secnum
as pusher-ci "$pusher" model pull radiology served/ --stage inference
as secops-ci "$admin" model withdraw radiology --zone fr-par-secnum --stage inference \
  --reason "CVE-2026-4711: tokenizer poisoned" --key keys/secops.pem
fails pusher-ci "$pusher" model pull radiology again/ --stage inference      # withdrawn
as pusher-ci "$pusher" model status radiology
as secops-ci "$admin" audit verify
echo; echo "== done: registry in $work/registry, the service's in $work/service-registry"
