#!/usr/bin/env bash
# bench/soak.sh: baton under steady load for a long time, with a deploy
# every DEPLOY_EVERY seconds, to catch what short tests cannot: failures that
# only show after hundreds of switches, and leaks (memory, goroutines) that
# grow with every deploy.
#
# It builds baton and the sample app, starts 'baton serve --run' with its
# state under bench/out/soak/, deploys the app once, then runs 'baton probe'
# (keep-alive, new-connection, slow and POST requests, never retried) for
# DURATION seconds while 'baton deploy' ships a new version every
# DEPLOY_EVERY seconds. baton's resident memory (VmRSS) and goroutine count
# (go_goroutines, from its --metrics listener) are sampled idle before the
# load, under load at the start and the end, and idle after it.
#
# Prints requests, failed requests, deploys (ok/failed), and RSS and
# goroutines at start and end; writes the same to bench/out/soak/results.txt.
# Exits 1 if a request or a deploy failed, or if the idle goroutine count
# grew by more than GOROUTINE_SLACK or the RSS under load by more than
# RSS_GROWTH_PCT percent. Not part of CI: it runs for 10 minutes by default.
#
# All processes are this script's own, on 127.0.0.1; they are stopped by PID
# on exit (the app instances baton launched by their process groups).
#
# Environment (defaults in brackets):
#   DURATION [600]         seconds of load
#   DEPLOY_EVERY [20]      seconds between deploys
#   RATE [200]             probe requests per second
#   GOROUTINE_SLACK [10]   allowed growth of the idle goroutine count
#   RSS_GROWTH_PCT [50]    allowed growth of the RSS under load, in percent
#   PORT_BASE [23000]      baton on +80 (admin +90, metrics +91), apps +81/+82
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=$ROOT/bench/out/soak
DURATION=${DURATION:-600}
DEPLOY_EVERY=${DEPLOY_EVERY:-20}
RATE=${RATE:-200}
GOROUTINE_SLACK=${GOROUTINE_SLACK:-10}
RSS_GROWTH_PCT=${RSS_GROWTH_PCT:-50}
PORT_BASE=${PORT_BASE:-23000}

HTTP=127.0.0.1:$((PORT_BASE + 80))
ADMIN=127.0.0.1:$((PORT_BASE + 90))
METRICS=127.0.0.1:$((PORT_BASE + 91))
BLUE=127.0.0.1:$((PORT_BASE + 81))
GREEN=127.0.0.1:$((PORT_BASE + 82))

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

command -v curl >/dev/null || { echo "soak.sh needs curl" >&2; exit 2; }
command -v jq >/dev/null || { echo "soak.sh needs jq (apt-get install jq)" >&2; exit 2; }

rm -rf "$OUT"
mkdir -p "$OUT/state"
log "building baton and the sample app into $OUT"
go build -o "$OUT/baton" ./cmd/baton
go build -o "$OUT/app" ./examples/app
BATON=$OUT/baton

export BATON_ADMIN_TOKEN=soak-$RANDOM-$RANDOM
export BATON_ADMIN=http://$ADMIN

BATON_PID=""
PROBE_PID=""
cleanup() {
	[ -n "$PROBE_PID" ] && kill "$PROBE_PID" 2>/dev/null || true
	if [ -n "$BATON_PID" ]; then
		kill "$BATON_PID" 2>/dev/null || true
		wait "$BATON_PID" 2>/dev/null || true
	fi
	# The instances outlive baton by design; stop the ones it recorded.
	if [ -f "$OUT/state/state.json" ]; then
		for pid in $(jq -r '.instances // {} | .[].pid // empty' "$OUT/state/state.json"); do
			kill -TERM -- "-$pid" 2>/dev/null || true
		done
	fi
}
trap cleanup EXIT

"$BATON" serve --http "$HTTP" --admin "$ADMIN" --metrics "$METRICS" \
	--blue "$BLUE" --green "$GREEN" --state-dir "$OUT/state" \
	--run '{artifact} --port {port} --version {version}' \
	--health-interval 100ms --drain-timeout 10s >"$OUT/baton.log" 2>&1 &
BATON_PID=$!
for _ in $(seq 100); do
	curl -fsS "http://$METRICS/metrics" >/dev/null 2>&1 && break
	sleep 0.1
