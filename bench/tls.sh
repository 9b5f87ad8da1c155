#!/usr/bin/env bash
# bench/tls.sh: baton against nginx over HTTPS (HTTP/1.1) and HTTP/2, on loopback.
#
# The TLS counterpart of bench/speed.sh. Installs nginx, wrk and h2load
# (Debian's nghttp2-client) if they are missing, builds baton and the sample
# app into bench/out/, makes a self-signed certificate for localhost and
# 127.0.0.1 with openssl (bench/out/tls/), and starts the app, an nginx
# configured like speed.sh's (the nginx blue/green recipe: upstream block with
# keepalive 64, HTTP/1.1 to the app, the usual forwarding headers) plus
# `listen ... ssl http2`, and `baton serve --https ... --tls-cert ... --tls-key`.
# Both serve HTTP/1.1 and HTTP/2 on one TLS port, chosen by ALPN; both talk
# plain HTTP/1.1 with keep-alive to the app.
#
# HTTPS/HTTP1.1 is measured with wrk (which offers no ALPN, so it gets
# http/1.1), HTTP/2 with h2load (which negotiates h2; checked on every run).
# Targets are measured in interleaved rounds (round r starts with a different
# target); the table gives medians and ratios to nginx over the same protocol.
#
# Everything runs as this user's own processes on 127.0.0.1, with its own
# config, pid and logs under bench/out/, and is stopped by PID on exit.
#
# Environment (defaults in brackets):
#   ROUNDS [3]            interleaved rounds
#   DURATION [5]          seconds per run
#   THREADS [2]           wrk and h2load threads
#   PORT_BASE [19000]     app on +80, nginx on +181 (TLS), baton on +281 (TLS),
#                         +280 (its plain HTTP port, which redirects), admin +380
#   PROTOS ["h1 h2"]      h1: HTTPS with HTTP/1.1 (wrk); h2: HTTP/2 over TLS (h2load)
#   SCENARIOS ["small big post p99"]
#   KEY [ec]              certificate key: ec (P-256) or rsa (2048 bits)
#   H2_SMALL [10x5]       h2load clients x streams per client for small GETs
#                         (50 requests in flight, as wrk's 50 connections)
#   H2_BIG [4x4]          ... for 1 MiB GETs (16 in flight)
#   H2_POST [4x4]         ... for 64 KiB POSTs (16 in flight)
#   H2_P99 [10x1]         ... for the p99 run (10 in flight)
#   NGINX_ACCESS_LOG [off]
#   NGINX_KEEPALIVE_REQUESTS [1000000]  nginx's keepalive_requests. nginx's
#                         default (1000) ends every client connection, HTTP/2
#                         ones with a GOAWAY, after 1000 requests; h2load 1.52
#                         does not reconnect then, so at 1000 nginx's HTTP/2
#                         figures would count only 1000 requests per client.
#                         baton has no such limit.
#   BATON_VARIANTS        as in speed.sh: NAME:BINARY[:ENV=VAL,...] entries (FLAG=--x=y for a flag),
#                         each a 'baton serve' binary; default "baton:bench/out/baton"
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=$ROOT/bench/out
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5}
THREADS=${THREADS:-2}
PORT_BASE=${PORT_BASE:-19000}
PROTOS=${PROTOS:-h1 h2}
SCENARIOS=${SCENARIOS:-small big post p99}
KEY=${KEY:-ec}
H2_SMALL=${H2_SMALL:-10x5}
H2_BIG=${H2_BIG:-4x4}
H2_POST=${H2_POST:-4x4}
H2_P99=${H2_P99:-10x1}
NGINX_ACCESS_LOG=${NGINX_ACCESS_LOG:-off}
NGINX_KEEPALIVE_REQUESTS=${NGINX_KEEPALIVE_REQUESTS:-1000000}
BATON_VARIANTS=${BATON_VARIANTS:-baton:$OUT/baton}

APP_PORT=$((PORT_BASE + 80))
IDLE_PORT=$((PORT_BASE + 81)) # green: nothing listens there
NGINX_PORT=$((PORT_BASE + 181))

mkdir -p "$OUT"
. "$ROOT/bench/lib.sh" # log, wait_ok, to_ms, cpu_ticks, hwm_kb

