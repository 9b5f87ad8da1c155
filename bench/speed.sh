#!/usr/bin/env bash
# bench/speed.sh: baton against nginx and against the app itself, on loopback.
#
# Installs nginx and wrk from Debian's packages if they are missing, builds
# baton, the sample app and the latency client into bench/out/, starts the app,
# an nginx configured like the nginx blue/green recipe and baton, and runs wrk
# against each in interleaved rounds (round r starts with a different target,
# so that a noisy neighbour or a warm-up hits all of them alike). Prints a
# markdown table of medians with ratios to nginx, then the latency each proxy
# adds at a fixed 1000 req/s (bench/latency).
#
# Everything runs as this user's own processes on 127.0.0.1, with its own
# config, pid and logs under bench/out/, and is stopped by PID on exit.
#
# Environment (defaults in brackets):
#   ROUNDS [3]          interleaved rounds
#   DURATION [5]        seconds per wrk run
#   THREADS [2]         wrk threads
#   PORT_BASE [18000]   app on +80, nginx on +180, baton variants on +280...
#   LATENCY [1]         0 skips the fixed-rate latency measurement
#   LAT_RATE [1000]     its request rate; LAT_DURATION [5] its seconds per run
#   NGINX_ACCESS_LOG [off]  "on" logs every request as the stock config does
#   HAPROXY [0]         1 adds haproxy (Debian's package, installed if missing;
#                       2 threads, keep-alive to the app, the same headers) on +190
#   BATON_VARIANTS      space-separated NAME:BINARY[:ENV=VAL,...] entries, each
#                       a 'baton serve' (or bench/out/benchproxy) binary run as
#                       its own proxy; default "baton:bench/out/baton". Use it
#                       for before/after figures from one run, e.g.
#                       "before:/tmp/baton-old after:bench/out/baton gogc400:bench/out/baton:GOGC=400";
#                       FLAG=--x=y passes a flag instead, e.g.
#                       "nethttp:bench/out/baton:FLAG=--fast-path=false"
#   SCENARIOS           subset of "small big post p99" [all four]
#   SERVICES [0]        N > 0 adds "nginx N sites" (N server {} blocks, one
#                       upstream each) and "baton N services" (a config file
#                       with N services, one per host), both sent the Host of
#                       the middle one, beside the one-app nginx and baton
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=$ROOT/bench/out
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5}
THREADS=${THREADS:-2}
PORT_BASE=${PORT_BASE:-18000}
LATENCY=${LATENCY:-1}
LAT_RATE=${LAT_RATE:-1000}
LAT_DURATION=${LAT_DURATION:-5}
NGINX_ACCESS_LOG=${NGINX_ACCESS_LOG:-off}
SCENARIOS=${SCENARIOS:-small big post p99}
BATON_VARIANTS=${BATON_VARIANTS:-baton:$OUT/baton}

APP_PORT=$((PORT_BASE + 80))
IDLE_PORT=$((PORT_BASE + 81)) # green: nothing listens there
NGINX_PORT=$((PORT_BASE + 180))
HAPROXY_PORT=$((PORT_BASE + 190))
HAPROXY=${HAPROXY:-0}

mkdir -p "$OUT"
. "$ROOT/bench/lib.sh" # log, wait_ok, to_ms, cpu_ticks, hwm_kb

# --- tools ---------------------------------------------------------------
need=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v curl >/dev/null 2>&1 || need+=(curl)
if [ "$HAPROXY" = 1 ]; then
	command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || need+=(haproxy)
