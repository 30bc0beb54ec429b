#!/usr/bin/env python3
"""An independent reference implementation of the FGD paper's fill protocol, in numpy.

Written from `docs/fgd-simulator-protocol.md` alone (no Rust code was translated), for two uses:

1. **Decision-level comparison** with `sovra simulate`: with `--rng splitmix` (the default) the task order and the
   node tie order come from the same seeded streams the Rust simulator uses (SplitMix64 shuffle and inflation, node
   rank = mix(seed ^ mix(node))), so both must make *the same decision for every task*; `--placements FILE` compares
   them with a file written by `cargo run --release -p sovra-simulator --example placements` and prints the first task
   where they differ.
2. **Speed reference**: `scripts/compare_speed.sh` times one whole run of this script (CSV parsing included) beside
   one `sovra simulate` process.

Policies: fgd, best-fit, gpu-packing, gpu-clustering, dot-product (§4 of the protocol). Random is left out (it is
the RNG, not a rule). Usage:

    python3 scripts/fgd_reference.py --trace data/alibaba-gpu-v2023/openb_pod_list_default.csv -p fgd --seeds 42
"""

import argparse
import csv
import sys
import time

import numpy as np

M64 = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15
MILLI = 1000


def mix(z):
    """SplitMix64's finaliser after the golden-ratio increment (the Rust `score::mix`)."""
    z = (z + GOLDEN) & M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


class SplitMix:
    """SplitMix64 over a counter, with Lemire's bounded draw: the stream the Rust simulator shuffles with."""

    def __init__(self, seed):
        self.state = seed & M64

    def next(self):
        self.state = (self.state + GOLDEN) & M64
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
        return z ^ (z >> 31)

    def below(self, n):
        while True:
            m = self.next() * n
            low = m & M64
            if low >= ((1 << 64) - n) % n:
                return m >> 64


def read_nodes(path):
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    models = sorted({r["model"] for r in rows})
    return {
        "name": [r["sn"] for r in rows],
        "cpu": np.array([int(r["cpu_milli"]) for r in rows], dtype=np.int64),
        "mem": np.array([int(r["memory_mib"]) for r in rows], dtype=np.int64),
        "gpus": np.array([int(r["gpu"]) for r in rows], dtype=np.int64),
        "model": np.array([models.index(r["model"]) for r in rows], dtype=np.int64),
        "models": models,
    }


def read_tasks(path):
    """§1: num_gpu 0 is CPU-only whatever else; milli capped at 1000; gpu_spec split on '|', empty tokens dropped."""
    tasks = []
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            g = int(r["num_gpu"])
            m = 0 if g == 0 else min(int(r["gpu_milli"]), MILLI)
            spec = r.get("gpu_spec") or ""
            models = tuple(t for t in spec.split("|") if t) if g > 0 else ()
            tasks.append((r["name"], int(r["cpu_milli"]), int(r["memory_mib"]), g, m, models))
    return tasks


def build_workload(tasks, capacity, inflate, rng):
    """§2 steps 1, 3–5: name sort, Fisher–Yates from the end, then tune up (clones after) or down."""
    srt = sorted(tasks, key=lambda t: t[0])
    pods = list(srt)
    for i in range(len(pods) - 1, 0, -1):
        j = rng.below(i + 1)
        pods[i], pods[j] = pods[j], pods[i]
    target = int(inflate * capacity)
    total = sum(t[3] * t[4] for t in pods)
    if total < target:
        k = 0
        while True:
            c = srt[rng.below(len(srt))]
            if total + c[4] > target:  # the stop rule compares the per-GPU milli
                break
            total += c[3] * c[4]
            pods.append((f"{c[0]}-tuned-{k}",) + c[1:])
            k += 1
    else:
        while total > target and pods:
            t = pods.pop(rng.below(len(pods)))
            total -= t[3] * t[4]
    return pods


def typical(tasks):
    """§4 GetTypicalPods: (cpu, milli, num, type) groups, count desc then key desc, 95% prefix, renormalised."""
    counts = {}
    for _, cpu, _, g, m, models in tasks:
        k = (cpu, m, g, models)
        counts[k] = counts.get(k, 0) + 1
    keys = sorted(counts, key=lambda k: (counts[k], k), reverse=True)
    total, cum, kept = sum(counts.values()), 0, []
    for k in keys:
        kept.append(k)
        cum += counts[k]
        if cum >= 0.95 * total:
            break
    s = sum(counts[k] for k in kept)
    return [(k, counts[k] / s) for k in kept]


