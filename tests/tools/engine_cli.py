"""What the Python tests of alm-engine's command line share: TAP output
(tests/tap.py) and running the tool (run, run_json, expect_error)."""
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from tap import Tap  # noqa: E402


class EngineCli(Tap):
    def __init__(self, engine):
        super().__init__()
        self.engine = engine

    def run(self, *args):
        p = subprocess.run([self.engine, *args], capture_output=True, text=True, timeout=300)
        return p.returncode, p.stdout, p.stderr

    def run_json(self, *args):
        code, out, err = self.run(*args)
        if code != 0:
            print(f"# {' '.join(args)}: exit {code}: {err.strip()}")
            return None
        return json.loads(out)

    def expect_error(self, what, needle, *args):
        """A refusal: non-zero exit, nothing on stdout, one line on stderr
        that mentions needle."""
        code, out, err = self.run(*args)
        self.ok(code != 0 and out == "" and needle in err and err.count("\n") == 1,
                f"{what}: exit {code}, message {err.strip()!r} mentions {needle!r}")

    def done(self):
        sys.exit(super().done())
