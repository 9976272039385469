#!/usr/bin/env python3
"""Tables of what check.sh measured, this build against the base.

    tests/cuda/device/summarize.py DIR

DIR holds check.sh's SECTION.txt files (the run's $OUT, as it comes back).
Prints markdown: for decode.txt and big.txt, per model and build (this
tree, the base, the variants) the medians over the runs (decode ms, the
base's decode time over this build's, share of the roofline, prefill
tokens/s, cost of a 5-token pass); for kernels.txt, per kernel the median
µs of each build and the base/new ratio.
"""
import json
import os
import re
import statistics
import sys
from collections import defaultdict


def sections(path):
    """(label, build, [json objects]) for each '### label (build...)' block."""
    blocks = []
    if not os.path.exists(path):
        return blocks
    label, build, rows = None, None, []
    for line in open(path, encoding="utf-8", errors="replace"):
        line = line.strip()
        if line.startswith("### exit status"):
            continue
        if line.startswith("### "):
            if label is not None:
                blocks.append((label, build, rows))
            label = line[4:]
            m = re.search(r"\(([a-z0-9]+)\b", label)
            build, rows = (m.group(1) if m else "new"), []
        elif line.startswith("{") and label is not None:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    if label is not None:
        blocks.append((label, build, rows))
    return blocks


def med(values):
    return statistics.median(values) if values else None


def fmt(v, spec):
    return format(v, spec) if v is not None else "-"


def build_order(builds):
    return sorted(builds, key=lambda b: (b != "new", b != "base", b))


def model_table(blocks):
    runs = defaultdict(lambda: defaultdict(list))
    for _, build, rows in blocks:
        for r in rows:
            if "decode_ms" in r:
                runs[(r["model"], r["bits"])][build].append(r)
    if not runs:
        return []
    out = ["| model | bits | build | decode ms | base / this | of roofline | prefill tok/s | pass 5 "
           "| decode ms, argmax | pass 5, argmax | decode ms, queued | of roofline, queued |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for (model, bits), by in runs.items():
        base = med([r["decode_ms"] for r in by.get("base", [])])
        for build in build_order(by):
            rs = by[build]
            d = med([r["decode_ms"] for r in rs])
            out.append("| %s | %s | %s | %s | %s | %s%% | %s | %s | %s | %s | %s | %s%% |" % (
                model, bits, build, fmt(d, ".3f"),
                fmt(base / d if base and d else None, ".2f"),
                fmt(med([r["roofline_fraction"] * 100 for r in rs]), ".0f"),
                fmt(med([r["prefill_tok_s"] for r in rs]), ",.0f"),
                fmt(med([r["pass_cost"]["5"] for r in rs if "5" in r.get("pass_cost", {})]), ".2f"),
                fmt(med([r["decode_ms_argmax"] for r in rs if "decode_ms_argmax" in r]), ".3f"),
                fmt(med([r["pass_cost_argmax"]["5"] for r in rs if "5" in r.get("pass_cost_argmax", {})]),
                    ".2f"),
                fmt(med([r["decode_ms_queued"] for r in rs if "decode_ms_queued" in r]), ".3f"),
                fmt(med([r["roofline_fraction_queued"] * 100 for r in rs if "roofline_fraction_queued" in r]),
                    ".0f")))
    return out


def kernel_table(blocks):
    runs = defaultdict(lambda: defaultdict(list))
    builds = set()
    for _, build, rows in blocks:
        for r in rows:
            key = tuple((k, r[k]) for k in ("kernel", "shape", "bits", "dim", "n_tok", "pos0") if k in r)
            runs[key][build].append(r["us"])
            if r.get("us_graph", -1) > 0:   # replayed from a graph (newer benches)
                runs[key + (("timing", "graph"),)][build].append(r["us_graph"])
            builds.add(build)
    if not runs:
        return []
    order = build_order(builds)
    out = ["| kernel | " + " | ".join("µs (%s)" % b for b in order) +
           (" | base / new |" if "base" in builds else " |"),
           "|---|" + "---|" * len(order) + ("---|" if "base" in builds else "")]
    for key, by in runs.items():
        name = ", ".join(str(v) if k == "kernel" else "%s %s" % (k, v) for k, v in key)
        cells = [fmt(med(by.get(b, [])), ".2f") for b in order]
        n, b = med(by.get("new", [])), med(by.get("base", []))
        ratio = [fmt(b / n if n and b else None, ".2f")] if "base" in builds else []
        out.append("| " + " | ".join([name] + cells + ratio) + " |")
    return out


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__.strip().split("\n\n")[1].strip())
    d = sys.argv[1]
    lines = model_table(sections(os.path.join(d, "decode.txt")) + sections(os.path.join(d, "big.txt")))
    lines += [""] + kernel_table(sections(os.path.join(d, "kernels.txt")))
    text = "\n".join(lines).strip()
    if not text:
        sys.exit("summarize: no measurements under " + d)
    print(text)


if __name__ == "__main__":
    main()
