"""What the Python tests of alm-engine's command line share: TAP output
(ok, done) and running the tool (run, run_json, expect_error)."""
import json
import subprocess
import sys


class EngineCli:
    def __init__(self, engine):
        self.engine = engine
        self.count = 0
        self.failed = 0

    def ok(self, cond, what):
        self.count += 1
        if not cond:
            self.failed += 1
        print(f"{'ok' if cond else 'not ok'} {self.count} - {what}", flush=True)
        return cond

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
        print(f"1..{self.count}")
        sys.exit(1 if self.failed else 0)
