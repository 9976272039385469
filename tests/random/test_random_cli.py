#!/usr/bin/env python3
"""alm-engine bench --random and convert from the command line: the JSON
they print (preset, bytes, roofline, synthetic acceptance), that a converted
folder serves alm-engine like any other, and clear errors (non-zero exit,
one message on stderr, nothing on stdout). TAP output."""
import json
import os
import shutil
import sys
import tempfile

ENGINE = sys.argv[1]
DATA = os.environ["ALM_TEST_DATA"]
MODELS = os.environ["ALM_DEFAULT_MODELS"]
TINY = os.path.join(DATA, "models", "tiny", "llama3-rope")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
from engine_cli import EngineCli  # noqa: E402

cli = EngineCli(ENGINE)
ok, run, run_json, expect_error = cli.ok, cli.run, cli.run_json, cli.expect_error


QUICK = ["--prompt-tokens", "16", "--gen-tokens", "24", "--repeat", "1"]

# bench --random: the usual JSON plus the preset, bytes and roofline
r = run_json("bench", "--random", "tiny", "--q-bits", "8", "--q-group-size", "32",
             "--bandwidth-gbs", "100", *QUICK)
ok(r is not None and r["model"] == "random:tiny" and r["random_preset"] == "tiny"
   and r["q_bits"] == 8 and r["q_group_size"] == 32 and r["weight_bytes"] > 0
   and 0 < r["decode_bytes_per_token"] < r["weight_bytes"] and r["decode_tok_s"]["median"] > 0,
   "bench --random tiny: preset, bits, weight and per-token bytes, decode speed")
ok(r is not None and abs(r["roofline_decode_tok_s"] - 100e9 / r["decode_bytes_per_token"]) < 1e-6 * r["roofline_decode_tok_s"]
   and abs(r["roofline_fraction"] - r["decode_tok_s"]["median"] / r["roofline_decode_tok_s"]) < 1e-9,
   "bench --bandwidth-gbs: roofline = bandwidth / bytes per token, fraction = decode / roofline")
r = run_json("bench", "--random", "tiny-qwen2", "--q-bits", "0", *QUICK)
ok(r is not None and r["q_bits"] == 0 and "roofline_decode_tok_s" not in r,
   "bench --random --q-bits 0: BF16 weights, no roofline without a bandwidth")

# speculative comparison on a random pair, with synthetic acceptance
r = run_json("bench", "--random", "tiny", "--draft-random", "tiny-draft", "--synthetic-acceptance", "0.8",
             "--num-draft-tokens", "4", "--prompt-tokens", "16", "--gen-tokens", "300", "--repeat", "1")
ok(r is not None and r["speculative"] == "draft" and r["synthetic_acceptance"] == 0.8
   and abs(r["verified_acceptance"] - 0.8) < 0.08 and r["runs_diverged"] == 0
   and r["tokens_per_target_pass"] > 2,
   f"bench --synthetic-acceptance 0.8: verified acceptance {r and r['verified_acceptance']:.3f}, "
   f"{r and r['tokens_per_target_pass']:.2f} tokens per target pass, output as plain greedy")
r = run_json("bench", "--random", "tiny", "--draft-random", "tiny-draft", *QUICK)
ok(r is not None and r["speculative"] == "draft" and "synthetic_acceptance" not in r,
   "bench --draft-random without synthetic acceptance: the plain speculative comparison")

expect_error("unknown preset", "llama9", "bench", "--random", "llama9", *QUICK)
expect_error("3-bit random model", "3 bits", "bench", "--random", "tiny", "--q-bits", "3", *QUICK)
expect_error("--model and --random", "one of them", "bench", "--random", "tiny", "--model", TINY, *QUICK)
expect_error("neither --model nor --random", "--random", "bench", *QUICK)
expect_error("synthetic acceptance without a draft", "draft", "bench", "--random", "tiny",
             "--synthetic-acceptance", "0.5", *QUICK)
expect_error("synthetic acceptance when sampling", "--temperature 0", "bench", "--random", "tiny",
             "--draft-random", "tiny-draft", "--synthetic-acceptance", "0.5", "--temperature", "0.7", *QUICK)
expect_error("synthetic acceptance above 1", "from 0 to 1", "bench", "--random", "tiny",
             "--draft-random", "tiny-draft", "--synthetic-acceptance", "1.5", *QUICK)
expect_error("non-positive bandwidth", "positive", "bench", "--random", "tiny", "--bandwidth-gbs", "0", *QUICK)
expect_error("--draft and --draft-random", "one draft", "bench", "--random", "tiny", "--draft-random",
             "tiny-draft", "--draft", TINY, *QUICK)

# convert: a folder alm-engine then uses like any other
tmp = tempfile.mkdtemp(prefix="alm-convert-cli-")
try:
    dst = os.path.join(tmp, "tiny-4bit")
    r = run_json("convert", "--q-bits", "4", "--q-group-size", "64", TINY, dst)
    ok(r is not None and r["q_bits"] == 4 and r["q_group_size"] == 64 and r["shards"] == 1
       and r["tensors_quantized"] > 0 and r["bytes_out"] == os.path.getsize(os.path.join(dst, "model.safetensors")),
       "convert prints what it wrote")
    cfg = json.load(open(os.path.join(dst, "config.json")))
    ok(cfg["quantization"] == {"group_size": 64, "bits": 4} and cfg["quantization_config"] == cfg["quantization"]
       and os.path.exists(os.path.join(dst, "tokenizer.json"))
       and os.path.exists(os.path.join(dst, "model.safetensors.index.json")),
       "converted folder: quantization in config.json, tokenizer and index present")
    g = run_json("generate", "--model", dst, "--prompt", "def f(x):", "--max-tokens", "8", "--ignore-eos")
    ok(g is not None and len(g["ids"]) == 8, "alm-engine generate runs on the converted folder")
    expect_error("convert into a non-empty folder", "not empty", "convert", "--q-bits", "4", TINY, dst)
    expect_error("convert without --q-bits", "--q-bits", "convert", TINY, os.path.join(tmp, "x"))
    expect_error("convert of a quantized model", "already quantized", "convert", "--q-bits", "4",
                 os.path.join(MODELS, "coder-draft-4bit"), os.path.join(tmp, "y"))
    expect_error("convert with groups of 128 on 64 columns", "group size 128", "convert", "--q-bits", "4",
                 "--q-group-size", "128", TINY, os.path.join(tmp, "z"))
    ok(not os.path.exists(os.path.join(tmp, "y")) and not os.path.exists(os.path.join(tmp, "z"))
       and sorted(os.listdir(tmp)) == ["tiny-4bit"], "refused conversions leave nothing behind")
finally:
    shutil.rmtree(tmp)

cli.done()