class Cluster:
    def __init__(self, nodes, shapes):
        self.n = len(nodes["cpu"])
        self.gmax = int(nodes["gpus"].max())
        self.exists = np.arange(self.gmax)[None, :] < nodes["gpus"][:, None]
        self.free = np.where(self.exists, MILLI, 0).astype(np.int32)  # [N, G]
        self.cpu = nodes["cpu"].copy()
        self.mem = nodes["mem"].copy()
        self.model = nodes["model"]
        self.models = nodes["models"]
        self.tags = np.zeros((self.n, 10), dtype=np.int64)
        # Typical shapes, as arrays over T.
        self.t_cpu = np.array([k[0] for k, _ in shapes], dtype=np.int64)
        self.t_m = np.array([k[1] for k, _ in shapes], dtype=np.int32)
        self.t_g = np.array([k[2] for k, _ in shapes], dtype=np.int32)
        self.t_p = np.array([p for _, p in shapes])
        # t_ok[N, T]: shape t may use node n's model.
        ok = np.ones((self.n, len(shapes)), dtype=bool)
        for j, (k, _) in enumerate(shapes):
            if k[3]:
                allowed = [self.models.index(x) for x in k[3] if x in self.models]
                ok[:, j] = np.isin(self.model, allowed)
        self.t_ok = ok
        self.frag = np.zeros(self.n)
        for i in range(self.n):
            self.frag[i] = self.node_frag(i)

    def frag_of(self, free, cpu, t_ok):
        """F(n) for rows of per-GPU free milli `free` [..., G] with free CPU `cpu` [...] (§4 table)."""
        L = free.sum(axis=-1)
        usable_mask = free[..., None] >= self.t_m  # [..., G, T]
        count = usable_mask.sum(axis=-2)
        usable = (free[..., None] * usable_mask).sum(axis=-2)
        fits = (self.t_m > 0) & t_ok & (cpu[..., None] >= self.t_cpu) & (count >= self.t_g)
        f = np.where(fits, L[..., None] - usable, L[..., None])
        return (f * self.t_p).sum(axis=-1)

    def node_frag(self, i):
        return float(self.frag_of(self.free[i : i + 1], self.cpu[i : i + 1], self.t_ok[i : i + 1])[0])


def score_fgd(c, idx, cpu, g, m, share):
    """FGD scores of feasible nodes `idx`, and for a share the GPU each would take (first index of the max)."""
    before = c.frag[idx]
    if share:
        # Taking m from GPU i changes only GPU i: update each shape's usable count and milli instead of recomputing.
        free = c.free[idx]  # [K, G]
        mask = free[:, :, None] >= c.t_m  # [K, G, T]
        count = mask.sum(axis=1)  # [K, T]
        usable = (free[:, :, None] * mask).sum(axis=1)
        left = free - m  # [K, G]: GPU i after the share
        now = left[:, :, None] >= c.t_m
        count2 = count[:, None, :] - mask + now  # [K, G(variant), T]
        usable2 = usable[:, None, :] - free[:, :, None] * mask + left[:, :, None] * now
        L2 = (free.sum(axis=1) - m)[:, None, None]
        cpu2 = (c.cpu[idx] - cpu)[:, None, None]
        fits = (c.t_m > 0) & c.t_ok[idx][:, None, :] & (cpu2 >= c.t_cpu) & (count2 >= c.t_g)
        after = (np.where(fits, L2 - usable2, L2) * c.t_p).sum(axis=2)  # [K, G]
        valid = (free >= m) & c.exists[idx]
        s = np.trunc(100.0 / (1.0 + np.exp(-(before[:, None] - after) / 1000.0))).astype(np.int64)
        s = np.where(valid, s, -1)
        gpu = s.argmax(axis=1)  # the first index reaching the max
        return s.max(axis=1), gpu
    free = c.free[idx].copy()
    if g > 0:
        # The lowest-index fully free GPUs.
        whole = free == MILLI
        take = whole & (np.cumsum(whole, axis=1) <= g)
        free[take] = 0
    after = c.frag_of(free, c.cpu[idx] - cpu, c.t_ok[idx])
    s = np.trunc(100.0 / (1.0 + np.exp(-(before - after) / 1000.0))).astype(np.int64)
    return s, None


