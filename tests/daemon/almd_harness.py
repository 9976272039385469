"""Shared by the almd end-to-end tests: TAP output (tests/tap.py), a real almd on a
temporary socket, database and YAML file, and a client that speaks the
protocol (newline-delimited JSON) over the socket. Standard library only."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from tap import Tap  # noqa: E402,F401  (the tests import it from here)

DATA = os.environ.get("ALM_TEST_DATA", "")
DEFAULT_MODELS = os.environ.get("ALM_DEFAULT_MODELS", "")
TINY = os.path.join(DATA, "models", "tiny")
SANITIZED = os.environ.get("ALM_TEST_SANITIZED") == "1"
# Everything is slower under ASan: waits scale with it.
SLOW = 4.0 if SANITIZED else 1.0


class Client:
    """One connection. Lines are read with a deadline; a reply is a dict."""

    def __init__(self, path, timeout=60.0):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout * SLOW)
        self.sock.connect(path)
        self.buf = b""
        self.next_id = 1

    def close(self):
        self.sock.close()

    def send_raw(self, data):
        self.sock.sendall(data)

    def send(self, method, params=None, id=None):
        if id is None:
            id = self.next_id
            self.next_id += 1
        msg = {"id": id, "method": method}
        if params is not None:
            msg["params"] = params
        self.send_raw((json.dumps(msg) + "\n").encode())
        return id

    def read_line(self):
        """The next line as a dict, or None at end of file."""
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def read_until_end(self, id):
        """Events for id up to its done/result/error: (events, final)."""
        events = []
        while True:
            m = self.read_line()
            if m is None:
                return events, None
            if m.get("id") != id:
                raise AssertionError(f"line for another request: {m}")
            if "event" in m and m["event"] != "done":
                events.append(m)
                continue
            return events, m

    def call(self, method, params=None):
        id = self.send(method, params)
        return self.read_until_end(id)[1]

    def generate(self, **params):
        id = self.send("generate", params)
        events, final = self.read_until_end(id)
        return events, final

    def at_eof(self, wait=5.0):
        """Whether the daemon closed the connection (after any lines)."""
        self.sock.settimeout(wait * SLOW)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
        except (socket.timeout, ConnectionResetError):
            return False


class Almd:
    """A real almd with its own folder for the socket, database and YAML."""

    def __init__(self, binary, tap, extra_yaml="", model_dirs=None, root=None):
        self.binary = binary
        self.tap = tap
        self.root = root or tempfile.mkdtemp(prefix="almd-test-")
        # Others (the access test's `nobody`) must reach the socket.
        os.chmod(self.root, 0o755)
        self.socket = os.path.join(self.root, "almd.sock")
        self.database = os.path.join(self.root, "alm.db")
        self.config = os.path.join(self.root, "almd.yaml")
        self.log = os.path.join(self.root, "almd.log")
        dirs = list(model_dirs or []) + [DEFAULT_MODELS, TINY]
        group = "root" if os.getuid() == 0 else _own_group()
        # Not root: the user's own group makes it an admin, unless the test
        # wants otherwise.
        if os.getuid() != 0 and "admin_group:" not in extra_yaml:
            extra_yaml += f"admin_group: {group}\n"
        with open(self.config, "w") as f:
            f.write(f"socket: {self.socket}\n"
                    f"socket_mode: 0666\n"
                    f"socket_group: {group}\n"
                    f"database: {self.database}\n"
                    f"model_dirs: [{', '.join(dirs)}]\n"
                    f"log_level: debug\n" + extra_yaml)
        self.proc = None

    def start(self, wait_ready=True, env=None):
        logf = open(self.log, "a")
        self.proc = subprocess.Popen([self.binary, "--config", self.config],
                                     stdout=logf, stderr=logf, env=env)
        logf.close()
        if wait_ready:
            return self.wait_ready()
        return True

    def wait_ready(self, timeout=60.0):
        deadline = time.time() + timeout * SLOW
        while time.time() < deadline:
            if self.proc and self.proc.poll() is not None:
                self.tap.diag(f"almd exited with {self.proc.returncode}:\n{self.log_text()}")
                return False
            try:
                c = Client(self.socket, timeout=10)
                st = c.call("status")
                c.close()
                if st and st.get("result", {}).get("state") != "loading":
                    return True
            except (OSError, ValueError):
                pass
            time.sleep(0.05)
        return False

    def client(self, timeout=60.0):
        return Client(self.socket, timeout)

    def stop(self, sig=signal.SIGTERM, timeout=30.0):
        """Sends sig and returns the exit status."""
        if not self.proc:
            return None
        self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout * SLOW)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self.proc = None
        return code

    def log_text(self):
        try:
            with open(self.log) as f:
                return f.read()
        except OSError:
            return ""

    def cleanup(self):
        if self.proc:
            self.stop(signal.SIGKILL)
        shutil.rmtree(self.root, ignore_errors=True)


def _own_group():
    import grp
    return grp.getgrgid(os.getgid()).gr_name


def engine_generate(engine, model_dir, prompt, max_tokens):
    """alm-engine generate's ids for the prompt, temperature 0."""
    p = subprocess.run([engine, "generate", "--model", model_dir, "--prompt", prompt,
                        "--max-tokens", str(max_tokens), "--temperature", "0"],
                       capture_output=True, text=True, timeout=300)
    if p.returncode != 0:
        raise RuntimeError(p.stderr)
    return json.loads(p.stdout)
