#!/usr/bin/env python3
"""Checks Sovra's residency evidence without sovra (formats: docs/receipts.md, docs/audit-log.md).

Python 3.11 with the `cryptography` package (model_signing depends on it); no sovra code.

Usage:
  python3 tests/evidence_verify.py receipts DOC.json --key SCHEDULER.pub.pem
      A job's receipts document (`sovra job receipts ID -o json`): the chain proof (entries link and hash to the
      head, the head signed by the scheduler), every receipt signed and in the chain, none of the job's left out,
      class and zone digests recomputed from their definitions. Prints where each replica ran.
  python3 tests/evidence_verify.py model STATUS.json --key SERVICE.pub.pem --scheduler-key SCHEDULER.pub.pem
      A model version's status (`sovra model status NAME -o json`): every promotion statement signed by the
      promotion service and about this digest, and the training receipts in its provenance as above.
Exit 0 when everything verifies; 1 with a message naming what does not; 2 for bad usage.
"""
import base64
import hashlib
import json
import os
import sys

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from audit_verify import jcs  # noqa: E402  (the RFC 8785 form, shared with the audit log checker)

RECEIPTS_DOC = "https://sovra.dev/job-receipts/v1"
RECEIPT_PREDICATE = "https://sovra.dev/placement-receipt/v1"
STATEMENT_TYPE = "application/vnd.in-toto+json"
CHECKPOINT_TYPE = "application/vnd.sovra.audit-checkpoint.v1+json"
PROMOTION_PREDICATE = "https://sovra.dev/promotion/v1"


class Refused(Exception):
    pass


def load_key(path):
    with open(path, "rb") as f:
        key = serialization.load_pem_public_key(f.read())
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise Refused(f"{path}: not an ECDSA public key")
    return key


def dsse(envelope, payload_type, key, what):
    """The payload of a DSSE envelope whose first signature verifies with `key` (PAE, ECDSA over the curve's hash)."""
    if envelope.get("payloadType") != payload_type:
        raise Refused(f"{what}: payloadType {envelope.get('payloadType')!r}, expected {payload_type!r}")
    sigs = envelope.get("signatures") or []
    if not sigs:
        raise Refused(f"{what}: no signature")
    body = base64.b64decode(envelope["payload"], validate=True)
    pae = b"DSSEv1 %d %s %d %s" % (len(payload_type), payload_type.encode(), len(body), body)
    digest = hashes.SHA384() if key.curve.name == "secp384r1" else hashes.SHA256()
    try:
        key.verify(base64.b64decode(sigs[0]["sig"], validate=True), pae, ec.ECDSA(digest))
    except InvalidSignature:
        raise Refused(f"{what}: the signature does not verify with the given key") from None
    return json.loads(body)


def entry_hash(entry):
    if entry.get("v") != 2:
        raise Refused(f"chain entry {entry.get('seq')}: format {entry.get('v')!r}, proofs hold format 2")
    body = {k: v for k, v in entry.items() if k != "hash"}
    return hashlib.sha256(jcs(body).encode("utf-8")).hexdigest()


def digest(value):
    return hashlib.sha256(jcs(value).encode("utf-8")).hexdigest()