def score_best_fit(c, idx, cpu, g, m):
    left_cpu = (c.cpu[idx] - cpu) / 128000.0
    left_gpu = np.maximum(c.free[idx].sum(axis=1) - g * m, 0) / 8000.0
    return np.trunc(100.0 * (1.0 - (0.5 * left_cpu + 0.5 * left_gpu))).astype(np.int64)


def score_dot(c, idx, cpu, g, m):
    n0, n1 = c.cpu[idx] / 128000.0, c.free[idx].sum(axis=1) / 8000.0
    return np.trunc(100.0 * (1.0 - (n0 * cpu / 128000.0 + n1 * g * m / 8000.0) / 2.0)).astype(np.int64)


def score_packing(c, idx, g, m):
    if g == 0:
        return np.zeros(len(idx), dtype=np.int64)
    exists = c.exists[idx]
    free = np.where(exists, c.free[idx], -1)  # absent GPUs sort first and never fit
    G = exists.sum(axis=1)
    f = (free == MILLI).sum(axis=1)
    srt = np.sort(free, axis=1)  # ascending free; equal values are interchangeable for the score
    fit = srt >= m
    taken = fit & (np.cumsum(fit, axis=1) <= g)
    whole = (taken & (srt == MILLI)).sum(axis=1)
    ratio = (np.where(taken, srt, 0) * 100 // MILLI).sum(axis=1)
    partial = np.where(whole > 0, np.maximum(50 - whole, 33), np.maximum(100 - ratio // 10, 50))
    return np.where(f == G, np.maximum(33 - f, f), partial)


def tag_of(g, m):
    if g == 0:
        return None
    return 0 if (g == 1 and m < MILLI) else min(g, 9)


def score_clustering(c, idx, g, m):
    t = tag_of(g, m)
    if t is None:
        return np.zeros(len(idx), dtype=np.int64)
    L = c.free[idx].sum(axis=1)
    base = 25 * (8000 - L) // 8000
    tags = c.tags[idx]
    own = tags[:, t] > 0
    other = (tags > 0).sum(axis=1) - own.astype(np.int64) > 0
    bonus = np.where(own & ~other, 75, np.where(own & other, 50, np.where(~own & ~other, 25, 0)))
    return base + bonus


def run(nodes, workload, shapes, policy, rank):
    c = Cluster(nodes, shapes)
    capacity = int(nodes["gpus"].sum()) * MILLI
    arrived = used = 0
    steps, placements = [], []
    for name, cpu, mem, g, m, models in workload:
        arrived += g * m
        share = g == 1 and m < MILLI
        ok = (c.cpu >= cpu) & (c.mem >= mem)
        if g > 0:
            if models:
                allowed = [c.models.index(x) for x in models if x in c.models]
                ok &= np.isin(c.model, allowed)
            if share:
                ok &= c.free.max(axis=1) >= m
            else:
                ok &= (c.free == MILLI).sum(axis=1) >= g
        idx = np.nonzero(ok)[0]
        if len(idx) == 0:
            placements.append(None)
            steps.append((arrived, used))
            continue
        gpu = None
        if policy == "fgd":
            s, gpus = score_fgd(c, idx, cpu, g, m, share)
        elif policy == "best-fit":
            s = score_best_fit(c, idx, cpu, g, m)
        elif policy == "dot-product":
            s = score_dot(c, idx, cpu, g, m)
        elif policy == "gpu-packing":
            s = score_packing(c, idx, g, m)
        elif policy == "gpu-clustering":
            s = score_clustering(c, idx, g, m)
        else:
            raise SystemExit(f"unknown policy {policy}")
        # Highest score; ties to the smallest rank (§4).
        best = s.max()
        tied = idx[s == best]
        k_node = tied[np.argmin(rank[tied])]
        k = int(np.nonzero(idx == k_node)[0][0])
        n = int(k_node)
        if share:
            if policy == "fgd":
                gpu = int(gpus[k])
            else:  # best: least free among free >= m, ties to the lowest index
                free = np.where(c.exists[n] & (c.free[n] >= m), c.free[n], 10**9)
                gpu = int(np.argmin(free))
            c.free[n, gpu] -= m
            devs = [gpu]
        elif g > 0:
            devs = [int(x) for x in np.nonzero(c.free[n] == MILLI)[0][:g]]
            c.free[n, devs] = 0
        else:
            devs = []
        c.cpu[n] -= cpu
        c.mem[n] -= mem
        t = tag_of(g, m)
        if t is not None:
            c.tags[n, t] += 1
        c.frag[n] = c.node_frag(n)
        used += g * m
        placements.append((n, devs))
        steps.append((arrived, used))
    return capacity, steps, placements


def read_order(path, tasks, nodes):
    """A task order and node prefixes written by scripts/goorder (`T name` lines, then `N node prefix` lines)."""
    by_name = {t[0]: t for t in tasks}
    workload, prefix = [], {}
    with open(path) as f:
        for line in f:
            kind, *rest = line.split()
            if kind == "T":
                base = rest[0].split("-tuned-")[0]
                workload.append((rest[0],) + by_name[base][1:])
            else:
                prefix[rest[0]] = int(rest[1])
    return workload, np.array([prefix[n] for n in nodes["name"]], dtype=np.uint64)


def round2(x):
    return round(x, 2)


def alloc_at(capacity, steps, x):
    """§5 binning: mean of round(alloc, 2) over the steps whose arrived % rounds (half to even) to x."""
    vals = [round2(u * 100.0 / capacity) for a, u in steps if round(a * 100.0 / capacity) == x]
    if not vals:
        vals = [round2(u * 100.0 / capacity) for a, u in steps if abs(round(a * 100.0 / capacity) - x) <= 1]
    return round2(sum(vals) / len(vals)) if vals else None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trace", required=True)
    ap.add_argument("--nodes", default="data/alibaba-gpu-v2023/openb_node_list_gpu_node.csv")
    ap.add_argument("-p", "--policy", action="append", default=[])
    ap.add_argument("--seeds", default="42")
    ap.add_argument("--inflate", type=float, default=1.3)
    ap.add_argument(
        "--order",
        help="take the task order and node prefixes from this file (scripts/goorder: Go's math/rand) for one seed",
    )
    ap.add_argument("--placements", help="compare with this file (task,node per line) of the Rust simulator")
    args = ap.parse_args()
    t0 = time.process_time()
    nodes = read_nodes(args.nodes)
    tasks = read_tasks(args.trace)
    shapes = typical(tasks)
    t_parse = time.process_time() - t0
    seeds = [int(x) for x in args.seeds.split(",")] if ".." not in args.seeds else list(
        range(int(args.seeds.split("..")[0]), int(args.seeds.split("..")[1]) + 1)
    )
    capacity = int(nodes["gpus"].sum()) * MILLI
    for policy in args.policy or ["fgd"]:
        vals = []
        for seed in seeds:
            if args.order:
                workload, rank = read_order(args.order.replace("{seed}", str(seed)), tasks, nodes)
            else:
                workload = build_workload(tasks, capacity, args.inflate, SplitMix(seed))
                rank = np.array([mix(seed ^ mix(i)) for i in range(len(nodes["cpu"]))], dtype=np.uint64)
            cap, steps, placements = run(nodes, workload, shapes, policy, rank)
            a100 = alloc_at(cap, steps, 100)
            vals.append(a100)
            print(f"{policy} seed {seed}: alloc@100 {a100}  failed {sum(p is None for p in placements)}", flush=True)
            if args.placements:
                with open(args.placements) as f:
                    theirs = [line.strip() for line in f if line.strip()]
                for i, (p, q) in enumerate(zip(placements, theirs)):
                    mine = "-" if p is None else str(p[0])
                    if mine != q.split(",")[1]:
                        print(f"first difference at task {i} ({workload[i]}): reference {p}, rust {q}")
                        break
                else:
                    print(f"all {min(len(placements), len(theirs))} decisions agree")
        vals.sort()
        med = (vals[(len(vals) - 1) // 2] + vals[len(vals) // 2]) / 2
        print(f"{policy}: median alloc@100 {med:.2f} over {len(vals)} seed(s)")
    print(f"cpu seconds: parse {t_parse:.3f}, total {time.process_time() - t0:.3f}", file=sys.stderr)


if __name__ == "__main__":
    main()
