#!/usr/bin/env bash
# bench/idle.sh: what an idle keep-alive client connection costs in memory,
# nginx against baton, in one run.
#
# For each proxy in turn: start it in front of the sample app, note its RSS
# (summed over its processes, nginx's workers included) after one warm-up
# request, open N connections with one GET each and leave them idle
# (bench/idleconns), wait SETTLE seconds, note the RSS again, and print the
# growth per connection. Loopback only; every process is stopped by PID.
#
# Environment: N [10000] connections, SETTLE [3] seconds, PORT_BASE [19000].
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=$ROOT/bench/out/idle
N=${N:-10000}
SETTLE=${SETTLE:-3}
PORT_BASE=${PORT_BASE:-19000}
APP_PORT=$((PORT_BASE + 1))
NGINX_PORT=$((PORT_BASE + 2))
BATON_PORT=$((PORT_BASE + 3))
mkdir -p "$OUT"
. "$ROOT/bench/lib.sh"
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
[ -x "$NGINX" ] || { log "nginx is not installed (apt-get install nginx)"; exit 2; }
ulimit -n $((N + 1000)) 2>/dev/null || { log "cannot raise the open-files limit to $((N + 1000)); lower N"; exit 2; }

PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

log "building into $OUT"
go build -o "$OUT/app" ./examples/app
go build -o "$OUT/baton" ./cmd/baton
go build -o "$OUT/idleconns" ./bench/idleconns

"$OUT/app" --addr "127.0.0.1:$APP_PORT" --version v1 >"$OUT/app.log" 2>&1 &
PIDS+=($!)
wait_ok "http://127.0.0.1:$APP_PORT/"

NGX=$OUT/nginx
rm -rf "$NGX" && mkdir -p "$NGX/logs" "$NGX/tmp"
user_line=""
[ "$(id -u)" -eq 0 ] && user_line="user root;"
cat >"$NGX/nginx.conf" <<CONF
$user_line
worker_processes 2;
daemon off;
pid $NGX/nginx.pid;
error_log $NGX/logs/error.log warn;
worker_rlimit_nofile $((N + 1000));
events { worker_connections $((N + 1000)); }
http {
    access_log off;
    keepalive_timeout 300s;
    keepalive_requests 1000;
    client_body_temp_path $NGX/tmp/body;
    proxy_temp_path $NGX/tmp/proxy;
    fastcgi_temp_path $NGX/tmp/fastcgi;
    uwsgi_temp_path $NGX/tmp/uwsgi;
    scgi_temp_path $NGX/tmp/scgi;
    upstream app_live { server 127.0.0.1:$APP_PORT; keepalive 64; }
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location / {
            proxy_pass http://app_live;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
        }
    }
}
CONF

measure() { # NAME PORT PID
	local name=$1 port=$2 pid=$3 before after
	wait_ok "http://127.0.0.1:$port/"
	sleep 1
	before=$(rss_kb "$pid")
	coproc HOLD { "$OUT/idleconns" -addr "127.0.0.1:$port" -n "$N"; }
	local line
	read -r line <&"${HOLD[0]}" || { log "$name: idleconns failed"; exit 1; }
	log "$name: $line"
	sleep "$SETTLE"
	after=$(rss_kb "$pid")
	exec {HOLD[1]}>&-
	wait "$HOLD_PID" 2>/dev/null || true
	awk -v n="$name" -v b="$before" -v a="$after" -v c="$N" 'BEGIN {
		printf "| %s | %.1f | %.1f | %.1f | %.2f |\n", n, b / 1024, a / 1024, (a - b) / 1024, (a - b) / c }'
}

echo "Machine: $(nproc) cores; $(go version | cut -d' ' -f3), $("$NGINX" -v 2>&1 | cut -d' ' -f3); $N idle keep-alive HTTP/1.1 connections, one GET each, RSS $SETTLE s after the last"
echo
echo "| proxy | RSS before (MB) | RSS with the connections (MB) | growth (MB) | per connection (KB) |"
echo "|---|---|---|---|---|"

"$NGINX" -p "$NGX" -c "$NGX/nginx.conf" -e "$NGX/logs/error.log" &
NGINX_PID=$!
PIDS+=("$NGINX_PID")
measure nginx "$NGINX_PORT" "$NGINX_PID"
kill "$NGINX_PID"; wait "$NGINX_PID" 2>/dev/null || true

"$OUT/baton" serve --http "127.0.0.1:$BATON_PORT" --admin "127.0.0.1:$((PORT_BASE + 4))" --state-dir "$OUT/state" \
	--blue "127.0.0.1:$APP_PORT" --green "127.0.0.1:$((PORT_BASE + 5))" --idle-timeout 300s >"$OUT/baton.log" 2>&1 &
BATON_PID=$!
PIDS+=("$BATON_PID")
measure baton "$BATON_PORT" "$BATON_PID"
