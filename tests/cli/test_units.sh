#!/usr/bin/env bash
# The installed systemd files: `systemd-analyze verify` passes on the system
# and user units as meson generates them (with ExecStart pointed at the
# almd just built, since verify checks that the binary exists), a unit with
# a misspelt key does not (so the check bites), and systemd-sysusers creates
# the alm user and groups in a scratch root. TAP output.
# Usage: test_units.sh BUILD_DATA_DIR ALMD SYSUSERS_CONF
set -u
data=$1 almd=$(realpath "$2") sysusers_conf=$3

if ! command -v systemd-analyze >/dev/null; then
    echo "1..0 # SKIP systemd-analyze not found (Debian: apt-get install systemd)"
    exit 0
fi

n=0 failed=0
ok() {   # ok STATUS DESCRIPTION
    n=$((n + 1))
    if [ "$1" -eq 0 ]; then echo "ok $n - $2"; else echo "not ok $n - $2"; failed=1; fi
}
diag() { sed 's/^/# /'; }

tmp=$(mktemp -d /tmp/alm-units-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/system" "$tmp/user" "$tmp/bad" "$tmp/runtime" "$tmp/root/etc"
cp "$data/almd.service" "$data/almd.socket" "$tmp/system/"
cp "$data/user-almd.service" "$tmp/user/almd.service"
cp "$data/user-almd.socket" "$tmp/user/almd.socket"

grep -Eq '^ExecStart=/[^ ]*/almd --config /[^ ]*/alm/almd\.yaml$' "$tmp/system/almd.service"
ok $? "almd.service runs the installed almd with the installed almd.yaml"
grep -Eq '^ListenStream=/run/alm/almd\.sock$' "$tmp/system/almd.socket"
ok $? "almd.socket listens on /run/alm/almd.sock"
grep -Eq '^ListenStream=%t/alm/almd\.sock$' "$tmp/user/almd.socket"
ok $? "the user socket is \$XDG_RUNTIME_DIR/alm/almd.sock, where alm looks"

sed -i "s|^ExecStart=[^ ]*|ExecStart=$almd|" "$tmp/system/almd.service" "$tmp/user/almd.service"

out=$(systemd-analyze verify --man=no "$tmp/system/almd.service" "$tmp/system/almd.socket" 2>&1)
status=$?
[ $status -eq 0 ] && [ -z "$out" ]
ok $? "systemd-analyze verify: system almd.service and almd.socket, no warnings"
[ -n "$out" ] && echo "$out" | diag

out=$(XDG_RUNTIME_DIR="$tmp/runtime" systemd-analyze --user verify --man=no \
      "$tmp/user/almd.service" "$tmp/user/almd.socket" 2>&1)
status=$?
[ $status -eq 0 ] && [ -z "$out" ]
ok $? "systemd-analyze --user verify: user almd.service and almd.socket, no warnings"
[ -n "$out" ] && echo "$out" | diag

cp "$tmp/system/almd.socket" "$tmp/bad/"
sed 's/^Type=notify$/Type=notfy/' "$tmp/system/almd.service" > "$tmp/bad/almd.service"
out=$(systemd-analyze verify --man=no "$tmp/bad/almd.service" "$tmp/bad/almd.socket" 2>&1)
echo "$out" | grep -q "notfy"
ok $? "a misspelt value is reported (the verification is not vacuous)"

if command -v systemd-sysusers >/dev/null; then
    systemd-sysusers --root="$tmp/root" "$sysusers_conf" >/dev/null 2>&1
    grep -q '^alm:' "$tmp/root/etc/passwd" 2>/dev/null &&
        grep -q '^alm:' "$tmp/root/etc/group" && grep -q '^alm-admin:' "$tmp/root/etc/group"
    ok $? "systemd-sysusers creates user alm and groups alm, alm-admin"
else
    n=$((n + 1)); echo "ok $n # SKIP systemd-sysusers not found"
fi

echo "1..$n"
exit $failed
