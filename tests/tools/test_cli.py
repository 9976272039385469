#!/usr/bin/env python3
"""alm-engine end to end: every command's JSON shape, agreement with the
references, sampling options, stop strings, and clear errors (non-zero exit,
one message on stderr, nothing on stdout) for bad input. TAP output."""
import json
import os
import sys
import tempfile

ENGINE = sys.argv[1]
DATA = os.environ["ALM_TEST_DATA"]
MODELS = os.environ["ALM_DEFAULT_MODELS"]
TARGET = os.path.join(MODELS, "coder-target-4bit")
SPM = os.path.join(DATA, "models", "tiny", "llama2-spm")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from engine_cli import EngineCli  # noqa: E402

cli = EngineCli(ENGINE)
ok, run, run_json, expect_error = cli.ok, cli.run, cli.run_json, cli.expect_error


greedy = json.load(open(os.path.join(DATA, "refs", "greedy.json")))["models"]["coder-target-4bit"]
case = greedy[0]

# tokenize / detokenize
r = run_json("tokenize", "--model", TARGET, "--text", case["prompt"])
ok(r == {"ids": case["prompt_ids"]}, "tokenize gives the reference prompt ids")
r = run_json("detokenize", "--model", TARGET, "--ids", ",".join(map(str, case["prompt_ids"])))
ok(r == {"text": case["prompt"]}, "detokenize gives the prompt back")
with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
    f.write(case["prompt"])
r = run_json("tokenize", "--model", TARGET, "--file", f.name)
os.unlink(f.name)
ok(r == {"ids": case["prompt_ids"]}, "tokenize --file reads the text from a file")
spm = json.load(open(os.path.join(DATA, "refs", "tiny-llama2-spm-greedy.json")))[0]
r = run_json("tokenize", "--model", SPM, "--text", spm["prompt"], "--add-special")
ok(r == {"ids": spm["prompt_ids_with_bos"]}, "tokenize --add-special adds BOS for the sentencepiece model")
r = run_json("tokenize", "--model", SPM, "--text", spm["prompt"])
ok(r == {"ids": spm["prompt_ids_with_bos"][1:]}, "tokenize adds nothing without --add-special")

# logits: the last prompt position against the reference
ids = ",".join(map(str, case["prompt_ids"]))
last = len(case["prompt_ids"]) - 1
r = run_json("logits", "--model", TARGET, "--ids", ids, "--positions", f"0,{last}")
if ok(r is not None and sorted(r["logits"]) == sorted(["0", str(last)]), "logits --positions keys"):
    ref = case["last_prompt_logits"]
    got = r["logits"][str(last)]
    worst = max(abs(a - b) for a, b in zip(got, ref)) / max(abs(b) for b in ref)
    ok(len(got) == len(ref) and worst < 1e-3, f"last prompt logits within 1e-3 x max|logit| ({worst:.2e})")
r = run_json("logits", "--model", TARGET, "--ids", "5,6,7")
ok(r is not None and sorted(r["logits"]) == ["0", "1", "2"] and len(r["logits"]["0"]) == 8192,
   "logits without --positions gives every position, whole vocabulary")

# generate
r = run_json("generate", "--model", TARGET, "--prompt-ids", ids, "--max-tokens", "48", "--ignore-eos")
ok(r is not None and r["ids"] == case["greedy_ids"], "generate --prompt-ids: greedy ids equal the reference")
ok(r is not None and r["text"] == case["greedy_text"], "generate: text equals the reference text")
stats = r["stats"] if r else {}
ok(all(k in stats for k in ("prompt_tokens", "generated_tokens", "prefill_tok_s", "decode_tok_s"))
   and stats["prompt_tokens"] == len(case["prompt_ids"]) and stats["generated_tokens"] == 48,
   "generate: stats present and counted")