def check_receipts(doc, key):
    """Where each replica ran, once everything verifies."""
    if doc.get("_type") != RECEIPTS_DOC:
        raise Refused(f"_type is {doc.get('_type')!r}, expected {RECEIPTS_DOC}")
    job, chain = doc["job"], doc["chain"]
    entries, head = chain["entries"], chain["head"]
    if not entries:
        raise Refused("the chain proof holds no entries")
    prev = entries[0]["prev"]
    for i, e in enumerate(entries):
        if e["seq"] != entries[0]["seq"] + i:
            raise Refused(f"chain entry {i} is number {e['seq']}: the proof has a gap")
        if e["prev"] != prev:
            raise Refused(f"chain entry {e['seq']}: prev does not link to the entry before")
        if entry_hash(e) != e["hash"]:
            raise Refused(f"chain entry {e['seq']}: its content does not hash to its hash (edited)")
        prev = e["hash"]
    if entries[-1]["seq"] + 1 != head["count"] or prev != head["hash"]:
        raise Refused("the chain proof does not end in its head")
    cp = dsse(chain["checkpoint"], CHECKPOINT_TYPE, key, "chain checkpoint")
    if cp.get("count") != head["count"] or cp.get("hash") != head["hash"]:
        raise Refused("chain checkpoint: the signed head is not the proof's head")
    by_seq = {e["seq"]: e for e in entries}
    listed = {r["seq"] for r in doc["receipts"]}
    for e in entries:
        if e["kind"] == "placement-receipt" and e["details"].get("job") == job and e["seq"] not in listed:
            raise Refused(f"the receipt at log entry {e['seq']} is missing from the document")
    runs = {}
    for r in doc["receipts"]:
        where = f"receipt at log entry {r['seq']}"
        entry = by_seq.get(r["seq"])
        if entry is None or entry["details"].get("envelope") != r["envelope"]:
            raise Refused(f"{where}: not the receipt the chain holds")
        st = dsse(r["envelope"], STATEMENT_TYPE, key, where)
        p = st.get("predicate", {})
        if st.get("predicateType") != RECEIPT_PREDICATE or p.get("job") != job:
            raise Refused(f"{where}: not a placement receipt of job {job}")
        for part in ("zone", "residencyClass"):
            d = p[part]
            if d.get("definition") is not None and digest(d["definition"]) != d.get("digest"):
                raise Refused(f"{where}: {part} digest does not match its definition")
        k = (p["attempt"], p["replica"])
        if p["event"] == "placed":
            runs[k] = {"attempt": p["attempt"], "replica": p["replica"], "node": p["node"], "zone": p["zone"]["id"],
                       "class": p["residencyClass"]["name"], "satisfies": p["satisfiesClass"], "outcome": None}
        elif p["event"] == "ended" and k in runs:
            runs[k]["outcome"] = p["outcome"]
        else:
            raise Refused(f"{where}: event {p.get('event')!r} of a replica never placed")
    if not runs:
        raise Refused(f"no placement of job {job}")
    return {"job": job, "head": head, "runs": sorted(runs.values(), key=lambda x: (x["attempt"], x["replica"]))}


def check_model(status, service_key, scheduler_key):
    model, dig = status["model"], status["digest"]
    statements = 0
    for rec in status.get("promotions", []):
        st = dsse(rec["envelope"], STATEMENT_TYPE, service_key, f"promotion record {rec.get('id')}")
        subj = st["subject"][0]
        if st.get("predicateType") != PROMOTION_PREDICATE or subj["name"] != model or subj["digest"]["sha256"] != dig:
            raise Refused(f"promotion record {rec.get('id')}: not a promotion statement of {model}@{dig}")
        statements += 1
    receipts = status.get("provenance", {}).get("receipts")
    if receipts is None:
        raise Refused(f"{model}@{dig[:12]}: its provenance carries no placement receipts")
    training = check_receipts(receipts, scheduler_key)
    return {"model": model, "digest": dig, "promotion_statements": statements, "training": training}


def main(argv):
    args = list(argv)

    def opt(name):
        if name not in args:
            return None
        i = args.index(name)
        if i + 1 >= len(args):
            raise SystemExit(f"{name} needs a FILE")
        value = args.pop(i + 1)
        args.pop(i)
        return value

    try:
        key, sched = opt("--key"), opt("--scheduler-key")
    except SystemExit as e:
        print(e, file=sys.stderr)
        return 2
    if len(args) != 2 or key is None or (args[0] == "model" and sched is None) or args[0] not in ("receipts", "model"):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    try:
        with open(args[1], encoding="utf-8") as f:
            doc = json.load(f)
        if args[0] == "receipts":
            out = check_receipts(doc, load_key(key))
        else:
            out = check_model(doc, load_key(key), load_key(sched))
    except Refused as e:
        print(f"{args[1]}: REFUSED: {e}", file=sys.stderr)
        return 1
    except (OSError, ValueError, KeyError, TypeError, IndexError) as e:
        print(f"{args[1]}: REFUSED: malformed ({type(e).__name__}: {e})", file=sys.stderr)
        return 1
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
