#!/usr/bin/env python3
"""almd end to end, protocol side: a real almd on a temporary socket serves
generate (equal to alm-engine generate at temperature 0), 32 clients at once
without mixing them up, a client killed mid-stream (only its request is
cancelled), malformed JSON, an over-long line, an unknown method and a prompt
over max_prompt_tokens (each answered, the daemon keeps serving), access for a
non-admin peer, and chat. TAP output.

usage: test_almd_protocol.py ALMD ALM_ENGINE"""
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from almd_harness import Almd, Client, Tap, DEFAULT_MODELS, SANITIZED, engine_generate  # noqa: E402

ALMD, ENGINE = sys.argv[1], sys.argv[2]
tap = Tap()
TARGET = os.path.join(DEFAULT_MODELS, "coder-target-4bit")
PROMPTS = ["def fibonacci(n):", "import os\n\nclass Config:", "for i in range(10):",
           "def parse_args(argv):"]
N_TOKENS = 12

daemon = Almd(ALMD, tap, extra_yaml="max_request_bytes: 4096\nmax_prompt_tokens: 64\n"
                                    "max_clients: 40\n")
try:
    if not tap.ok(daemon.start(), "almd starts on the default pair and reports ready"):
        raise SystemExit

    # ------------------------------------------------------------ status
    c = daemon.client()
    st = c.call("status")["result"]
    tap.ok(st["state"] == "ready" and st["model"] == "coder-target-4bit" and st["draft_model"] == ""
           and st["pid"] == daemon.proc.pid and st["version"] and st["since"].endswith("Z"),
           f"status: ready, model, pid, version, since ({st['since']})")

    mode = os.stat(daemon.socket).st_mode & 0o777
    tap.ok(mode == 0o666 and os.stat(daemon.socket).st_gid == os.getgid(),
           f"the socket has socket_mode and socket_group ({oct(mode)})")

    # ------------------------------------------------------------ generate = alm-engine
    ref = engine_generate(ENGINE, TARGET, PROMPTS[0], N_TOKENS)
    events, final = c.generate(prompt=PROMPTS[0], max_tokens=N_TOKENS, temperature=0)
    res = final.get("result", {}) if final else {}
    tap.ok(final and final.get("event") == "done" and res.get("ids") == ref["ids"],
           f"generate at temperature 0 gives alm-engine generate's ids ({res.get('ids')} vs {ref['ids']})")
    streamed = "".join(e["text"] for e in events if e["event"] == "token")
    tap.ok(streamed == res.get("text") == ref["text"], "the token events add up to the final text")
    stats = res.get("stats", {})
    tap.ok(all(k in stats for k in ("prompt_tokens", "generated_tokens", "prefill_tok_s",
                                    "decode_tok_s", "finish_reason", "drafted", "accepted",
                                    "acceptance_rate", "accepted_by_position",
                                    "tokens_per_target_pass"))
           and stats["generated_tokens"] == len(ref["ids"]) and stats["finish_reason"] == "length",
           "done carries the stats (tokens, speeds, finish reason, speculation counters)")
    # Same prompt again: the cached prefix must not change the output.
    _, again = c.generate(prompt=PROMPTS[0], max_tokens=N_TOKENS, temperature=0)
    tap.ok(again["result"]["ids"] == ref["ids"] and again["result"]["stats"]["cached_prompt_tokens"] > 0,
           "a repeated prompt reuses the cached prefix and gives the same ids")

    # Settings give the defaults for absent params: max_tokens from config.
    c.call("config.set", {"key": "max_tokens", "value": 3})
    _, final = c.generate(prompt=PROMPTS[1], temperature=0)
    tap.ok(final["result"]["stats"]["generated_tokens"] == 3,
           "an absent max_tokens takes the stored setting at once (no restart)")
    c.call("config.unset", {"key": "max_tokens"})

    # ------------------------------------------------------------ 32 clients
    expected = {}
    for p in PROMPTS:
        _, f = c.generate(prompt=p, max_tokens=N_TOKENS, temperature=0)
        expected[p] = f["result"]["ids"]
    n_clients = 32
    results = [None] * n_clients
    barrier = threading.Barrier(n_clients)

    def one_client(i):
        try:
            cl = daemon.client(timeout=300)
            barrier.wait(30)
            prompt = PROMPTS[i % len(PROMPTS)]
            id = f"client-{i}"
            cl.send("generate", {"prompt": prompt, "max_tokens": N_TOKENS, "temperature": 0}, id=id)
            events, final = cl.read_until_end(id)
            text = "".join(e["text"] for e in events)
            results[i] = (prompt, final, text)
            cl.close()
        except Exception as e:  # noqa: BLE001
            results[i] = (None, None, repr(e))

    threads = [threading.Thread(target=one_client, args=(i,)) for i in range(n_clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    good = 0
    for i, (prompt, final, text) in enumerate(results):
        if (prompt and final and final.get("id") == f"client-{i}" and final.get("event") == "done"
                and final["result"]["ids"] == expected[prompt] and final["result"]["text"] == text):
            good += 1
        else:
            tap.diag(f"client {i}: {final} {text[:200]}")
    tap.ok(good == n_clients, f"32 clients generating at once: {good} got exactly their own output")

    # One connection pipelining more requests than almd takes in flight from
    # it (64): the rest wait in the socket, and every one is answered.
    pipe = daemon.client(timeout=300)
    n_pipelined = 100
    for i in range(n_pipelined):
        pipe.send("generate", {"prompt": PROMPTS[i % 4], "max_tokens": 1, "temperature": 0}, id=i)
    answered = {}
    while len(answered) < n_pipelined:
        m = pipe.read_line()
        if m is None:
            break
        if m.get("event") != "token":
            answered[m["id"]] = m
    tap.ok(list(answered) == list(range(n_pipelined))
           and all(answered[i]["result"]["ids"] == expected[PROMPTS[i % 4]][:1] for i in answered),
           f"{n_pipelined} requests pipelined on one connection: all answered, first in first out")
    pipe.close()

    # Fairness: A queues three requests, B one while A's first runs; B gets
    # its turn before A's third. The request log (written as each finishes)
    # tells the order; prompts of different lengths tell the requests apart.
    import sqlite3
    a, b = daemon.client(), daemon.client()
    line = "x = 1\n"
    for k, n in ((1, 64), (2, 4), (3, 4)):
        a.send("generate", {"prompt": line * k, "max_tokens": n, "temperature": 0}, id=f"a{k}")
    first_a = a.read_line()
    b.send("generate", {"prompt": line * 5, "max_tokens": 4, "temperature": 0}, id="b")
    b.read_until_end("b")
    ends = 0
    while ends < 3:
        m = a.read_line()
        if m is None:
            break
        ends += m.get("event") != "token"
    db = sqlite3.connect(f"file:{daemon.database}?mode=ro", uri=True)
    rows = [r[0] for r in db.execute("SELECT prompt_tokens FROM request_log ORDER BY id DESC LIMIT 4")]
    db.close()
    rows.reverse()
    tap.ok(first_a and first_a.get("id") == "a1" and len(rows) == 4 and rows[2] > rows[3] > rows[1] > rows[0],
           f"fair queue: A1, A2, then B, then A3 (prompt tokens in finishing order {rows})")
    a.close()
    b.close()

    # ------------------------------------------------------------ killed client
    killer = subprocess.Popen([sys.executable, "-c", f"""
import json, socket, sys
s = socket.socket(socket.AF_UNIX); s.connect({daemon.socket!r})
s.sendall(json.dumps({{"id": 1, "method": "generate", "params": {{"prompt": "def main():",
          "max_tokens": 100000, "temperature": 0.8, "seed": 1}}}}).encode() + b"\\n")
f = s.makefile("rb")
f.readline()
print("streaming", flush=True)
f.readline()
import time; time.sleep(60)
"""], stdout=subprocess.PIPE, text=True)
    line = killer.stdout.readline()
    other = daemon.client()
    other_id = other.send("generate", {"prompt": PROMPTS[2], "max_tokens": N_TOKENS, "temperature": 0})
    killer.kill()
    killer.wait()
    events, final = other.read_until_end(other_id)
    tap.ok(line.strip() == "streaming" and final and final.get("event") == "done"
           and final["result"]["ids"] == expected[PROMPTS[2]],
           "a client killed mid-stream: the request queued behind it still completes, correctly")
    deadline = time.time() + 30
    while time.time() < deadline and "cancelled after" not in daemon.log_text():
        time.sleep(0.1)
    tap.ok("cancelled after" in daemon.log_text(),
           "the killed client's request was cancelled (not run to its 100000 tokens)")
    st = other.call("status")["result"]
    tap.ok(st["queued"] == 0, "nothing of the killed client stays queued")
    other.close()

    # ------------------------------------------------------------ bad input
    bad = daemon.client()
    bad.send_raw(b'{"id": 1, "method": "status"\n')
    m = bad.read_line()
    tap.ok(m and m["error"]["code"] == "bad_request" and m["id"] is None,
           f"malformed JSON: bad_request ({m and m['error']['message']})")
    tap.ok(bad.at_eof(), "... and the connection is closed")
    bad.close()

    bad = daemon.client()
    bad.send_raw(b'{"id": 2, "method": "generate", "params": {"prompt": "' + b"x" * 8000 + b'"}}\n')
    m = bad.read_line()
    tap.ok(m and m["error"]["code"] == "too_large", "a line over max_request_bytes: too_large")
    tap.ok(bad.at_eof(), "... and the connection is closed")
    bad.close()

    c2 = daemon.client()
    m = c2.call("reboot")
    tap.ok(m["error"]["code"] == "unknown_method" and "generate" in m["error"]["message"],
           "unknown method: unknown_method, listing the known ones")
    m = c2.call("status")
    tap.ok("result" in m, "... and the same connection keeps being served")
    long_prompt = " ".join(f"word{i}" for i in range(200))
    _, m = c2.generate(prompt=long_prompt, max_tokens=2)
    tap.ok(m["error"]["code"] == "too_large" and "max_prompt_tokens" in m["error"]["message"],
           f"a prompt over max_prompt_tokens: too_large ({m['error']['message']})")
    m = c2.call("generate", {"prompt": "x", "tmperature": 1})
    tap.ok(m["error"]["code"] == "bad_request", "a misspelt parameter: bad_request")
    _, m = c2.generate(prompt=PROMPTS[3], max_tokens=N_TOKENS, temperature=0)
    tap.ok(m.get("event") == "done" and m["result"]["ids"] == expected[PROMPTS[3]],
           "after all that, the daemon still generates correctly")
    c2.close()

    # A client that sends its request and shuts down its sending side (as
    # `echo ... | socat` does) still gets the whole stream.
    half = daemon.client()
    half.send("generate", {"prompt": PROMPTS[1], "max_tokens": N_TOKENS, "temperature": 0}, id="half")
    half.sock.shutdown(socket.SHUT_WR)
    events, final = half.read_until_end("half")
    tap.ok(final and final.get("event") == "done" and final["result"]["ids"] == expected[PROMPTS[1]],
           "a half-closed client still gets its whole reply")
    tap.ok(half.at_eof(), "... and then the daemon closes the connection")
    half.close()

    # max_clients (40): with c open, 39 more fit and the next is refused.
    deadline = time.time() + 10
    while time.time() < deadline and c.call("status")["result"]["clients"] != 1:
        time.sleep(0.05)
    many = [daemon.client() for _ in range(39)]
    for cl in many:
        cl.call("status")
    extra = daemon.client()
    m = extra.read_line()
    tap.ok(m and m["error"]["code"] == "busy" and "max_clients" in m["error"]["message"],
           "a connection over max_clients gets busy and is closed")
    extra.close()
    for cl in many:
        cl.close()

    # ------------------------------------------------------------ chat
    _, plain = c.generate(prompt="hello", max_tokens=2, temperature=0)
    _, chat = c.generate(prompt="hello", max_tokens=2, temperature=0, chat=True)
    ok_chat = chat.get("event") == "done"
    tap.ok(ok_chat and chat["result"]["stats"]["prompt_tokens"] >= plain["result"]["stats"]["prompt_tokens"] + 5,
           f"chat: true wraps the prompt in the model's template ({chat})"[:300])

    # ------------------------------------------------------------ access
    def as_nobody(requests):
        """Runs requests on a connection made by uid/gid 65534; returns the replies."""
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            try:
                os.setgroups([])
                os.setgid(65534)
                os.setuid(65534)
                cl = Client(daemon.socket, 30)
                out = [cl.call(m, p) for m, p in requests]
                os.write(w, json.dumps(out).encode())
            except Exception as e:  # noqa: BLE001
                os.write(w, json.dumps([repr(e)]).encode())
            os._exit(0)
        os.close(w)
        data = b""
        while True:
            chunk = os.read(r, 65536)
            if not chunk:
                break
            data += chunk
        os.close(r)
        os.waitpid(pid, 0)
        return json.loads(data)

    if os.getuid() == 0:
        replies = as_nobody([("config.set", {"key": "temperature", "value": 1}),
                             ("restart", None), ("config.unset", {"key": "top_k"}),
                             ("status", None), ("config.get", {"key": "temperature"})])
        tap.diag(str(replies)[:400])
        ok_ = isinstance(replies[0], dict)
        tap.ok(ok_ and replies[0]["error"]["code"] == "forbidden" and "alm-admin" in replies[0]["error"]["message"],
               "a non-admin peer is refused config.set, naming the admin group")
        tap.ok(ok_ and replies[1]["error"]["code"] == "forbidden", "... and restart")
        tap.ok(ok_ and replies[2]["error"]["code"] == "forbidden", "... and config.unset")
        tap.ok(ok_ and "result" in replies[3] and replies[4]["result"]["value"] == "0",
               "... but may use status and config.get (nothing was changed)")
    else:
        # Not root: a second almd whose admin_group this user is not in.
        import grp
        import pwd
        me = pwd.getpwuid(os.getuid()).pw_name
        mine = set(os.getgroups()) | {os.getgid()}
        others = [g.gr_name for g in grp.getgrall() if g.gr_gid not in mine and me not in g.gr_mem]
        if not others:
            tap.diag("SKIP access: no group this user is outside of")
        else:
            guarded = Almd(ALMD, tap, extra_yaml=f"admin_group: {others[0]}\n")
            try:
                guarded.start()
                gc = guarded.client()
                m1 = gc.call("config.set", {"key": "temperature", "value": 1})
                m2 = gc.call("restart")
                m3 = gc.call("status")
                tap.ok(m1["error"]["code"] == "forbidden" and others[0] in m1["error"]["message"],
                       f"a non-admin peer is refused config.set, naming the admin group ({others[0]})")
                tap.ok(m2["error"]["code"] == "forbidden", "... and restart")
                tap.ok("result" in m3, "... but may use status")
                gc.close()
            finally:
                guarded.stop()
                guarded.cleanup()
    c.close()
except SystemExit:
    pass
except Exception as e:  # noqa: BLE001
    import traceback
    tap.ok(False, f"no unexpected exception ({e!r})")
    tap.diag(traceback.format_exc())
finally:
    code = daemon.stop()
    tap.ok(code == 0, f"SIGTERM: almd exits 0 (got {code})")
    tap.ok(not os.path.exists(daemon.socket), "... and removes its socket")
    if tap.failed:
        tap.diag(daemon.log_text()[-6000:])
    daemon.cleanup()
sys.exit(tap.done())