done
kill -0 "$BATON_PID" 2>/dev/null || { cat "$OUT/baton.log" >&2; exit 1; }

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$BATON_PID/status"; }
goroutines() { curl -fsS "http://$METRICS/metrics" | awk '$1 == "go_goroutines" {print $2}'; }

deploys_ok=0
deploys_failed=0
deploy() { # VERSION
	if "$BATON" deploy --artifact "$OUT/app" --server-path --version "$1" >>"$OUT/deploys.log" 2>&1; then
		deploys_ok=$((deploys_ok + 1))
	else
		deploys_failed=$((deploys_failed + 1))
		log "deploy $1 FAILED (see $OUT/deploys.log)"
	fi
}

deploy v0
sleep 2
idle_rss_start=$(rss_kib)
idle_gr_start=$(goroutines)
log "idle before the load: RSS ${idle_rss_start} KiB, ${idle_gr_start} goroutines"

log "load at $RATE/s for ${DURATION}s, a deploy every ${DEPLOY_EVERY}s"
"$BATON" probe "http://$HTTP/" --duration "${DURATION}s" --rate "$RATE" \
	--post 0.1 --check-echo --slow 0.02 --slow-min 200ms --slow-max 2s \
	--json >"$OUT/probe.json" 2>"$OUT/probe.log" &
PROBE_PID=$!
sleep 5
load_rss_start=$(rss_kib)
load_gr_start=$(goroutines)
started=$(date +%s)
n=1
while :; do
	sleep "$DEPLOY_EVERY"
	elapsed=$(($(date +%s) - started + 5))
	[ "$elapsed" -ge "$((DURATION - 5))" ] && break
	deploy "v$n"
	# baton keeps every release for rollbacks; a soak needs only the last.
	[ "$n" -ge 3 ] && rm -rf "$OUT/state/releases/v$((n - 3))"
	if [ $((n % 5)) -eq 0 ]; then
		log "$n deploys, ${elapsed}s: RSS $(rss_kib) KiB, $(goroutines) goroutines"
	fi
	n=$((n + 1))
done
load_rss_end=$(rss_kib)
load_gr_end=$(goroutines)
wait "$PROBE_PID" || true
PROBE_PID=""
sleep 3 # let keep-alive connections close
idle_rss_end=$(rss_kib)
idle_gr_end=$(goroutines)

requests=$(jq .requests "$OUT/probe.json")
failed=$(jq .failed "$OUT/probe.json")
by_kind=$(jq -c .failures_by_kind "$OUT/probe.json")
{
	echo "soak: ${DURATION}s at ${RATE}/s, a deploy every ${DEPLOY_EVERY}s"
	echo "requests:   $requests"
	echo "failed:     $failed $by_kind"
	echo "deploys:    $deploys_ok ok, $deploys_failed failed"
	echo "p99:        $(jq .p99_ms "$OUT/probe.json") ms, longest gap without success $(jq .longest_gap_ms "$OUT/probe.json") ms"
	echo "RSS KiB:    idle $idle_rss_start -> $idle_rss_end; under load $load_rss_start -> $load_rss_end"
	echo "goroutines: idle $idle_gr_start -> $idle_gr_end; under load $load_gr_start -> $load_gr_end"
} | tee "$OUT/results.txt"

status=0
if [ "$failed" -ne 0 ] || [ "$deploys_failed" -ne 0 ]; then
	echo "FAIL: requests or deploys failed" >&2
	status=1
fi
if [ "$idle_gr_end" -gt "$((idle_gr_start + GOROUTINE_SLACK))" ]; then
	echo "FAIL: goroutines grew from $idle_gr_start to $idle_gr_end (slack $GOROUTINE_SLACK)" >&2
	status=1
fi
# RSS is compared under load, start to end: the idle sample before the load
# is taken before buffers and pools have warmed up.
if [ "$load_rss_end" -gt "$((load_rss_start * (100 + RSS_GROWTH_PCT) / 100))" ]; then
	echo "FAIL: RSS under load grew from $load_rss_start to $load_rss_end KiB (more than ${RSS_GROWTH_PCT}%)" >&2
	status=1
fi
exit $status
