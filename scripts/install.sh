#!/usr/bin/env bash
# Install everything openimds needs on Debian 12 (as root): system tools and a virtualenv in .venv.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
# cloud-init is installed only so tests can import its readers; this file keeps it from ever
# acting on this machine.
mkdir -p /etc/cloud && touch /etc/cloud/cloud-init.disabled
apt-get update -q
apt-get install -y -q --no-install-recommends \
    python3 python3-venv python3-pip iproute2 iptables haproxy dnsmasq-base busybox udhcpc \
    postgresql cloud-init procps ca-certificates wrk curl nftables openssl isc-dhcp-client \
    keepalived
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -e '.[test]'
echo "openimds installed in $(pwd)/.venv"
# The real OpenStack clients the conformance tests drive (own virtualenvs, pinned).
bash scripts/install-clients.sh
