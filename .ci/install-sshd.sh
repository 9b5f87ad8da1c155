#!/usr/bin/env bash
# Installs OpenSSH (server and client) for the SSH launcher tests
# (launcher.TestSSH*, e2e.TestDeployOverSSH), which start their own sshd on
# 127.0.0.1 with a config, keys and port of their own; no system sshd is
# started or configured. Without /usr/sbin/sshd those tests fail with what
# to install; BATON_SKIP_SSHD=1 makes them skip instead.
set -euo pipefail
if [[ -x /usr/sbin/sshd ]]; then
	echo "sshd already installed: $(/usr/sbin/sshd -V 2>&1 | head -n1 || true)"
else
	sudo=""
	[[ "$(id -u)" -ne 0 ]] && sudo="sudo"
	$sudo apt-get update -qq
	# policy-rc.d (or no init system) keeps the package from starting a
	# system sshd; the tests need none.
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends openssh-server openssh-client
	echo "installed $(/usr/sbin/sshd -V 2>&1 | head -n1 || true)"
fi
# sshd's privilege separation directory; /run is emptied at boot.
if [[ "$(id -u)" -eq 0 ]]; then
	mkdir -p /run/sshd
fi
