#!/usr/bin/env python3
"""Counts the TAP checks of meson test logs and prints 'N passed, N failed'.

Each test program prints TAP ('ok N - ...', 'not ok N - ...'); a program
that crashed or timed out before printing its checks counts as one failure,
and one skipped whole ('1..0 # SKIP why') as one skip, with its reason."""
import json
import re
import sys

passed = failed = skipped = 0
for path in sys.argv[1:]:
    with open(path) as f:
        for line in f:
            entry = json.loads(line)
            name = f"{path.split('/')[0]}:{entry['name']}"
            out = entry.get('stdout') or ''
            oks = len(re.findall(r'^ok \d+', out, re.M))
            bad = len(re.findall(r'^not ok \d+', out, re.M))
            skip = re.search(r'^1\.\.0 # SKIP (.*)$', out, re.M)
            passed += oks
            failed += bad
            if skip:
                skipped += 1
                print(f"skipped: {name}: {skip.group(1)}")
            if entry['result'] not in ('OK', 'SKIP', 'EXPECTEDFAIL') and bad == 0:
                failed += 1
                print(f"failed: {name}: {entry['result']}")
            for m in re.finditer(r'^# SKIP: (.*)$', out, re.M):
                print(f"skipped part of {name}: {m.group(1)}")
print(f"{passed} passed, {failed} failed, {skipped} skipped")
sys.exit(1 if failed else 0)