fi
if [ ${#need[@]} -gt 0 ]; then
	log "installing ${need[*]} from Debian's packages"
	sudo=""
	[ "$(id -u)" -eq 0 ] || sudo=sudo
	$sudo apt-get install -y "${need[@]}" >/dev/null 2>&1 ||
		{ $sudo apt-get update >/dev/null && $sudo apt-get install -y "${need[@]}" >/dev/null; }
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

log "building into $OUT"
go build -o "$OUT/app" ./examples/app
go build -o "$OUT/latency" ./bench/latency
go build -o "$OUT/benchproxy" ./bench/benchproxy
if ! go build -o "$OUT/baton" ./cmd/baton 2>"$OUT/baton-build.log"; then
	log "cmd/baton does not build (see $OUT/baton-build.log); using bench/out/benchproxy as baton"
	cp "$OUT/benchproxy" "$OUT/benchproxy-as-baton"
	case " $BATON_VARIANTS" in
	*":$OUT/baton"*)
		BATON_VARIANTS=${BATON_VARIANTS//:$OUT\/baton/:$OUT\/benchproxy-as-baton}
		FALLBACK=1
		;;
	esac
fi

# --- processes -----------------------------------------------------------
PIDS=()
cleanup() {
	for pid in "${PIDS[@]}"; do
		kill "$pid" 2>/dev/null || true
	done
	for pid in "${PIDS[@]}"; do
		wait "$pid" 2>/dev/null || true
	done
}
trap cleanup EXIT INT TERM


"$OUT/app" --addr "127.0.0.1:$APP_PORT" --version v1 >"$OUT/app.log" 2>&1 &
APP_PID=$!
PIDS+=("$APP_PID")
wait_ok "http://127.0.0.1:$APP_PORT/"

NGX=$OUT/nginx
rm -rf "$NGX"
mkdir -p "$NGX/logs" "$NGX/tmp"
user_line=""
[ "$(id -u)" -eq 0 ] && user_line="user root;"
# The nginx blue/green recipe: the live colour in an upstream block with
# keep-alive connections, HTTP/1.1 to the app, the usual forwarding headers.
cat >"$NGX/nginx.conf" <<EOF
$user_line
worker_processes 2;
daemon off;
pid $NGX/nginx.pid;
error_log $NGX/logs/error.log warn;
events { worker_connections 4096; }
http {
    access_log $([ "$NGINX_ACCESS_LOG" = on ] && echo "$NGX/logs/access.log" || echo off);
    client_body_temp_path $NGX/tmp/body;
    proxy_temp_path $NGX/tmp/proxy;
    fastcgi_temp_path $NGX/tmp/fastcgi;
    uwsgi_temp_path $NGX/tmp/uwsgi;
    scgi_temp_path $NGX/tmp/scgi;
    upstream app_live {
        server 127.0.0.1:$APP_PORT;
        keepalive 64;
    }
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location / {
            proxy_pass http://app_live;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
            proxy_set_header X-Real-IP \$remote_addr;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto \$scheme;
        }
    }
}
EOF
"$NGINX" -p "$NGX" -c "$NGX/nginx.conf" -e "$NGX/logs/error.log" &
NGINX_PID=$!
PIDS+=("$NGINX_PID")
wait_ok "http://127.0.0.1:$NGINX_PORT/"

# Targets: name, port, pid of the process whose peak RSS is reported, and
# the Host header to send (empty: the address).
T_NAMES=("app direct" nginx)
T_PORTS=("$APP_PORT" "$NGINX_PORT")
T_PIDS=("" "$NGINX_PID")
T_CPUPIDS=("$APP_PID" "$NGINX_PID")
T_HOSTS=("" "")

SERVICES=${SERVICES:-0}
if [ "$SERVICES" -gt 0 ]; then
	# N sites, the request's host in the middle of them, every one proxied
	# like the one-app config above.
	TARGET_HOST="s$(((SERVICES + 1) / 2)).example.com"
	NGXN=$OUT/nginx-sites
	NGINXN_PORT=$((PORT_BASE + 181))
	rm -rf "$NGXN"
	mkdir -p "$NGXN/logs" "$NGXN/tmp"
	{
		sed -e "s#$NGX#$NGXN#g" -e '/upstream app_live/,$d' "$NGX/nginx.conf"
		for k in $(seq "$SERVICES"); do
			cat <<SITE
    upstream s$k {
        server 127.0.0.1:$APP_PORT;
        keepalive 64;
    }
    server {
        listen 127.0.0.1:$NGINXN_PORT;
        server_name s$k.example.com;
        location / {
            proxy_pass http://s$k;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
            proxy_set_header X-Real-IP \$remote_addr;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto \$scheme;
        }
    }
SITE
		done
		echo "}"
	} >"$NGXN/nginx.conf"
	"$NGINX" -p "$NGXN" -c "$NGXN/nginx.conf" -e "$NGXN/logs/error.log" &
	pid=$!
	PIDS+=("$pid")
	curl -fsS -o /dev/null --retry 50 --retry-delay 0 --retry-connrefused -H "Host: $TARGET_HOST" "http://127.0.0.1:$NGINXN_PORT/"
	T_NAMES+=("nginx $SERVICES sites")
	T_PORTS+=("$NGINXN_PORT")
	T_PIDS+=("$pid")
	T_CPUPIDS+=("$pid")
	T_HOSTS+=("$TARGET_HOST")

	# baton's services: each needs apps of its own, so all but the target
	# point at ports where nothing listens (never asked).
	BN=$OUT/baton-services
	rm -rf "$BN"
	mkdir -p "$BN/state"
	{
		echo "no_stop: true"
		echo "services:"
		for k in $(seq "$SERVICES"); do
			blue=$((PORT_BASE + 1000 + 2 * k))
			[ "s$k.example.com" = "$TARGET_HOST" ] && blue=$APP_PORT
			printf '  s%d:\n    hosts: [s%d.example.com]\n    blue: 127.0.0.1:%d\n    green: 127.0.0.1:%d\n' \
				"$k" "$k" "$blue" $((PORT_BASE + 1001 + 2 * k))
		done
	} >"$BN/baton.yaml"
	BATONN_PORT=$((PORT_BASE + 279))
	"$OUT/baton" serve --config "$BN/baton.yaml" --http "127.0.0.1:$BATONN_PORT" --admin "127.0.0.1:$((PORT_BASE + 379))" \
		--state-dir "$BN/state" --log-level warn >"$OUT/baton-services.log" 2>&1 &
	pid=$!
	PIDS+=("$pid")
	curl -fsS -o /dev/null --retry 50 --retry-delay 0 --retry-connrefused -H "Host: $TARGET_HOST" "http://127.0.0.1:$BATONN_PORT/"
	T_NAMES+=("baton $SERVICES services")
	T_PORTS+=("$BATONN_PORT")
	T_PIDS+=("$pid")
	T_CPUPIDS+=("$pid")
	T_HOSTS+=("$TARGET_HOST")
fi

if [ "$HAPROXY" = 1 ]; then
	HAP=$OUT/haproxy
	rm -rf "$HAP"
	mkdir -p "$HAP"
	cat >"$HAP/haproxy.cfg" <<EOF
global
    nbthread 2
    maxconn 4096
defaults
    mode http
    option http-keep-alive
    timeout connect 5s
    timeout client 60s
    timeout server 60s
frontend public
    bind 127.0.0.1:$HAPROXY_PORT
    option forwardfor
    http-request set-header X-Real-IP %[src]
    http-request set-header X-Forwarded-Proto http
    default_backend live
backend live
    http-reuse always
    server app 127.0.0.1:$APP_PORT
EOF
	"$(command -v haproxy || echo /usr/sbin/haproxy)" -db -f "$HAP/haproxy.cfg" >"$HAP/haproxy.log" 2>&1 &
	pid=$!
	PIDS+=("$pid")
	wait_ok "http://127.0.0.1:$HAPROXY_PORT/"
	T_NAMES+=(haproxy)
	T_PORTS+=("$HAPROXY_PORT")
	T_PIDS+=("$pid")
	T_CPUPIDS+=("$pid")
	T_HOSTS+=("")
fi

i=0
for v in $BATON_VARIANTS; do
	IFS=: read -r name bin envs <<<"$v"
	port=$((PORT_BASE + 280 + i))
	admin=$((PORT_BASE + 380 + i))
	i=$((i + 1))
	state=$OUT/state-$name
	rm -rf "$state"
	mkdir -p "$state"
	variant_env "${envs:-}" # sets envv and flags
	if [[ "$(basename "$bin")" == benchproxy* ]]; then
		env "${envv[@]}" "$bin" --http "127.0.0.1:$port" --blue "127.0.0.1:$APP_PORT" "${flags[@]}" \
			>"$OUT/$name.log" 2>&1 &
	else
		env "${envv[@]}" "$bin" serve --http "127.0.0.1:$port" --blue "127.0.0.1:$APP_PORT" \
			--green "127.0.0.1:$IDLE_PORT" --admin "127.0.0.1:$admin" --state-dir "$state" \
			--no-stop --log-level warn "${flags[@]}" >"$OUT/$name.log" 2>&1 &
	fi
	pid=$!
	PIDS+=("$pid")
	wait_ok "http://127.0.0.1:$port/"
	T_NAMES+=("$name")
	T_PORTS+=("$port")
	T_PIDS+=("$pid")
	T_CPUPIDS+=("$pid")
	T_HOSTS+=("")
done
N=${#T_NAMES[@]}

cat >"$OUT/post.lua" <<'EOF'
wrk.method = "POST"
wrk.body = string.rep("x", 65536)
wrk.headers["Content-Type"] = "application/octet-stream"
EOF

# --- measurements --------------------------------------------------------
RES=$OUT/results.tsv # round, scenario, target index, value, errors
: >"$RES"


HZ=$(getconf CLK_TCK)

run_wrk() { # scenario, target index, round
	local sc=$1 t=$2 r=$3 url="http://127.0.0.1:${T_PORTS[$2]}" args out value errs t0 t1 n
	case $sc in
	small) args=(-c50 "$url/") ;;
	big) args=(-c16 "$url/big?kib=1024") ;;
	post) args=(-c16 -s "$OUT/post.lua" "$url/echo") ;;
	p99) args=(-c10 --latency "$url/") ;;
	esac
	[ -n "${T_HOSTS[$t]}" ] && args+=(-H "Host: ${T_HOSTS[$t]}")
	t0=$(cpu_ticks "${T_CPUPIDS[$t]}")
	out=$(wrk -t"$THREADS" -d"${DURATION}s" "${args[@]}" 2>&1)
	t1=$(cpu_ticks "${T_CPUPIDS[$t]}")
	if [ "$sc" = small ]; then
		# CPU time the proxy (for "app direct", the app) spent per request:
		# less sensitive than req/s to what else the machine is doing.
		n=$(awk '/requests in/ { print $1 }' <<<"$out")
		printf '%s\t%s\t%s\t%s\t%s\n' "$r" cpu "$t" "$(awk -v d=$((t1 - t0)) -v n="${n:-0}" -v hz="$HZ" 'BEGIN { printf "%.1f", (n > 0 ? d / hz * 1e6 / n : 0) }')" 0 >>"$RES"
	fi
	if [ "$sc" = p99 ]; then
		value=$(to_ms "$(awk '$1 == "99%" { print $2 }' <<<"$out")")
	else
		value=$(awk '/^Requests\/sec:/ { print $2 }' <<<"$out")
	fi
	errs=$(awk '/Non-2xx/ { n += $NF } /Socket errors/ { gsub(/,/, ""); n += $4 + $6 + $8 + $10 } END { print n + 0 }' <<<"$out")
	printf '%s\t%s\t%s\t%s\t%s\n' "$r" "$sc" "$t" "${value:-0}" "$errs" >>"$RES"
	log "round $r $(printf '%-6s %-12s' "$sc" "${T_NAMES[$t]}") ${value:-?}$([ "$sc" = p99 ] && echo " ms" || echo " req/s")$([ "$errs" != 0 ] && echo "  ERRORS: $errs")"
}

