#!/usr/bin/env bash
# What the registry costs on a 4 GiB model: push (verify + store), promote training → registry and registry →
# inference (re-verify in the source zone, copy, re-verify in the target zone), pull. Uses the model of
# scripts/bench-signing-4g.sh (run that first, or pass its WORKDIR).
#   scripts/bench-registry-4g.sh WORKDIR
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
S="${SOVRA:-$repo/target/release/sovra}"
work="${1:?give the WORKDIR of scripts/bench-signing-4g.sh}"
cd "$work"
[ -f model/config.json ] || { echo "no model in $work; run scripts/bench-signing-4g.sh $work first"; exit 2; }
rm -rf reg keys reg.yaml pulled pulled.sig && mkdir keys
for k in alice bob service; do "$S" model keygen "keys/$k" > /dev/null; done
cp "$repo/examples/cluster.yaml" .
cat > reg.yaml <<YAML
cluster: cluster.yaml
stages: {training: [fr-par-secnum], registry: [fr-par-secnum], inference: [fr-par-secnum]}
signers: [{name: bench, key: key.pub.pem}]
approvers: [{name: alice, key: keys/alice.pub.pem}, {name: bob, key: keys/bob.pub.pem}]
service_key: keys/service.pem
approvals: {inference: 2}
provenance: {require_receipts: false}  # self-declared provenance (receipts: scripts/auditor-flow.sh)
YAML
printf 'training_job: bench\ntraining_zone: fr-par-secnum\n' > prov.yaml
export SOVRA_REGISTRY="$work/reg" SOVRA_PROMOTION_CONFIG="$work/reg.yaml"
T='%e s wall, %U s user, %S s sys, %P CPU'
echo "load $(cut -d' ' -f1-3 /proc/loadavg)"
"$S" model sign model --private-key key.pem --signature model.sig > /dev/null
cat model/config.json model/shards/* > /dev/null
echo -n "push (verify + store 4 GiB):        "; /usr/bin/time -f "$T" "$S" model push m model --signature model.sig --residency-class eu-any --provenance prov.yaml > /dev/null
echo -n "promote → registry:                 "; /usr/bin/time -f "$T" "$S" model promote m --to registry > /dev/null
"$S" model approve m --to inference --key keys/alice.pem > /dev/null
"$S" model approve m --to inference --key keys/bob.pem > /dev/null
echo -n "promote → inference (2 approvals):  "; /usr/bin/time -f "$T" "$S" model promote m --to inference > /dev/null
echo -n "pull from inference:                "; /usr/bin/time -f "$T" "$S" model pull m pulled > /dev/null
echo -n "audit verify:                       "; /usr/bin/time -f "$T" "$S" audit verify > /dev/null
echo "load $(cut -d' ' -f1-3 /proc/loadavg)"
rm -rf reg pulled pulled.sig
