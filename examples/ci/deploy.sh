#!/usr/bin/env bash
# The deploy step of a CI pipeline, shared by examples/jenkins/Jenkinsfile
# and examples/github-actions/deploy.yml: it hands a build to baton, which
# starts it on the idle colour, health-checks it, switches traffic, drains
# and stops the old version. The job fails (non-zero exit, with baton's
# reason) when the deploy fails, and the old version then keeps serving.
#
# Inputs, from the environment:
#   BATON_SERVICE     the service to deploy (may be left out when baton has one)
#   BATON_ARTIFACT    the build: a jar, a binary, ... (uploaded to baton)
#   BATON_VERSION     the version, e.g. the build number (letters, digits, . _ + -)
#   BATON_PROBE_URL   optional: a public URL to send steady load to during the
#                     deploy; the job fails if users would have seen a failure
#   BATON_ADMIN       baton's admin API: https://baton.internal:9900 (admin TLS),
#                     or left out with BATON_SSH_TUNNEL
#   BATON_ADMIN_CA    optional: the CA file to trust for an https BATON_ADMIN
#   BATON_ADMIN_TOKEN or BATON_ADMIN_TOKEN_FILE: the admin token (from the CI
#                     system's credentials store; never printed)
#   BATON_SSH_TUNNEL  optional: user@host of baton's machine; the admin API is
#                     then reached through 'ssh -L' to its loopback port
#                     (BATON_TUNNEL_ADMIN_PORT, default 9900), and the host key
#                     must be in known_hosts already (StrictHostKeyChecking=yes)
#   BATON             optional: the baton CLI to use (default: baton on PATH)
#
# Exit status: 0 deployed; 1 the deploy (or its probe) failed, and the old
# version keeps serving; 2 the inputs are wrong.
set -euo pipefail

baton=${BATON:-baton}
usage() { echo "deploy.sh: $*" >&2; echo "deploy.sh: see the top of $0 for its inputs" >&2; exit 2; }

[ -n "${BATON_ARTIFACT:-}" ] || usage "BATON_ARTIFACT is not set: the build to deploy"
[ -f "$BATON_ARTIFACT" ] || usage "BATON_ARTIFACT $BATON_ARTIFACT is not a file (did the build step run?)"
[ -n "${BATON_VERSION:-}" ] || usage "BATON_VERSION is not set: e.g. the build number"
command -v "$baton" >/dev/null || usage "the baton CLI ($baton) is not on PATH; set BATON to its path"
if [ -z "${BATON_ADMIN_TOKEN:-}" ] && [ -z "${BATON_ADMIN_TOKEN_FILE:-}" ]; then
	echo "deploy.sh: no BATON_ADMIN_TOKEN or BATON_ADMIN_TOKEN_FILE: fine only for a baton without a token, on this machine" >&2
fi

if [ -n "${BATON_SSH_TUNNEL:-}" ]; then
	port=${BATON_TUNNEL_ADMIN_PORT:-9900}
	local_port=$(( 20000 + RANDOM % 20000 ))
	echo "deploy.sh: opening an SSH tunnel to $BATON_SSH_TUNNEL for baton's admin API (127.0.0.1:$port there)"
	ssh -N -o ExitOnForwardFailure=yes -o StrictHostKeyChecking=yes -o BatchMode=yes \
		-L "127.0.0.1:$local_port:127.0.0.1:$port" "$BATON_SSH_TUNNEL" &
	tunnel=$!
	trap 'kill "$tunnel" 2>/dev/null || true' EXIT
	export BATON_ADMIN="http://127.0.0.1:$local_port"
	for _ in $(seq 100); do
		if (exec 3<>"/dev/tcp/127.0.0.1/$local_port") 2>/dev/null; then break; fi
		kill -0 "$tunnel" 2>/dev/null || { echo "deploy.sh: the SSH tunnel to $BATON_SSH_TUNNEL failed" >&2; exit 1; }
		sleep 0.1
	done
fi

args=(deploy --artifact "$BATON_ARTIFACT" --version "$BATON_VERSION")
[ -n "${BATON_SERVICE:-}" ] && args+=(--service "$BATON_SERVICE")
[ -n "${BATON_PROBE_URL:-}" ] && args+=(--probe "$BATON_PROBE_URL")

echo "deploy.sh: deploying $BATON_ARTIFACT as version $BATON_VERSION${BATON_SERVICE:+ of service $BATON_SERVICE} through ${BATON_ADMIN:-the default admin address}"
if "$baton" "${args[@]}"; then
	echo "deploy.sh: version $BATON_VERSION is live"
else
	status=$?
	echo "deploy.sh: the deploy of version $BATON_VERSION failed (exit $status); baton's reason is above, and the version that served before still serves" >&2
	exit "$status"
fi
