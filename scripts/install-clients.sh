#!/usr/bin/env bash
# The real OpenStack tools the conformance tests drive (tests/clients), each in its own
# virtualenv so their dependencies never meet openimds's:
#   .venv-clients  python-openstackclient, openstacksdk, python-neutronclient 9.0 (the legacy
#                  `neutron` command the seeds use), python-novaclient
#   .venv-ansible  Ansible 12.3 (which bundles openstack.cloud 2.5.0) on openstacksdk 4.14:
#                  openstack.cloud 2.5 reads `openstack.version`, which 4.15 removed.
# Versions are pinned so a release upstream cannot change what the tests see.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv-clients/bin/python ] || "$PY" -m venv .venv-clients
.venv-clients/bin/pip install -q --upgrade pip
.venv-clients/bin/pip install -q \
    python-openstackclient==10.5.0 openstacksdk==4.22.0 python-neutronclient==9.0.0 \
    python-novaclient==18.13.1
[ -x .venv-ansible/bin/python ] || "$PY" -m venv .venv-ansible
.venv-ansible/bin/pip install -q --upgrade pip
.venv-ansible/bin/pip install -q ansible==12.3.0 openstacksdk==4.14.0
echo "OpenStack clients installed in $(pwd)/.venv-clients and $(pwd)/.venv-ansible"
