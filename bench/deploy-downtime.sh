#!/usr/bin/env bash
# bench/deploy-downtime.sh: what users see during a blue/green deploy, through
# nginx and through baton, side by side in one run.
#
# The same probe ('baton probe': steady load of keep-alive, new-connection,
# slow and POST requests, never retried) runs through each proxy while it
# does SWITCHES deploys of the sample app, one every GAP seconds:
#
#   nginx  the common recipe: start the new version on the idle port, rewrite
#          the include file that names the upstream server, 'nginx -s reload',
#          then kill the old version at once (SIGTERM).
#   baton  start the new version on the idle port, then 'baton switch':
#          health checks, swap, drain the old version's requests in flight,
#          then stop it (SIGTERM, grace, SIGKILL).
#
# Writes bench/out/deploy-downtime/results.md (failed requests per switch,
# the longest window with no successful answer, p99 latency) and a timeline
# plot per proxy (SVG and PNG), and prints the table.
#
# Installs nginx and jq from Debian's packages if they are missing. All
# processes are this script's own, on 127.0.0.1, with config, state and logs
# under bench/out/deploy-downtime/; they are stopped by PID on exit.
#
# Environment (defaults in brackets):
#   SWITCHES [5]        deploys per proxy
#   GAP [2]             seconds between deploys
#   RATE [500]          probe requests per second
#   GRACEFUL [0]        1 starts the apps with --graceful (finish requests in
#                       flight on SIGTERM), which helps the nginx recipe
#   PORT_BASE [21000]   nginx on +180, baton on +280 (admin +290), apps on
#                       +181/+182 and +281/+282
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=$ROOT/bench/out/deploy-downtime
SWITCHES=${SWITCHES:-5}
GAP=${GAP:-2}
RATE=${RATE:-500}
GRACEFUL=${GRACEFUL:-0}
PORT_BASE=${PORT_BASE:-21000}

NGINX_PORT=$((PORT_BASE + 180))
BATON_PORT=$((PORT_BASE + 280))
ADMIN_PORT=$((PORT_BASE + 290))

. "$ROOT/bench/lib.sh" # log, wait_ok, to_ms, cpu_ticks, hwm_kb

# --- tools ---------------------------------------------------------------
need=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx)
command -v jq >/dev/null 2>&1 || need+=(jq)
command -v curl >/dev/null 2>&1 || need+=(curl)
if [ ${#need[@]} -gt 0 ]; then
	log "installing ${need[*]} from Debian's packages"
	sudo=""
	[ "$(id -u)" -eq 0 ] || sudo=sudo
	$sudo apt-get install -y "${need[@]}" >/dev/null 2>&1 ||
		{ $sudo apt-get update >/dev/null && $sudo apt-get install -y "${need[@]}" >/dev/null; }
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

rm -rf "$OUT"
mkdir -p "$OUT"
log "building baton into $OUT"
go build -o "$OUT/baton" ./cmd/baton
BATON=$OUT/baton

# --- processes -----------------------------------------------------------
PIDS=()
cleanup() {
	for pid in "${PIDS[@]}"; do
		kill "$pid" 2>/dev/null || true
	done
	wait 2>/dev/null || true
}
trap cleanup EXIT


# Refuse to start on a port that is taken: the probe would measure
# whatever else listens there.
for port in $NGINX_PORT $((PORT_BASE + 181)) $((PORT_BASE + 182)) $BATON_PORT $ADMIN_PORT $((PORT_BASE + 281)) $((PORT_BASE + 282)); do
	if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
		log "port $port is in use; set PORT_BASE to another value"
		exit 1
	fi
done

app_flags=()
[ "$GRACEFUL" = 1 ] && app_flags+=(--graceful)

# start_app PORT VERSION LOG: starts the sample app, sets APP_PID.
start_app() {
	"$BATON" sample-app --addr "127.0.0.1:$1" --version "$2" "${app_flags[@]}" >>"$3" 2>&1 &
	APP_PID=$!
	PIDS+=("$APP_PID")
	wait_ok "http://127.0.0.1:$1/health"
}

# start_probe NAME PORT: starts the probe through a proxy, sets PROBE_PID.
start_probe() {
	"$BATON" probe "http://127.0.0.1:$2/" --rate "$RATE" --keepalive-conns 16 \
		--new-conn 0.1 --slow 0.05 --slow-min 300ms --slow-max 2s --post 0.1 --check-echo \
		--max-failures 1000000000 --json --plot "$OUT/$1-timeline.svg" --plot "$OUT/$1-timeline.png" \
		${3:+--admin "$3"} >"$OUT/$1-probe.json" 2>"$OUT/$1-probe.log" &
	PROBE_PID=$!
	PIDS+=("$PROBE_PID")
}

stop_probe() {
	kill -INT "$PROBE_PID"
	wait "$PROBE_PID" || log "probe exited $?"
}

# --- nginx: rewrite include, reload, kill old ---------------------------
run_nginx() {
	local dir=$OUT/run-nginx ports=($((PORT_BASE + 181)) $((PORT_BASE + 182)))
	mkdir -p "$dir/logs" "$dir/tmp"
	local user_line=""
	[ "$(id -u)" -eq 0 ] && user_line="user root;"
	echo "server 127.0.0.1:${ports[0]};" >"$dir/upstream.conf"
	cat >"$dir/nginx.conf" <<EOF
$user_line
worker_processes 2;
daemon off;
pid $dir/nginx.pid;
error_log $dir/logs/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $dir/tmp/body;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;
    upstream app_live {
        include $dir/upstream.conf;
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
        }
    }
}
EOF
	start_app "${ports[0]}" v1 "$dir/apps.log"
	local old_pid=$APP_PID live=0
	"$NGINX" -p "$dir" -c "$dir/nginx.conf" -e "$dir/logs/error.log" &
	PIDS+=("$!")
	wait_ok "http://127.0.0.1:$NGINX_PORT/"

	log "nginx: $SWITCHES deploys under $RATE req/s"
	start_probe nginx "$NGINX_PORT"
	sleep 1
	for i in $(seq "$SWITCHES"); do
		local idle=$((1 - live))
		start_app "${ports[$idle]}" "v$((i + 1))" "$dir/apps.log"
		echo "server 127.0.0.1:${ports[$idle]};" >"$dir/upstream.conf"
		"$NGINX" -p "$dir" -c "$dir/nginx.conf" -e "$dir/logs/error.log" -s reload
		kill "$old_pid"
		wait "$old_pid" 2>/dev/null || true
		old_pid=$APP_PID live=$idle
		sleep "$GAP"
	done
	sleep 1
	stop_probe
}

