#!/usr/bin/env python3
"""Checks a `sovra audit export` file without sovra (format: docs/audit-log.md). Python 3.11, stdlib only.

Usage: python3 tests/audit_verify.py EXPORT.jsonl [--expect-head HASH]
Exit 0 when the chain is intact; 1 with a message naming the first bad line; 2 for bad usage.
"""
import hashlib
import json
import sys

GENESIS = "0" * 64


def jcs(value):
    """RFC 8785 canonical JSON for the values an entry holds (no floats: they are refused)."""
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, int):
        if abs(value) > 2**53:
            raise ValueError(f"integer {value} is beyond 2^53, where JCS numbers lose precision")
        return str(value)
    if isinstance(value, float):
        raise ValueError(f"number {value!r} is not an integer; audit entries hold no fractional numbers")
    if isinstance(value, str):
        # ECMAScript JSON.stringify: \b \t \n \f \r by name, other controls as \u00xx, everything else literal.
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ",".join(jcs(v) for v in value) + "]"
    if isinstance(value, dict):
        keys = sorted(value, key=lambda k: k.encode("utf-16-be"))  # UTF-16 code units, big-endian sorts as such
        return "{" + ",".join(jcs(k) + ":" + jcs(value[k]) for k in keys) + "}"
    raise ValueError(f"unexpected JSON value {value!r}")


def legacy(entry):
    """Format 1 (no "v"): serde_json's compact output, fields in declaration order, `details` as stored."""
    fields = ["seq", "time", "kind", "subject", "actor", "details", "prev"]
    return json.dumps({k: entry[k] for k in fields}, ensure_ascii=False, separators=(",", ":"))


def check(path, expect_head):
    prev, count = GENESIS, 0
    with open(path, "rb") as f:
        for n, raw in enumerate(f, start=1):
            where = f"{path}:{n}"
            try:
                entry = json.loads(raw.decode("utf-8"))
                if not isinstance(entry, dict):
                    raise ValueError("not a JSON object")
                if entry.get("seq") != n - 1:
                    return f"{where}: entry says seq {entry.get('seq')}, expected {n - 1}: an entry was removed, added or moved"
                if entry.get("prev") != prev:
                    return f"{where}: prev {str(entry.get('prev'))[:12]}… does not link to the previous hash {prev[:12]}…"
                body = {k: v for k, v in entry.items() if k != "hash"}
                if "v" not in entry:
                    text = legacy(entry)
                elif entry["v"] == 2:
                    text = jcs(body)
                else:
                    return f"{where}: unknown format version v={entry['v']!r}"
                computed = hashlib.sha256(text.encode("utf-8")).hexdigest()
            except (ValueError, KeyError) as e:  # UnicodeError is a ValueError
                return f"{where}: cannot check this entry: {e}"
            if computed != entry.get("hash"):
                return f"{where}: content hashes to {computed[:12]}…, the entry records {str(entry.get('hash'))[:12]}…: it was edited"
            prev, count = entry["hash"], count + 1
    if expect_head is not None and expect_head.lower() != prev:
        return f"{path}: the log ends at {prev} ({count} entries), expected head {expect_head}"
    print(f"audit log intact: {count} entries, head {prev}")
    return None


def main(argv):
    args, expect = list(argv), None
    if "--expect-head" in args:
        i = args.index("--expect-head")
        if i + 1 >= len(args):
            print("--expect-head needs a HASH", file=sys.stderr)
            return 2
        expect = args.pop(i + 1)
        args.pop(i)
    if len(args) != 1:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    problem = check(args[0], expect)
    if problem:
        print(problem, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
