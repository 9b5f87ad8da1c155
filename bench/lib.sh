# Shared helpers of the bench scripts; sourced, not run.

log() { printf '%s\n' "$*" >&2; }

wait_ok() { # URL: wait up to 10s for a 2xx (self-signed certificates accepted)
	for _ in $(seq 200); do
		curl -sfk -o /dev/null "$1" 2>/dev/null && return 0
		sleep 0.05
	done
	log "no 2xx from $1"
	return 1
}

to_ms() { # wrk latency such as 812.00us, 1.23ms, 1.01s
	awk -v v="$1" 'BEGIN {
		if (v ~ /us$/) { sub(/us$/, "", v); printf "%.3f", v / 1000 }
		else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.3f", v }
		else if (v ~ /m$/) { sub(/m$/, "", v); printf "%.3f", v * 60000 }
		else { sub(/s$/, "", v); printf "%.3f", v * 1000 } }'
}

cpu_ticks() { # pid and its children: utime+stime in clock ticks
	local total=0 c
	for c in "$1" $(ps -o pid= --ppid "$1" 2>/dev/null); do
		total=$((total + $(awk '{ print $14 + $15 }' "/proc/$c/stat" 2>/dev/null || echo 0)))
	done
	echo "$total"
}

rss_kb() { # pid and its children (nginx's workers), VmRSS summed
	local pid=$1 total=0 kb c
	for c in "$pid" $(ps -o pid= --ppid "$pid" 2>/dev/null); do
		kb=$(awk '/^VmRSS:/ { print $2 }' "/proc/$c/status" 2>/dev/null || echo 0)
		total=$((total + ${kb:-0}))
	done
	echo "$total"
}

hwm_kb() { # pid and its children (nginx's workers), VmHWM summed
	local pid=$1 total=0 kb c
	for c in "$pid" $(ps -o pid= --ppid "$pid" 2>/dev/null); do
		kb=$(awk '/^VmHWM:/ { print $2 }' "/proc/$c/status" 2>/dev/null || echo 0)
		total=$((total + ${kb:-0}))
	done
	echo "$total"
}

# variant_env ENVS: splits a BATON_VARIANTS entry's comma-separated
# ENV=VAL list into envv (environment for the binary) and flags (the
# FLAG=--x=y entries, as --x=y).
variant_env() {
	envv=()
	flags=()
	local all=() e
	[ -n "${1:-}" ] && IFS=, read -r -a all <<<"$1"
	for e in "${all[@]}"; do
		if [[ "$e" == FLAG=* ]]; then
			flags+=("${e#FLAG=}")
		else
			envv+=("$e")
		fi
	done
}
