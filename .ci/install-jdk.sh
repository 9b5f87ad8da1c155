#!/usr/bin/env bash
# Installs a JDK (javac, jar, java) for e2e.TestJVMDeployAfterKillMidDeploy,
# which compiles a small com.sun.net.httpserver app and deploys it with
# baton: a real JVM, whose way of exiting (a zombie main thread while the
# other threads still hold the socket) is what the test is about. Skipped
# when javac is already there.
set -euo pipefail
if command -v javac >/dev/null && command -v jar >/dev/null; then
	echo "JDK already installed: $(javac -version 2>&1)"
	exit 0
fi
sudo=""
[[ "$(id -u)" -ne 0 ]] && sudo="sudo"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends default-jdk-headless
echo "installed $(javac -version 2>&1)"
