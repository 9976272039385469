#!/usr/bin/env python3
"""almd end to end, lifecycle side: command line and start-up errors,
config get/set/list/unset with a refusal for a bad value of every key and for
an incompatible draft, restart with a draft (stats show drafted/accepted), a
failed restart that keeps the old models serving, settings that survive an
almd restart and a kill -9 during a burst of config.set, SIGTERM with requests
running and queued, and socket activation with READY=1/STATUS= seen on
NOTIFY_SOCKET. TAP output.

usage: test_almd_lifecycle.py ALMD"""
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from almd_harness import Almd, Client, Tap, DEFAULT_MODELS, SLOW  # noqa: E402

ALMD = sys.argv[1]
tap = Tap()
PROMPT = "def fibonacci(n):"


def run_almd(*args, timeout=60):
    p = subprocess.run([ALMD, *args], capture_output=True, text=True, timeout=timeout * SLOW)
    return p.returncode, p.stdout, p.stderr


def error_code(reply):
    return reply.get("error", {}).get("code") if reply else None


daemon = Almd(ALMD, tap)
try:
    # ------------------------------------------------------------ command line
    code, out, _ = run_almd("--version")
    tap.ok(code == 0 and out.startswith("almd "), f"--version ({out.strip()})")
    code, out, _ = run_almd("--help")
    tap.ok(code == 0 and "config.set" in out and "--config" in out,
           "--help lists the options and the methods from the protocol table")
    code, out, _ = run_almd("--config", daemon.config, "--check-config")
    tap.ok(code == 0 and daemon.socket in out and not os.path.exists(daemon.database),
           "--check-config reads the file, prints it, touches nothing")
    bad_yaml = os.path.join(daemon.root, "bad.yaml")
    with open(bad_yaml, "w") as f:
        f.write("socket: /tmp/x.sock\nmax_clients: [1\n")
    code, out, err = run_almd("--config", bad_yaml)
    tap.ok(code == 1 and f"{bad_yaml}:" in err and err.count("\n") == 1,
           f"bad YAML: exit 1 with FILE:LINE:COL ({err.strip()})")
    with open(bad_yaml, "w") as f:
        f.write("sockt: /tmp/x.sock\n")
    code, out, err = run_almd("--config", bad_yaml)
    tap.ok(code == 1 and f"{bad_yaml}:1:1:" in err and "sockt" in err,
           f"unknown key: exit 1 with FILE:LINE:COL ({err.strip()})")
    with open(daemon.config) as f:
        no_group_yaml = f.read().replace("socket_group: ", "socket_group: no-such-group-", 1)
    with open(bad_yaml, "w") as f:
        f.write(no_group_yaml)
    code, out, err = run_almd("--config", bad_yaml)
    tap.ok(code == 1 and "no-such-group-" in err and "no such group" in err,
           f"a socket_group that does not exist: exit 1 ({err.strip()})")
    code, out, err = run_almd("--bogus")
    tap.ok(code == 2, "an unknown option: exit 2")

    garbage = os.path.join(daemon.root, "garbage.db")
    with open(garbage, "wb") as f:
        f.write(b"this is not a database" * 100)
    with open(daemon.config) as f:
        yaml_text = f.read()
    garbage_yaml = os.path.join(daemon.root, "garbage.yaml")
    with open(garbage_yaml, "w") as f:
        f.write(yaml_text.replace(daemon.database, garbage).replace("almd.sock", "g.sock"))
    code, out, err = run_almd("--config", garbage_yaml)
    with open(garbage, "rb") as f:
        intact = f.read() == b"this is not a database" * 100
    tap.ok(code == 1 and garbage in err and intact,
           f"a database it cannot read: exit 1, file untouched ({err.strip()})")

    # ------------------------------------------------------------ config
    if not tap.ok(daemon.start(), "almd starts"):
        raise SystemExit
    c = daemon.client(timeout=120)
    listing = c.call("config.list")["result"]["settings"]
    keys = [s["key"] for s in listing]
    tap.ok(keys[:3] == ["model", "draft_model", "num_draft_tokens"] and len(keys) == 13
           and all(s["is_default"] for s in listing),
           f"config.list: every key, defaults ({', '.join(keys)})")
    g = c.call("config.get", {"key": "num_draft_tokens"})["result"]
    tap.ok(g["value"] == "4" and g["is_default"] and g["default"] == "4", "config.get of a default")
    bad_values = {
        "model": ["", "../etc", "no-such-model"],
        "draft_model": ["no-such-draft", "llama2-spm"],
        "num_draft_tokens": [0, 17, "x", 2.5],
        "speculative": ["fast", 1],
        "draft_p_min": [-0.1, 1, "nan"],
        "threads": [-1, 1025, "many"],
        "device": ["tpu"],
        "context_length": [15, 1048577],
        "temperature": [-1, "inf"],
        "top_p": [0, 1.5],
        "top_k": [-1, "k"],
        "min_p": [-0.5, 2],
        "max_tokens": [0, "lots"],
    }
    before = {s["key"]: s["value"] for s in listing}
    refused_all = True
    for key, values in bad_values.items():
        for v in values:
            m = c.call("config.set", {"key": key, "value": v})
            if error_code(m) not in ("invalid_value", "not_found") or not m["error"]["message"]:
                refused_all = False
                tap.diag(f"{key}={v!r}: {m}")
    after = {s["key"]: s["value"] for s in c.call("config.list")["result"]["settings"]}
    tap.ok(refused_all and before == after,
           "a bad value of every key is refused with a message, and nothing is stored")
    m = c.call("config.set", {"key": "draft_model", "value": "llama2-spm"})
    tap.ok(error_code(m) == "invalid_value" and "does not fit" in m["error"]["message"],
           f"a draft with another vocabulary is refused ({m['error']['message'][:150]})")
    m = c.call("config.set", {"key": "model", "value": "no-such-model"})
    tap.ok(error_code(m) == "not_found", f"a model that resolves to nothing: not_found ({m['error']['message']})")
    broken = os.path.join(daemon.root, "models", "broken")
    os.makedirs(broken)
    with open(os.path.join(broken, "config.json"), "w") as f:
        f.write("{ not json")
    m = c.call("config.set", {"key": "model", "value": broken})
    tap.ok(error_code(m) == "invalid_value", f"a folder that does not load: invalid_value ({m['error']['message'][:150]})")
    m = c.call("config.set", {"key": "colour", "value": 1})
    tap.ok(error_code(m) == "not_found" and "num_draft_tokens" in m["error"]["message"],
           "an unknown key: not_found, listing the keys")
    m = c.call("config.set", {"key": "temperature", "value": "0.50"})["result"]
    tap.ok(m["value"] == "0.5" and m["changed"] and not m["restart_needed"],
           "config.set stores the normalized value; sampling needs no restart")
    m = c.call("config.set", {"key": "threads", "value": 1})["result"]
    tap.ok(m["restart_needed"], "threads: restart_needed")
    m = c.call("config.unset", {"key": "temperature"})["result"]
    g = c.call("config.get", {"key": "temperature"})["result"]
    tap.ok(m["value"] == "0" and m["changed"] and g["is_default"], "config.unset returns to the default")

    # ------------------------------------------------------------ restart with a draft
    _, base = c.generate(prompt=PROMPT, max_tokens=24, temperature=0)
    base_ids = base["result"]["ids"]
    m = c.call("config.set", {"key": "draft_model", "value": "coder-draft-4bit"})["result"]
    tap.ok(m["value"] == "coder-draft-4bit" and m["restart_needed"], "config.set draft_model: restart_needed")
    c.call("config.set", {"key": "num_draft_tokens", "value": 3})
    # the draft loads at the restart below: until then hybrid has no draft model
    c.call("config.set", {"key": "speculative", "value": "hybrid"})
    _, lookup = c.generate(prompt=PROMPT, max_tokens=24, temperature=0)
    tap.ok(lookup["result"]["ids"] == base_ids and lookup["result"]["stats"]["speculative"] == "ngram",
           f"speculative hybrid without a draft model: lookup alone, same ids "
           f"({lookup['result']['stats']['speculative']})")
    c.call("config.unset", {"key": "speculative"})
    rid = c.send("restart")
    second = c.send("restart")
    # Lines of both come interleaved: the busy reply comes at once.
    events, finals = [], {}
    while len(finals) < 2:
        m = c.read_line()
        if m is None:
            break
        if "event" in m and m["event"] != "done":
            events.append(m)
        else:
            finals[m["id"]] = m
    final, busy = finals.get(rid), finals.get(second)
    tap.ok(final and final.get("event") == "done" and final["result"]["draft_model"] == "coder-draft-4bit"
           and any("coder-draft-4bit" in e.get("message", "") for e in events),
           f"restart: progress events, then done with the draft ({len(events)} events)")
    tap.ok(error_code(busy) == "busy", f"a second restart while one runs: busy ({busy})")
    st = c.call("status")["result"]
    tap.ok(st["draft_model"] == "coder-draft-4bit" and st["threads"] == 1, "status shows the new draft and threads")
    _, spec = c.generate(prompt=PROMPT, max_tokens=24, temperature=0)
    s = spec["result"]["stats"]
    tap.ok(spec["result"]["ids"] == base_ids and s["drafted"] > 0 and s["accepted"] > 0
           and s["speculative"] == "draft" and len(s["accepted_by_position"]) == 3,
           f"generate with the draft: same ids, drafted {s['drafted']}, accepted {s['accepted']}")
    _, nodraft = c.generate(prompt=PROMPT, max_tokens=24, temperature=0, draft=False)
    tap.ok(nodraft["result"]["ids"] == base_ids and nodraft["result"]["stats"]["drafted"] == 0,
           "draft: false generates without the draft")
    c.call("config.set", {"key": "speculative", "value": "hybrid"})
    _, hyb = c.generate(prompt=PROMPT, max_tokens=24, temperature=0)
    hs = hyb["result"]["stats"]
    tap.ok(hyb["result"]["ids"] == base_ids and hs["speculative"] == "hybrid" and hs["drafted"] > 0,
           f"speculative hybrid (lookup, else the draft): same ids, drafted {hs['drafted']}")
    c.call("config.unset", {"key": "speculative"})
    stats = c.call("stats")["result"]
    tap.ok(stats["drafted"] >= s["drafted"] and stats["accepted"] >= s["accepted"]
           and 0 < stats["acceptance_rate"] <= 1 and stats["draft_model"] == "coder-draft-4bit"
           and stats["requests"] >= 3 and stats["memory_bytes"] > 8 << 20
           and len(stats["accepted_by_position"]) == 3,
           f"stats: drafted {stats['drafted']}, accepted {stats['accepted']}, "
           f"rate {stats['acceptance_rate']:.2f}, memory {stats['memory_bytes']}")

    # ------------------------------------------------------------ failed restart
    mine = os.path.join(daemon.root, "models", "mytarget")
    shutil.copytree(os.path.join(DEFAULT_MODELS, "coder-target-4bit"), mine)
    m = c.call("config.set", {"key": "model", "value": mine})
    _, final = c.read_until_end(c.send("restart"))
    tap.ok("result" in m and final.get("event") == "done" and final["result"]["model"] == mine,
           "restart onto a model given by its folder")
    shutil.rmtree(mine)
    events, final = c.read_until_end(c.send("restart"))
    tap.ok(error_code(final) == "not_found" and "keep serving" in final["error"]["message"],
           f"restart after the model folder was removed: an error ({final['error']['message'][:160]})")
    st = c.call("status")["result"]
    _, after_fail = c.generate(prompt=PROMPT, max_tokens=24, temperature=0)
    tap.ok(st["state"] == "ready" and st["model"] == mine and after_fail["result"]["ids"] == base_ids,
           "... and the old models keep serving")
    shutil.copytree(os.path.join(DEFAULT_MODELS, "coder-target-4bit"), mine)
    with open(os.path.join(mine, "model.safetensors"), "r+b") as f:
        f.write(b"\xff" * 16)
    events, final = c.read_until_end(c.send("restart"))
    tap.ok(error_code(final) == "invalid_value", f"restart onto a corrupted model: an error ({final.get('error', {}).get('message', '')[:160]})")
    _, after_fail = c.generate(prompt=PROMPT, max_tokens=24, temperature=0)
    tap.ok(after_fail["result"]["ids"] == base_ids, "... and the old models keep serving")
    c.call("config.unset", {"key": "model"})

    # ------------------------------------------------------------ persistence
    c.call("config.set", {"key": "top_k", "value": 7})
    c.call("config.set", {"key": "speculative", "value": "NGRAM"})
    c.close()
    code = daemon.stop()
    tap.ok(code == 0, f"SIGTERM: exit 0 ({code})")
    tap.ok(daemon.start(), "almd starts again on the same database")
    c = daemon.client(timeout=120)
    vals = {s["key"]: s["value"] for s in c.call("config.list")["result"]["settings"]}
    st = c.call("status")["result"]
    tap.ok(vals["top_k"] == "7" and vals["speculative"] == "ngram" and vals["num_draft_tokens"] == "3"
           and st["draft_model"] == "coder-draft-4bit" and st["model"] == "coder-target-4bit",
           "settings survive a restart of almd, and the stored draft is loaded at start")
    stats = c.call("stats")["result"]
    tap.ok(stats["requests"] >= 5 and stats["drafted"] > 0, "the request log survives too (stats)")

    # ------------------------------------------------------------ kill -9 during config.set
    n = 400
    for i in range(n):
        c.send("config.set", {"key": "max_tokens", "value": 1000 + i}, id=f"set-{i}")
    got = 0
    while got < 20:
        m = c.read_line()
        got += 1 if m and "result" in m else 0
    code = daemon.stop(signal.SIGKILL)
    c.close()
    db = sqlite3.connect(f"file:{daemon.database}?mode=ro", uri=True)
    integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
    stored = db.execute("SELECT value FROM settings WHERE key = 'max_tokens'").fetchone()
    last = db.execute("SELECT new_value FROM setting_history WHERE key = 'max_tokens' "
                      "ORDER BY id DESC LIMIT 1").fetchone()
    db.close()
    tap.ok(integrity == "ok" and stored and last and stored[0] == last[0]
           and 1000 + got - 1 <= int(stored[0]) < 1000 + n,
           f"kill -9 during a burst of config.set: the database is consistent "
           f"(max_tokens {stored and stored[0]}, {got} replies seen)")
    tap.ok(os.path.exists(daemon.socket), "the killed almd left its socket file behind")
    tap.ok(daemon.start(), "almd starts again (the stale socket is replaced)")
    c = daemon.client(timeout=120)
    g = c.call("config.get", {"key": "max_tokens"})["result"]
    tap.ok(g["value"] == stored[0], "... with the setting as committed")

    # Another almd on the same socket refuses to start.
    code, out, err = run_almd("--config", daemon.config)
    tap.ok(code == 1 and "already listening" in err, f"a second almd on the same socket: exit 1 ({err.strip()})")
    tap.ok(c.call("status").get("result", {}).get("state") == "ready", "... and the first keeps serving")

    # ------------------------------------------------------------ no model at start
    # A stored model that went away: almd still starts (so that `alm config
    # set` can fix it), says why, and a restart recovers.
    gone = os.path.join(daemon.root, "models", "gone")
    shutil.copytree(os.path.join(DEFAULT_MODELS, "coder-target-4bit"), gone)
    c.call("config.set", {"key": "model", "value": gone})
    c.close()
    daemon.stop()
    shutil.rmtree(gone)
    tap.ok(daemon.start(), "almd starts although the stored model folder is gone")
    c = daemon.client(timeout=120)
    st = c.call("status")["result"]
    tap.ok(st["state"] == "no_model" and "gone" in st["load_error"],
           f"status says no model is loaded, and why ({st['load_error'][:120]})")
    _, m = c.generate(prompt=PROMPT, max_tokens=2)
    tap.ok(error_code(m) == "internal" and "no model is loaded" in m["error"]["message"],
           "generate answers with the reason")
    c.call("config.unset", {"key": "model"})
    _, final = c.read_until_end(c.send("restart"))
    _, m = c.generate(prompt=PROMPT, max_tokens=24, temperature=0)
    tap.ok(final.get("event") == "done" and m.get("event") == "done" and m["result"]["ids"] == base_ids,
           "config.unset model and restart: serving again")

    # ------------------------------------------------------------ SIGTERM with work
    c.call("config.set", {"key": "speculative", "value": "off"})
    c1, c2 = daemon.client(), daemon.client()
    # ignore_eos: it must still be running when SIGTERM comes (it runs to
    # the end of the context, about a second even on a fast machine)
    r1 = c1.send("generate", {"prompt": PROMPT, "max_tokens": 100000, "temperature": 0.8,
                              "ignore_eos": True})
    r2 = c2.send("generate", {"prompt": PROMPT, "max_tokens": 10, "temperature": 0})
    first = c1.read_line()
    # Both are read while almd stops: a reader that waited for the exit
    # could fill its socket buffer and stall the last lines.
    rest, final2 = [first], []

    def drain(cl, out):
        while True:
            m = cl.read_line()
            if m is None:
                return
            out.append(m)

    readers = [threading.Thread(target=drain, args=(c1, rest)),
               threading.Thread(target=drain, args=(c2, final2))]
    for t in readers:
        t.start()
    time.sleep(0.1)
    code = daemon.stop()
    for t in readers:
        t.join(60)
    final2 = final2[-1] if final2 else None
    tap.ok(code == 0, f"SIGTERM with a request running and one queued: exit 0 ({code})")
    tap.ok(error_code(rest[-1]) == "cancelled" and rest[-1]["id"] == r1,
           f"... the running request ends with cancelled ({rest[-1]})")
    tap.ok(error_code(final2) == "cancelled" or (final2 or {}).get("event") == "done",
           f"... the queued one is answered ({final2})")
    c.close()
    c1.close()
    c2.close()

    # ------------------------------------------------------------ socket activation
    activate = shutil.which("systemd-socket-activate")
    if not activate:
        tap.diag("SKIP socket activation: systemd-socket-activate is not installed")
    else:
        notify_path = os.path.join(daemon.root, "notify.sock")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        listener.bind(notify_path)
        listener.settimeout(60 * SLOW)
        act_socket = os.path.join(daemon.root, "activated.sock")
        # WATCHDOG_USEC without WATCHDOG_PID applies to whichever process
        # gets it: almd must then ping at least every half of it.
        env_args = ["-E", f"NOTIFY_SOCKET={notify_path}", "-E", "WATCHDOG_USEC=400000"]
        for var in ("ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS"):
            if var in os.environ:
                env_args += ["-E", f"{var}={os.environ[var]}"]
        logf = open(daemon.log, "a")
        proc = subprocess.Popen([activate, "-l", act_socket, *env_args, ALMD, "--config", daemon.config],
                                stdout=logf, stderr=logf)
        logf.close()
        deadline = time.time() + 30 * SLOW
        while not os.path.exists(act_socket) and time.time() < deadline:
            time.sleep(0.05)
        # The first connection starts almd; it is served once the models load.
        ac = Client(act_socket, 120)
        ac.send("status", id="first")
        messages = []
        while not any("READY=1" in m for m in messages):
            try:
                messages.append(listener.recv(4096).decode())
            except socket.timeout:
                break
        st = ac.read_until_end("first")[1]
        # Answered at once, maybe while the models were still loading.
        if st and st["result"]["state"] == "loading":
            st = ac.call("status")
        tap.ok(any("READY=1" in m for m in messages), f"socket activation: READY=1 on NOTIFY_SOCKET ({messages})")
        tap.ok(any("STATUS=" in m for m in messages), "... with STATUS= lines")
        tap.ok(st and st["result"]["state"] == "ready" and not os.path.exists(daemon.socket),
               "... almd serves the passed socket and creates none of its own")
        ac.close()
        listener.settimeout(3 * SLOW)
        pings = []
        try:
            while len(pings) < 2:
                m = listener.recv(4096).decode()
                if "WATCHDOG=1" in m:
                    pings.append(m)
        except socket.timeout:
            pass
        tap.ok(len(pings) == 2, f"... WATCHDOG=1 keeps coming when WatchdogSec is set ({len(pings)})")
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(30 * SLOW)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
        stopping = []
        listener.settimeout(0.5)
        try:
            while True:
                stopping.append(listener.recv(4096).decode())
        except socket.timeout:
            pass
        tap.ok(code == 0 and any("STOPPING=1" in m for m in stopping),
               f"... SIGTERM: STOPPING=1 and exit 0 ({code})")
        listener.close()
except SystemExit:
    pass
except Exception as e:  # noqa: BLE001
    import traceback
    tap.ok(False, f"no unexpected exception ({e!r})")
    tap.diag(traceback.format_exc())
finally:
    if tap.failed:
        tap.diag(daemon.log_text()[-8000:])
    daemon.cleanup()
sys.exit(tap.done())