# --- baton: start new, baton switch --------------------------------------
run_baton() {
	local dir=$OUT/run-baton ports=($((PORT_BASE + 281)) $((PORT_BASE + 282)))
	mkdir -p "$dir"
	start_app "${ports[0]}" v1 "$dir/apps.log"
	local http_only=()
	"$BATON" serve --help 2>&1 | grep -q -- --http-only && http_only=(--http-only)
	BATON_ADMIN_TOKEN="" "$BATON" serve --http "127.0.0.1:$BATON_PORT" "${http_only[@]}" \
		--admin "127.0.0.1:$ADMIN_PORT" --blue "127.0.0.1:${ports[0]}" --green "127.0.0.1:${ports[1]}" \
		--state-dir "$dir/state" >"$dir/baton.log" 2>&1 &
	PIDS+=("$!")
	wait_ok "http://127.0.0.1:$BATON_PORT/"

	log "baton: $SWITCHES deploys under $RATE req/s"
	start_probe baton "$BATON_PORT" "http://127.0.0.1:$ADMIN_PORT"
	sleep 1
	local live=0
	for i in $(seq "$SWITCHES"); do
		local idle=$((1 - live))
		start_app "${ports[$idle]}" "v$((i + 1))" "$dir/apps.log"
		BATON_ADMIN_TOKEN="" "$BATON" switch --admin "http://127.0.0.1:$ADMIN_PORT" >>"$dir/switch.log"
		live=$idle
		sleep "$GAP"
	done
	sleep 1
	stop_probe
}

run_nginx
run_baton

# --- table ---------------------------------------------------------------
row() { # NAME LABEL
	jq -r --arg name "$2" --argjson n "$SWITCHES" '
		[$name, ($n|tostring), (.requests|tostring), (.failed|tostring),
		 ((.failed / $n * 10 | round / 10)|tostring),
		 ((.longest_gap_ms|round|tostring) + " ms"), ((.p99_ms*10|round/10|tostring) + " ms"),
		 ([.failures_by_kind | to_entries[] | "\(.key) \(.value)"] | join(", ") | if . == "" then "-" else . end)]
		| "| " + join(" | ") + " |"' "$OUT/$1-probe.json"
}
{
	echo "Deploys under load on $(uname -m), $(nproc) cores: $SWITCHES deploys each, $RATE req/s of keep-alive, new-connection, slow (300ms-2s) and POST requests; app graceful=$GRACEFUL."
	echo
	echo "| proxy | deploys | requests | failed | failed per deploy | longest no-success window | p99 latency | failures by kind |"
	echo "|---|---|---|---|---|---|---|---|"
	row nginx "nginx $("$NGINX" -v 2>&1 | sed 's|.*/||'): rewrite include, reload, kill old"
	row baton "baton: start new, baton switch"
	echo
	echo "Timelines: nginx-timeline.svg, baton-timeline.svg (and .png) in bench/out/deploy-downtime/."
} >"$OUT/results.md"
cat "$OUT/results.md"
