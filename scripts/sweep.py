#!/usr/bin/env python3
"""Runs `sovra simulate -o json` on every vendored task file and prints, per trace and policy, the median allocation
at 100% arrived, its seed spread and the published median; with two policies or more, the first is also compared
with the second paired by seed (mean difference, seeds won). Used for the tables of docs/simulator.md.

    python3 scripts/sweep.py --bin target/release/sovra -p fgd -p sovra --seeds 42..51 [--json out.json]
"""
import argparse
import json
import subprocess

TRACES = ["default", "cpu0", "cpu037", "cpu050", "cpu072", "cpu100", "cpu235", "cpu250", "cpu300", "gpushare20",
          "gpushare40", "gpushare60", "gpushare80", "gpuspec05", "gpuspec10", "gpuspec25", "multigpu20",
          "multigpu30", "multigpu40"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release/sovra")
    ap.add_argument("-p", "--policy", action="append", required=True)
    ap.add_argument("--seeds", default="42..51")
    ap.add_argument("--threads", default="2")
    ap.add_argument("-t", "--trace", action="append")
    ap.add_argument("--json")
    ap.add_argument("--extra", action="append", default=[], help="extra arguments for sovra simulate")
    args = ap.parse_args()
    out = {}
    for t in args.trace or TRACES:
        cmd = [args.bin, "simulate", "-t", t, "--seeds", args.seeds, "--threads", args.threads, "-o", "json"]
        for p in args.policy:
            cmd += ["-p", p]
        doc = json.loads(subprocess.run(cmd + args.extra, check=True, capture_output=True, text=True).stdout)
        out[t] = doc
        row = [t]
        sums = [x["summary"] for x in doc["policies"]]
        for s in sums:
            a, pub = s["alloc_at_100"], s["published_alloc_at_100"]
            d = f" ({a['median'] - pub:+.2f})" if pub is not None else ""
            row.append(f"{s['policy']} {a['median']:.2f} [{a['min']:.2f}–{a['max']:.2f}]{d}")
        if len(sums) >= 2:
            x, y = sums[0]["alloc_at_100_by_seed"], sums[1]["alloc_at_100_by_seed"]
            diffs = [a - b for a, b in zip(x, y)]
            row.append(f"paired {sum(diffs) / len(diffs):+.3f}, won {sum(d > 0 for d in diffs)}/{len(diffs)}"
                       f" tied {sum(d == 0 for d in diffs)}, Δmedian {sums[0]['alloc_at_100']['median'] - sums[1]['alloc_at_100']['median']:+.2f}")
        c = sums[0].get("ceiling_at_100")
        if c:
            row.append(f"ceiling {c['median']:.2f}")
        print(" | ".join(row), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f)


if __name__ == "__main__":
    main()