# --- tools ---------------------------------------------------------------
need=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v h2load >/dev/null 2>&1 || need+=(nghttp2-client)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
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
go build -o "$OUT/baton" ./cmd/baton

# --- certificate ---------------------------------------------------------
TLSDIR=$OUT/tls
mkdir -p "$TLSDIR"
CERT=$TLSDIR/cert.pem
CKEY=$TLSDIR/key.pem
case $KEY in
ec) keyargs=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1) ;;
rsa) keyargs=(-newkey rsa:2048) ;;
*) log "KEY must be ec or rsa"; exit 2 ;;
esac
openssl req -x509 "${keyargs[@]}" -nodes -days 30 -subj "/CN=localhost" \
	-addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
	-keyout "$CKEY" -out "$CERT" 2>/dev/null
chmod 600 "$CKEY"

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


"$OUT/app" --addr "127.0.0.1:$APP_PORT" --version v1 >"$OUT/tls-app.log" 2>&1 &
APP_PID=$!
PIDS+=("$APP_PID")
wait_ok "http://127.0.0.1:$APP_PORT/"

NGX=$OUT/nginx-tls
rm -rf "$NGX"
mkdir -p "$NGX/logs" "$NGX/tmp"
user_line=""
[ "$(id -u)" -eq 0 ] && user_line="user root;"
# speed.sh's nginx (the blue/green recipe) with TLS and HTTP/2 on the listener;
# TLS 1.2 and 1.3 as baton offers, and no cap on requests per client
# connection (see NGINX_KEEPALIVE_REQUESTS). Everything else is nginx's default.
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
        listen 127.0.0.1:$NGINX_PORT ssl http2;
        ssl_certificate $CERT;
        ssl_certificate_key $CKEY;
        ssl_protocols TLSv1.2 TLSv1.3;
        keepalive_requests $NGINX_KEEPALIVE_REQUESTS;
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
wait_ok "https://127.0.0.1:$NGINX_PORT/"

# Targets: name, TLS port, pid (RSS and CPU of it and its children).
T_NAMES=(nginx)
T_PORTS=("$NGINX_PORT")
T_PIDS=("$NGINX_PID")

i=0
for v in $BATON_VARIANTS; do
	IFS=: read -r name bin envs <<<"$v"
	http=$((PORT_BASE + 280 + 2 * i))
	https=$((PORT_BASE + 281 + 2 * i))
	admin=$((PORT_BASE + 380 + i))
	i=$((i + 1))
	state=$OUT/state-tls-$name
	rm -rf "$state"
	mkdir -p "$state"
	variant_env "${envs:-}" # sets envv and flags
	env "${envv[@]}" "$bin" serve --http "127.0.0.1:$http" --https "127.0.0.1:$https" \
		--tls-cert "$CERT" --tls-key "$CKEY" \
		--blue "127.0.0.1:$APP_PORT" --green "127.0.0.1:$IDLE_PORT" \
		--admin "127.0.0.1:$admin" --state-dir "$state" \
		--no-stop --log-level warn "${flags[@]}" >"$OUT/tls-$name.log" 2>&1 &
	pid=$!
	PIDS+=("$pid")
	wait_ok "https://127.0.0.1:$https/"
	T_NAMES+=("$name")
	T_PORTS+=("$https")
	T_PIDS+=("$pid")
