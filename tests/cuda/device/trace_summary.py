#!/usr/bin/env python3
"""Where a decode step's time goes, from a kernel timeline (check.sh trace):

    python3 tests/cuda/device/trace_summary.py TRACE.csv[.xz] [--tokens N] [--steps 0]

kernel_trace.c writes one row per kernel: its correlation id (every kernel
of one graph replay shares the replay's), graph, start and end on the GPU's
clock. A replay of a decode graph is a step. The steps are grouped by their
sequence of kernels; the most frequent sequence whose first embedding has
grid_x == N tokens (1: decode) is summarized.

Kernels overlap (programmatic dependent launch: a kernel's blocks start
while the one before drains, then wait), so a kernel's duration is not what
it adds to the step. "adds" is the time from the later of its start and the
end of every kernel before it, to its end: the step's wall time is the sum
of the adds plus the idle gaps (no kernel running). Per kernel (name and
grid), medians over the steps of the sum over the step."""
import argparse
import collections
import csv
import lzma
import statistics
import subprocess
import sys


def open_trace(path):
    return lzma.open(path, "rt") if path.endswith(".xz") else open(path, newline="")


def demangle(names):
    try:
        out = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True,
                             check=True).stdout.split("\n")
    except (OSError, subprocess.CalledProcessError):
        return {n: n for n in names}
    short = {}
    for n, d in zip(names, out):
        # drop the parameter list, keep the template arguments
        depth, cut = 0, len(d)
        for i, ch in enumerate(d):
            if ch == "<":
                depth += 1
            elif ch == ">":
                depth -= 1
            elif ch == "(" and depth == 0:
                cut = i
                break
        d = d[:cut]
        if d.startswith("void "):
            d = d[5:]
        short[n] = d
    return short


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("trace")
    ap.add_argument("--tokens", type=int, default=1, help="tokens of the pass (grid of the embedding)")
    ap.add_argument("--timeline", type=int, default=24, help="kernels of one step to list in order")
    args = ap.parse_args()

    steps = collections.defaultdict(list)
    with open_trace(args.trace) as f:
        for row in csv.DictReader(f):
            if row["graph"] == "0":
                continue   # launched directly: no replay to group by
            steps[int(row["correlation"])].append(row)
    if not steps:
        sys.exit("trace_summary: no graph replays in the trace")
    names = demangle(sorted({r["name"] for rows in steps.values() for r in rows}))

    def label(r):
        return f'{names[r["name"]]} [{r["grid_x"]}x{r["grid_y"]}x{r["grid_z"]}]'

    by_sequence = collections.defaultdict(list)
    for corr, rows in steps.items():
        rows.sort(key=lambda r: int(r["start_ns"]))
        first = rows[0]
        if "embed" not in names[first["name"]] or int(first["grid_x"]) != args.tokens:
            continue
        by_sequence[tuple(label(r) for r in rows)].append(rows)
    if not by_sequence:
        sys.exit(f"trace_summary: no replay starts with an embedding of {args.tokens} tokens")
    sequence, replays = max(by_sequence.items(), key=lambda kv: len(kv[1]))
    print(f"{len(replays)} replays of a {len(sequence)}-kernel graph "
          f"({len(by_sequence)} distinct graphs of {args.tokens} tokens in the trace)")

    walls, idles = [], []
    adds = collections.defaultdict(list)
    durations = collections.defaultdict(list)
    counts = collections.Counter(sequence)
    per_position = []
    for rows in replays:
        t0 = int(rows[0]["start_ns"])
        latest = t0
        idle = 0
        step_adds = collections.defaultdict(int)
        step_durs = collections.defaultdict(int)
        positions = []
        for r in rows:
            s, e = int(r["start_ns"]), int(r["end_ns"])
            if s > latest:
                idle += s - latest
            add = max(0, e - max(s, latest))
            latest = max(latest, e)
            step_adds[label(r)] += add
            step_durs[label(r)] += e - s
            positions.append((s - t0, e - s, add))
        walls.append(latest - t0)
        idles.append(idle)
        for k in counts:
            adds[k].append(step_adds[k])
            durations[k].append(step_durs[k])
        per_position.append(positions)

    wall = statistics.median(walls)
    print(f"step wall {wall / 1e3:.1f} us (median), idle between kernels {statistics.median(idles) / 1e3:.1f} us")
    print(f"{'kernel [grid]':70s} {'n':>4s} {'adds us':>9s} {'share':>6s} {'dur us':>9s} {'adds/n':>7s}")
    for k in sorted(counts, key=lambda k: -statistics.median(adds[k])):
        a = statistics.median(adds[k])
        d = statistics.median(durations[k])
        print(f"{k[:70]:70s} {counts[k]:4d} {a / 1e3:9.1f} {a / wall:6.1%} {d / 1e3:9.1f} {a / counts[k] / 1e3:7.2f}")

    # one layer's worth, in order: medians per position over the replays
    n = min(args.timeline, len(sequence))
    print(f"\nthe first {n} kernels in order (median over replays): start, duration, adds (us)")
    for i in range(n):
        s = statistics.median(p[i][0] for p in per_position)
        d = statistics.median(p[i][1] for p in per_position)
        a = statistics.median(p[i][2] for p in per_position)
        print(f"{i:4d} {s / 1e3:8.2f} {d / 1e3:7.2f} {a / 1e3:7.2f}  {sequence[i][:90]}")


if __name__ == "__main__":
    main()