log "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq "$ROUNDS"); do
	for sc in $SCENARIOS; do
		for k in $(seq 0 $((N - 1))); do
			run_wrk "$sc" $(((k + r - 1) % N)) "$r"
		done
	done
done
log "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"


median() { # scenario, target index
	awk -F'\t' -v sc="$1" -v t="$2" '$2 == sc && $3 == t { print $4 }' "$RES" | sort -g |
		awk '{ v[NR] = $1 } END { if (NR == 0) print ""; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
errors() {
	awk -F'\t' -v t="$1" '$3 == t { n += $5 } END { print n + 0 }' "$RES"
}

{
	echo
	versions="$(go version | cut -d' ' -f3), $("$NGINX" -v 2>&1 | cut -d' ' -f3)"
	[ "$HAPROXY" = 1 ] && versions+=", haproxy $(haproxy -v 2>/dev/null | awk 'NR == 1 { print $3 }')"
	echo "Machine: $(nproc) cores, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo), kernel $(uname -r); $versions, wrk -t$THREADS; ${ROUNDS} interleaved rounds of ${DURATION}s, medians; (x) = ratio to nginx."
	echo
	printf '| proxy | small GET, 50 conns | 1 MiB GET, 16 conns | POST 64 KiB, 16 conns | p99 small, 10 conns | CPU per small GET | peak RSS | errors |\n'
	printf '|---|---|---|---|---|---|---|---|\n'
	for t in $(seq 0 $((N - 1))); do
		row="| ${T_NAMES[$t]}"
		for sc in small big post p99 cpu; do
			v=$(median "$sc" "$t")
			ng=$(median "$sc" 1)
			if [ -z "$v" ]; then
				row+=" | -"
			elif [ "$sc" = p99 ]; then
				row+=" | $(awk -v v="$v" -v n="$ng" 'BEGIN { printf "%.2f ms (%.2fx)", v, (n > 0 ? v / n : 0) }')"
			elif [ "$sc" = cpu ]; then
				row+=" | $(awk -v v="$v" -v n="$ng" 'BEGIN { printf "%.1f µs (%.2fx)", v, (n > 0 ? v / n : 0) }')"
			else
				row+=" | $(awk -v v="$v" -v n="$ng" 'BEGIN { printf "%\047d (%.2fx)", v, (n > 0 ? v / n : 0) }')"
			fi
		done
		rss=""
		[ -n "${T_PIDS[$t]}" ] && rss="$(awk -v k="$(hwm_kb "${T_PIDS[$t]}")" 'BEGIN { printf "%.1f MB", k / 1024 }')"
		row+=" | $rss | $(errors "$t") |"
		echo "$row"
	done
	echo
	[ -n "${FALLBACK:-}" ] && echo "NOTE: cmd/baton did not build; \"baton\" is bench/benchproxy (the proxy package wired as serve wires it)."
	echo "CPU per small GET: user+system CPU time of the proxy's processes (for app direct: of the app) during the small-GET runs, divided by the requests served; it counts the proxy only, not the app behind it or wrk."
	echo "Peak RSS is VmHWM from /proc/PID/status; for nginx the master's and both workers' summed. errors: wrk socket errors plus non-2xx answers, all rounds."
} | tee "$OUT/table.md"

if [ "$LATENCY" = 1 ]; then
	lat_args=(--direct "127.0.0.1:$APP_PORT" --rate "$LAT_RATE" --duration "${LAT_DURATION}s" --rounds "$ROUNDS")
	for t in $(seq 1 $((N - 1))); do
		[ -n "${T_HOSTS[$t]}" ] && continue # the latency client sends no Host of ours
		lat_args+=(--proxy "${T_NAMES[$t]}=127.0.0.1:${T_PORTS[$t]}")
	done
	echo
	"$OUT/latency" "${lat_args[@]}" | tee -a "$OUT/table.md"
fi