done
N=${#T_NAMES[@]}

# What each target negotiates, for the record.
for t in $(seq 0 $((N - 1))); do
	for alpn in http/1.1 h2; do
		neg=$(openssl s_client -connect "127.0.0.1:${T_PORTS[$t]}" -alpn "$alpn" </dev/null 2>/dev/null |
			awk -F': ' '/^New, / { split($0, a, "Cipher is "); c = a[2] } /^ALPN protocol/ { p = $2 } END { print c " " p }')
		log "${T_NAMES[$t]}: offered ALPN $alpn -> $neg"
	done
done

cat >"$OUT/post.lua" <<'EOF'
wrk.method = "POST"
wrk.body = string.rep("x", 65536)
wrk.headers["Content-Type"] = "application/octet-stream"
EOF
head -c 65536 /dev/zero | tr '\0' x >"$OUT/post-64k.bin"

# --- measurements --------------------------------------------------------
RES=$OUT/tls-results.tsv # round, proto, scenario, target index, req/s, p99 ms, errors
: >"$RES"
: >"$OUT/tls-runs.log"


HZ=$(getconf CLK_TCK)

run_one() { # proto, scenario, target index, round
	local proto=$1 sc=$2 t=$3 r=$4 url="https://127.0.0.1:${T_PORTS[$3]}"
	local path args out rps p99 errs t0 t1 n cm lf
	case $sc in
	small | p99) path=/ ;;
	big) path="/big?kib=1024" ;;
	post) path=/echo ;;
	esac
	t0=$(cpu_ticks "${T_PIDS[$t]}")
	if [ "$proto" = h1 ]; then
		case $sc in
		small) args=(-c50) ;;
		big | post) args=(-c16) ;;
		p99) args=(-c10) ;;
		esac
		[ "$sc" = post ] && args+=(-s "$OUT/post.lua")
		out=$(wrk -t"$THREADS" -d"${DURATION}s" --latency "${args[@]}" "$url$path" 2>&1)
		t1=$(cpu_ticks "${T_PIDS[$t]}")
		n=$(awk '/requests in/ { print $1 }' <<<"$out")
		rps=$(awk '/^Requests\/sec:/ { print $2 }' <<<"$out")
		p99=$(to_ms "$(awk '$1 == "99%" { print $2 }' <<<"$out")")
		errs=$(awk '/Non-2xx/ { n += $NF } /Socket errors/ { gsub(/,/, ""); n += $4 + $6 + $8 + $10 } END { print n + 0 }' <<<"$out")
	else
		case $sc in
		small) cm=$H2_SMALL ;;
		big) cm=$H2_BIG ;;
		post) cm=$H2_POST ;;
		p99) cm=$H2_P99 ;;
		esac
		args=(-c"${cm%x*}" -m"${cm#*x}")
		[ "$sc" = post ] && args+=(-d "$OUT/post-64k.bin" -H "Content-Type: application/octet-stream")
		lf=$OUT/h2load-req.log
		out=$(h2load -t"$THREADS" -D "$DURATION" --log-file="$lf" "${args[@]}" "$url$path" 2>&1)
		t1=$(cpu_ticks "${T_PIDS[$t]}")
		if ! grep -q '^Application protocol: h2$' <<<"$out"; then
			log "h2load did not negotiate h2 with ${T_NAMES[$t]}:"
			log "$out"
			exit 1
		fi
		n=$(awk '/^requests:/ { gsub(/,/, ""); print $6 }' <<<"$out")
		rps=$(awk '/^finished in/ { gsub(/,/, ""); print $4 }' <<<"$out")
		# h2load prints min/max/mean/sd only; its per-request log gives the p99
		# (column 3: microseconds from the request's start to the end of its response).
		p99=$(awk -F'\t' '{ print $3 }' "$lf" | sort -n |
			awk '{ v[NR] = $1 } END { if (NR == 0) print ""; else { i = int(NR * 0.99 + 0.999999); if (i < 1) i = 1; printf "%.3f", v[i] / 1000 } }')
		errs=$(awk '/^requests:/ { gsub(/,/, ""); n += $10 + $12 + $14 } /^status codes:/ { gsub(/,/, ""); n += $5 + $7 + $9 } END { print n + 0 }' <<<"$out")
		rm -f "$lf"
	fi
	printf '### round %s %s %s %s\n%s\n' "$r" "$proto" "$sc" "${T_NAMES[$t]}" "$out" >>"$OUT/tls-runs.log"
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$r" "$proto" "$sc" "$t" "${rps:-0}" "${p99:-0}" "$errs" >>"$RES"
	if [ "$sc" = small ]; then
		printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$r" "$proto" cpu "$t" \
			"$(awk -v d=$((t1 - t0)) -v n="${n:-0}" -v hz="$HZ" 'BEGIN { printf "%.1f", (n > 0 ? d / hz * 1e6 / n : 0) }')" 0 0 >>"$RES"
	fi
	log "round $r $(printf '%-3s %-6s %-10s' "$proto" "$sc" "${T_NAMES[$t]}") ${rps:-?} req/s, p99 ${p99:-?} ms$([ "$errs" != 0 ] && echo "  ERRORS: $errs")"
}

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
log "load average before: $LOAD_BEFORE"
for r in $(seq "$ROUNDS"); do
	for proto in $PROTOS; do
		for sc in $SCENARIOS; do
			for k in $(seq 0 $((N - 1))); do
				run_one "$proto" "$sc" $(((k + r - 1) % N)) "$r"
			done
		done
	done
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
log "load average after: $LOAD_AFTER"


