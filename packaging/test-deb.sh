#!/usr/bin/env bash
# Builds the Debian package and checks it on this machine: its contents
# and conffile, the maintainer scripts (the baton user and group, the
# state directory), 'baton version' from PATH, the systemd units
# (systemd-analyze verify), an upgrade that keeps an edited conffile, and
# a removal and purge that leave nothing of the package. It installs into
# this machine's /usr/bin and /etc: run it as root on a CI or throw-away
# machine only. Where systemd is not running (CI here), the scripts only
# say how to start baton; the in-place upgrade under systemd is
# 'systemctl reload baton', i.e. 'baton upgrade', which e2e/upgrade_test.go
# covers.
set -euo pipefail
cd "$(dirname "$0")/.."

fail() { echo "test-deb: FAIL: $*" >&2; exit 1; }
if [ "$(id -u)" -ne 0 ]; then
	# As .ci/run's apt-get does: through sudo when this user may use it.
	if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
		exec sudo -n env "PATH=$PATH" "HOME=$HOME" "GOPATH=$(go env GOPATH)" "GOCACHE=$(go env GOCACHE)" "GOMODCACHE=$(go env GOMODCACHE)" bash "$0" "$@"
	fi
	fail "run as root (or as a user with sudo): it installs the package"
fi
if dpkg -s baton >/dev/null 2>&1; then
	fail "a baton package is installed already; this test would remove it"
fi

rm -rf dist
make deb VERSION=0.0.1~test1 >/dev/null
make deb VERSION=0.0.1~test2 >/dev/null
deb1=dist/baton_0.0.1~test1_$(go env GOARCH).deb
deb2=dist/baton_0.0.1~test2_$(go env GOARCH).deb
[ -f "$deb1" ] && [ -f "$deb2" ] || fail "make deb built $(ls dist)"

contents=$(dpkg-deb --contents "$deb1")
for f in ./usr/bin/baton ./lib/systemd/system/baton.service ./lib/systemd/system/baton.socket \
	./etc/baton/baton.yaml ./usr/share/doc/baton/README.md ./usr/share/doc/baton/copyright; do
	grep -q " $f\$" <<<"$contents" || fail "the package lacks $f"
done
dpkg-deb --ctrl-tarfile "$deb1" | tar -xO ./conffiles | grep -qx /etc/baton/baton.yaml ||
	fail "/etc/baton/baton.yaml is not a conffile"

cleanup() { dpkg --purge baton >/dev/null 2>&1 || true; }
trap cleanup EXIT

echo "== install"
out=$(dpkg -i "$deb1" 2>&1) || fail "dpkg -i: $out"
echo "$out"
[ -d /run/systemd/system ] || grep -q "systemd is not running here" <<<"$out" ||
	fail "install without systemd did not say how to start baton"
getent passwd baton >/dev/null || fail "no baton user"
[ "$(stat -c '%U:%G %a' /var/lib/baton)" = "baton:baton 710" ] ||
	fail "/var/lib/baton is $(stat -c '%U:%G %a' /var/lib/baton); want baton:baton 710"
v=$(command -v baton) || fail "baton is not on PATH"
[ "$v" = /usr/bin/baton ] || fail "baton on PATH is $v"
ver=$(baton version)
echo "$ver"
grep -q "0.0.1~test1" <<<"$ver" || fail "baton version says '$ver'; want 0.0.1~test1"
grep -q "go1\." <<<"$ver" || fail "baton version says '$ver'; want the Go version"
grep -qi "commit" <<<"$ver" || fail "baton version says '$ver'; want the commit"
systemd-analyze verify /lib/systemd/system/baton.service /lib/systemd/system/baton.socket ||
	fail "systemd-analyze verify"

echo "== the installed baton serves with the installed config, as the baton user"
http_port=$((20000 + RANDOM % 20000)); admin_port=$((http_port + 1))
runuser -u baton -- env BATON_STATE_DIR=/var/lib/baton baton serve --config /etc/baton/baton.yaml \
	--http "127.0.0.1:$http_port" --admin "127.0.0.1:$admin_port" >/tmp/test-deb-serve.log 2>&1 &
serve_pid=$!
trap 'kill "$serve_pid" 2>/dev/null; cleanup' EXIT
ok=""
for _ in $(seq 50); do
	if curl -fsS "http://127.0.0.1:$admin_port/v1/status" >/dev/null 2>&1; then ok=1; break; fi
	sleep 0.1
done
[ -n "$ok" ] || { cat /tmp/test-deb-serve.log >&2; fail "the installed baton did not answer on its admin port"; }
code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$http_port/")
[ "$code" = 502 ] || fail "GET / with no app deployed: $code; want 502"
[ -f /var/lib/baton/state.json ] && [ "$(stat -c %U /var/lib/baton/state.json)" = baton ] ||
	fail "the state file is not the baton user's"
kill "$serve_pid"; wait "$serve_pid" 2>/dev/null || true
trap cleanup EXIT

echo "== upgrade, with an edited conffile"
echo "# edited by the operator" >>/etc/baton/baton.yaml
out=$(dpkg -i --force-confold "$deb2" 2>&1) || fail "dpkg -i (upgrade): $out"
grep -q "0.0.1~test2" <<<"$(baton version)" || fail "after the upgrade baton version says '$(baton version)'"
grep -q "edited by the operator" /etc/baton/baton.yaml || fail "the upgrade replaced the edited conffile"

echo "== remove, then purge"
dpkg -r baton >/dev/null
[ ! -e /usr/bin/baton ] || fail "/usr/bin/baton left after remove"
[ -e /etc/baton/baton.yaml ] || fail "remove deleted the conffile (only purge does)"
out=$(dpkg -P baton 2>&1)
[ ! -e /etc/baton/baton.yaml ] || fail "/etc/baton/baton.yaml left after purge"
grep -q "were kept" <<<"$out" || fail "purge did not say what it kept"
trap - EXIT
echo "test-deb: ok"
