#!/usr/bin/env bash
# A tour of the model registry and gated promotion, on the example cluster, with keys generated here.
#   scripts/model-tour.sh [WORKDIR]       (default: a new temporary directory; SOVRA=path/to/sovra to choose the binary)
# Every step prints what it did; the denied steps are expected (they show the gates at work).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
sovra="${SOVRA:-}"
if [ -z "$sovra" ]; then
  cargo build --release --quiet --manifest-path "$repo/Cargo.toml" --bin sovra
  sovra="$repo/target/release/sovra"
fi
work="${1:-$(mktemp -d -t sovra-tour-XXXXXX)}"
mkdir -p "$work" && cd "$work"
echo "== working in $work"
cp "$repo/examples/cluster.yaml" "$repo/examples/promotion.yaml" .
export SOVRA_REGISTRY="$work/registry" SOVRA_PROMOTION_CONFIG="$work/promotion.yaml"
step() { echo; echo "\$ sovra $*"; "$sovra" "$@"; }
expect_fail() { echo; echo "\$ sovra $*   # expected to fail"; if "$sovra" "$@"; then echo "UNEXPECTED SUCCESS"; exit 1; else echo "(exit $?)"; fi; }

for k in trainer alice bob carol secops service; do step model keygen "keys/$k"; done

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
echo; echo "== done: registry in $work/registry"