DRAFT = os.path.join(MODELS, "coder-draft-4bit")
for mode in ("draft", "ngram", "hybrid"):
    spec = ["--speculative", mode] + (["--draft", DRAFT] if mode != "ngram" else [])
    r3 = run_json("generate", "--model", TARGET, "--prompt-ids", ids, "--max-tokens", "48", "--ignore-eos",
                  "--num-draft-tokens", "3", *spec)
    s3 = r3["stats"] if r3 else {}
    # verification passes: each one's proposals come from lookup or the draft
    lookup_ok = {"draft": s3.get("lookup_passes") == 0,
                 "ngram": s3.get("draft_passes") == 0 and s3.get("lookup_passes", 0) > 0,
                 "hybrid": 0 < s3.get("lookup_passes", 0) <= s3.get("target_passes", 0)}[mode]
    ok(r3 is not None and r3["ids"] == case["greedy_ids"] and s3.get("drafted", 0) > 0 and lookup_ok,
       f"generate --speculative {mode}: greedy ids equal the reference (drafted {s3.get('drafted')}, "
       f"lookup passes {s3.get('lookup_passes')}, draft passes {s3.get('draft_passes')})")
expect_error("hybrid without a draft", "--draft", "generate", "--model", TARGET, "--prompt", "x",
             "--max-tokens", "1", "--speculative", "hybrid")
r2 = run_json("generate", "--model", TARGET, "--prompt", case["prompt"], "--max-tokens", "48", "--ignore-eos")
ok(r2 is not None and r2["ids"] == case["greedy_ids"], "generate --prompt encodes like the reference")

sample = ["generate", "--model", TARGET, "--prompt", "import os\n", "--max-tokens", "24",
          "--temperature", "0.9", "--top-k", "50", "--top-p", "0.95", "--min-p", "0.01"]
a = run_json(*sample, "--seed", "7")
b = run_json(*sample, "--seed", "7")
c = run_json(*sample, "--seed", "8")
ok(a is not None and a == b or (a and b and a["ids"] == b["ids"]), "same seed, same output")
ok(a is not None and c is not None and a["ids"] != c["ids"], "another seed, another output")

# stop strings: cut before the first occurrence, finish_reason stop
full = case["greedy_text"]
stop = full[10:14]
r = run_json("generate", "--model", TARGET, "--prompt-ids", ids, "--max-tokens", "48", "--ignore-eos", "--stop", stop)
ok(r is not None and r["text"] == full[:full.find(stop)] and r["finish_reason"] == "stop",
   f"stop string {stop!r} ends the text before it")

# bench
r = run_json("bench", "--model", TARGET, "--prompt-tokens", "32", "--gen-tokens", "8", "--repeat", "2", "--threads", "1")
ok(r is not None and all(k in r["prefill_tok_s"] for k in ("median", "min", "max"))
   and r["decode_tok_s"]["median"] > 0 and "4" in r["batch_cost"], "bench JSON shape")

# errors
expect_error("unknown command", "unknown command", "frobnicate")
expect_error("missing model folder", "/nonexistent", "generate", "--model", "/nonexistent", "--prompt", "x", "--max-tokens", "1")
expect_error("id outside the vocabulary", "vocabulary", "logits", "--model", TARGET, "--ids", "1,99999")
expect_error("junk ids", "--ids", "detokenize", "--model", TARGET, "--ids", "1,x")
expect_error("position past the end", "--positions", "logits", "--model", TARGET, "--ids", "1,2", "--positions", "5")
expect_error("bad temperature", "--temperature", "generate", "--model", TARGET, "--prompt", "x", "--max-tokens", "1", "--temperature", "hot")
expect_error("negative temperature", "temperature", "generate", "--model", TARGET, "--prompt", "x", "--max-tokens", "1", "--temperature", "-1")
with tempfile.TemporaryDirectory() as d:
    for name in os.listdir(TARGET):
        if name != "model.safetensors":
            os.symlink(os.path.join(os.path.abspath(TARGET), name), os.path.join(d, name))
    with open(os.path.join(TARGET, "model.safetensors"), "rb") as src, open(os.path.join(d, "model.safetensors"), "wb") as dst:
        dst.write(src.read()[:100000])
    expect_error("truncated weights", "model.safetensors", "generate", "--model", d, "--prompt", "x", "--max-tokens", "1")

cli.done()
