"""TAP output for the Python tests (tests/tap.h is the C tests'): numbered
ok / not ok lines, diagnostics, and the plan at the end."""
import sys


class Tap:
    def __init__(self):
        self.count = 0
        self.failed = 0

    def ok(self, cond, what):
        self.count += 1
        if not cond:
            self.failed += 1
        print(f"{'ok' if cond else 'not ok'} {self.count} - {what}", flush=True)
        return bool(cond)

    def diag(self, text):
        for line in str(text).splitlines():
            print(f"# {line}", flush=True)

    def skip_all(self, why):
        print(f"1..0 # SKIP {why}", flush=True)
        sys.exit(0)

    def done(self):
        """Prints the plan; returns the exit status (1 if a check failed)."""
        print(f"1..{self.count}", flush=True)
        return 1 if self.failed else 0
