#!/usr/bin/env bash
# Installs Pebble, Let's Encrypt's test ACME server, which the ACME tests
# (edge.TestACMEWithPebble) start on loopback. It goes to $(go env GOPATH)/bin,
# where the tests look for it if it is not on $PATH.
# Without it those tests fail; BATON_SKIP_PEBBLE=1 makes them skip instead.
set -euo pipefail
PEBBLE_VERSION=v2.10.1
bin="$(go env GOPATH)/bin/pebble"
if [[ -x "$bin" ]] && go version -m "$bin" | grep -Eq "^\s+mod\s+github.com/letsencrypt/pebble/v2\s+${PEBBLE_VERSION}\s"; then
	echo "pebble ${PEBBLE_VERSION} already installed at $bin"
	exit 0
fi
go install "github.com/letsencrypt/pebble/v2/cmd/pebble@${PEBBLE_VERSION}"
echo "installed pebble ${PEBBLE_VERSION} at $bin"
