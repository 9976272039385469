#!/usr/bin/env python3
"""Where the decode chain attention -> o projection -> to_fragments -> SwiGLU
spends its time, from a probes build's records (engine/cuda/probes.cuh;
cuda-bench with ALM_PROBE_FILE):

    python3 tests/cuda/device/probe_summary.py PROBES.csv[.xz]

Each record is one block: its kind, SM, and the global timer (ns) at its
marks. The blocks of one launch return from griddepcontrol.wait together
(when the kernel before has finished), so launches are found by clustering
the wait marks; consecutive launches of the four kinds form a layer's chain.
Printed: medians over the layers, in microseconds, of
- hand-offs: from the last block's end of one kernel to the first block's
  return from its wait in the next (what a kernel boundary costs);
- spans: from a launch's first wait return to its last block's end;
- per-block phases between marks (the median block of each launch);
- how the SwiGLU's and down's blocks land on the SMs: the blocks grouped by
  how many of their launch's blocks share their SM, with when they end. A
  launch ends when its most crowded SMs do (session 18: blocks launched
  early, while the attention and the o projection hold SMs, pile up on the
  others).
"""
import collections
import csv
import lzma
import statistics
import sys

KINDS = {1: "attention", 2: "o_proj", 3: "to_fragments", 4: "swiglu", 5: "down"}
# the mark at which a kind's blocks have returned from their wait
WAIT_MARK = {1: 1, 2: 2, 3: 2, 4: 2, 5: 2}
MATMUL_PHASES = [("wait->chunk 0 landed", 2, 3), ("compute", 3, 4), ("barrier", 4, 5), ("reduce+store", 5, 7)]
PHASES = {
    1: [("wait->q,k loaded", 1, 2), ("rope+tile", 2, 3), ("combine warps", 3, 4),
        ("cluster sync", 4, 5), ("merge (rank 0)", 5, 6), ("last sync", 6, 7)],
    2: MATMUL_PHASES,
    3: [("wait->end", 2, 7)],
    4: MATMUL_PHASES,
    5: MATMUL_PHASES,
}


def read(path):
    f = lzma.open(path, "rt") if path.endswith(".xz") else open(path, newline="")
    with f:
        rows = list(csv.DictReader(f))
    recs = collections.defaultdict(list)
    for r in rows:
        k = int(r["kind"])
        t = [int(r["t%d" % i]) for i in range(8)] + [int(r["sm"])]   # t[8]: the SM
        if t[WAIT_MARK[k]] and t[7]:
            recs[k].append(t)
    return recs


def launches(recs, kind, gap_ns=4000):
    """blocks grouped by their wait return: a new launch where the gap to
    the previous block's return exceeds gap_ns"""
    blocks = sorted(recs[kind], key=lambda t: t[WAIT_MARK[kind]])
    out, cur, last = [], [], None
    for t in blocks:
        w = t[WAIT_MARK[kind]]
        if last is not None and w - last > gap_ns:
            out.append(cur)
            cur = []
        cur.append(t)
        last = w
    if cur:
        out.append(cur)
    return out


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    recs = read(sys.argv[1])
    groups = {k: launches(recs, k) for k in KINDS if recs.get(k)}
    for k, g in groups.items():
        sizes = collections.Counter(len(x) for x in g)
        print(f"{KINDS[k]}: {len(g)} launches, blocks a launch {dict(sizes.most_common(3))}")
    # the chain after each attention launch
    if 1 not in groups:
        sys.exit("no attention records")
    def first_after(kind, t):
        for x in groups.get(kind, []):
            if min(b[WAIT_MARK[kind]] for b in x) >= t:
                return x
        return None
    hand = collections.defaultdict(list)
    span = collections.defaultdict(list)
    phase = collections.defaultdict(list)
    spread = collections.defaultdict(list)
    early = collections.defaultdict(list)
    n_chain = 0
    for att in groups[1]:
        att_end = max(b[7] for b in att)
        o = first_after(2, att_end)
        if o is None:
            continue
        o_end = max(b[7] for b in o)
        tf = first_after(3, o_end)
        if tf is None:
            continue
        tf_end = max(b[7] for b in tf)
        sw = first_after(4, tf_end)
        if sw is None or min(b[2] for b in sw) - att_end > 60000:
            continue
        n_chain += 1
        chain = [(1, att), (2, o), (3, tf), (4, sw)]
        prev_end = None
        att_wait = min(b[1] for b in att)
        for k, x in chain:
            wm = WAIT_MARK[k]
            first_wait = min(b[wm] for b in x)
            end = max(b[7] for b in x)
            if prev_end is not None:
                hand[KINDS[k]].append((first_wait - prev_end) / 1e3)
            span[KINDS[k]].append((end - first_wait) / 1e3)
            spread[KINDS[k]].append((max(b[wm] for b in x) - first_wait) / 1e3)
            early[KINDS[k]].append((min(b[0] for b in x) - att_wait) / 1e3)
            for name, a, b in PHASES[k]:
                vals = [(t[b] - t[a]) / 1e3 for t in x if t[a] and t[b]]
                if vals:
                    phase[(KINDS[k], name)].append(statistics.median(vals))
                    phase[(KINDS[k], name + " (slowest block)")].append(max(vals))
            prev_end = end
    print(f"chains attention -> o -> to_fragments -> swiglu: {n_chain}")
    med = lambda v: statistics.median(v) if v else float("nan")
    print("\nus, median over the chains")
    print(f"{'kernel':14} {'hand-off':>9} {'span':>8} {'wait spread':>12} {'first entry':>12}")
    for k in ("attention", "o_proj", "to_fragments", "swiglu"):
        print(f"{k:14} {med(hand[k]):9.2f} {med(span[k]):8.2f} {med(spread[k]):12.2f} {med(early[k]):12.2f}")
    print("(hand-off: last block of the kernel before ends -> first block returns from its wait;"
          " span: first wait return -> last end; wait spread: first -> last wait return;"
          " first entry: first block's start, relative to the attention's first wait return)")
    print("\nphases, us (median block of a launch, and the slowest), median over the chains")
    for (k, name), v in phase.items():
        print(f"  {k:14} {name:40} {med(v):7.2f}")
    for k in (4, 5):
        sm_landing(groups, k)


def sm_landing(groups, kind):
    """the blocks of a kind grouped by how many of their launch's blocks
    share their SM"""
    wm = WAIT_MARK[kind]
    sms = collections.Counter()       # blocks an SM -> SMs, over the launches
    by = collections.defaultdict(list)
    for x in groups.get(kind, []):
        first_wait = min(b[wm] for b in x)
        on_sm = collections.Counter(b[8] for b in x)
        sms.update(on_sm.values())
        for b in x:
            by[on_sm[b[8]]].append(((b[7] - first_wait) / 1e3, (b[4] - b[3]) / 1e3 if b[3] and b[4] else None,
                                    (b[0] - first_wait) / 1e3))
    if not by:
        return
    n = len(groups[kind])
    print(f"\n{KINDS[kind]}: blocks an SM (us from the launch's first wait return; medians)")
    print(f"{'blocks an SM':>13} {'SMs a launch':>13} {'end':>7} {'last end':>9} {'compute':>8} {'start':>7}")
    for c in sorted(by):
        v = by[c]
        comp = [a[1] for a in v if a[1] is not None]
        print(f"{c:13} {sms[c] / n:13.1f} {statistics.median(a[0] for a in v):7.2f} {max(a[0] for a in v):9.2f}"
              f" {statistics.median(comp) if comp else float('nan'):8.2f} {statistics.median(a[2] for a in v):7.2f}")


if __name__ == "__main__":
    main()
