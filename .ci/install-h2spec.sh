#!/usr/bin/env bash
# Installs h2spec, the HTTP/2 conformance tester, which e2e/TestH2Spec runs
# against baton's HTTPS listener. It goes to $(go env GOPATH)/bin, where the
# test looks for it if it is not on $PATH.
set -euo pipefail
H2SPEC_VERSION=v2.2.1+incompatible
bin="$(go env GOPATH)/bin/h2spec"
if [[ -x "$bin" ]] && go version -m "$bin" | grep -Fq "github.com/summerwind/h2spec	${H2SPEC_VERSION}"; then
	echo "h2spec ${H2SPEC_VERSION} already installed at $bin"
	exit 0
fi
go install "github.com/summerwind/h2spec/cmd/h2spec@${H2SPEC_VERSION}"
echo "installed h2spec ${H2SPEC_VERSION} at $bin"