median() { # proto, scenario, target index, column (5 req/s, 6 p99)
	awk -F'\t' -v p="$1" -v sc="$2" -v t="$3" -v c="$4" '$2 == p && $3 == sc && $4 == t { print $c }' "$RES" | sort -g |
		awk '{ v[NR] = $1 } END { if (NR == 0) print ""; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
errors() { # proto, target index
	awk -F'\t' -v p="$1" -v t="$2" '$2 == p && $4 == t { n += $7 } END { print n + 0 }' "$RES"
}

{
	echo
	echo "Machine: $(nproc) cores, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo), kernel $(uname -r); $(go version | cut -d' ' -f3), $("$NGINX" -v 2>&1 | cut -d' ' -f3) ($(openssl version | cut -d' ' -f1-2)), wrk -t$THREADS, $(h2load --version | awk '{ print "h2load " $2 }') -t$THREADS; $KEY certificate; ${ROUNDS} interleaved rounds of ${DURATION}s, medians; load average $LOAD_BEFORE before, $LOAD_AFTER after; (x) = ratio to nginx over the same protocol."
	echo
	h2note() { [ "$1" = h2 ] && echo " ($2 clients x $3 streams)" || true; }
	printf '| protocol | proxy | small GET, 50 in flight | 1 MiB GET, 16 in flight | POST 64 KiB, 16 in flight | p99 small, 10 in flight | CPU per small GET | peak RSS | errors |\n'
	printf '|---|---|---|---|---|---|---|---|---|\n'
	for proto in $PROTOS; do
		for t in $(seq 0 $((N - 1))); do
			case $proto in h1) pname="HTTPS, HTTP/1.1 (wrk)" ;; h2) pname="HTTP/2 (h2load)" ;; esac
			row="| $pname | ${T_NAMES[$t]}"
			for sc in small big post p99 cpu; do
				v=$(median "$proto" "$sc" "$t" 5)
				ng=$(median "$proto" "$sc" 0 5)
				p=$(median "$proto" "$sc" "$t" 6)
				pn=$(median "$proto" "$sc" 0 6)
				if [ -z "$v" ]; then
					row+=" | -"
				elif [ "$sc" = p99 ]; then
					row+=" | $(awk -v v="$p" -v n="$pn" 'BEGIN { printf "%.2f ms (%.2fx)", v, (n > 0 ? v / n : 0) }')"
				elif [ "$sc" = cpu ]; then
					row+=" | $(awk -v v="$v" -v n="$ng" 'BEGIN { printf "%.1f µs (%.2fx)", v, (n > 0 ? v / n : 0) }')"
				else
					row+=" | $(awk -v v="$v" -v n="$ng" -v p="$p" -v pn="$pn" 'BEGIN { printf "%\047d req/s (%.2fx); p99 %.2f ms (%.2fx)", v, (n > 0 ? v / n : 0), p, (pn > 0 ? p / pn : 0) }')"
				fi
			done
			row+=" | $(awk -v k="$(hwm_kb "${T_PIDS[$t]}")" 'BEGIN { printf "%.1f MB", k / 1024 }') | $(errors "$proto" "$t") |"
			echo "$row"
		done
	done
	echo
	echo "In flight: wrk connections for HTTP/1.1; for HTTP/2, h2load clients (connections) x concurrent streams: small $H2_SMALL, 1 MiB $H2_BIG, POST $H2_POST, p99 $H2_P99."
	echo "p99: wrk --latency's 99th percentile; for h2load, which prints only min/max/mean/sd, the 99th percentile of its --log-file per-request times (start of request to end of response)."
	echo "CPU per small GET: user+system CPU time of the proxy's processes during the small-GET runs, divided by the requests served (the proxy only: not the app or the load generator)."
	echo "Peak RSS is VmHWM over the whole run (all protocols); for nginx the master's and both workers' summed. errors: socket errors, failed requests and non-2xx answers, all rounds."
} | tee "$OUT/tls-table.md"
