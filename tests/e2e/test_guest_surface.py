"""The guest surface AWS-era clients expect, through the whole chain on a real all-in-one node:
session tokens in `required` mode with cloud-init's EC2 helpers, botocore (IMDSv1 disabled) and
the `ec2-metadata` package inside guest namespaces; refusals (tokenless, another instance's
token, a token PUT through a guest-side proxy, the endpoint disabled); the per-server counters;
and the signed identity document checked with openssl against the control plane's certificate.
Every metadata request leaves a guest namespace, never the host's."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.cloud import Cloud, _clean_env
from tests.fabric.lab import wait_for
from tests.metadata.test_aws_profile import make_signer
from tests.support.daemons import stop_by_pidfile

pytestmark = pytest.mark.root

REGION = "e2e-region-1"
# botocore's region is the zone minus its last letter: AWS-style zone names make it exact.
ZONE = REGION + "a"
SYSTEM_PYTHON = "/usr/bin/python3"


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:

    from tests.conftest import IN_CI

    if os.geteuid() != 0:
        if IN_CI:
            pytest.fail("CI=true but not root: end-to-end tests must run in CI")
        pytest.skip("needs root (network namespaces)")
    node = Cloud()
    keys = tmp_path_factory.mktemp("identity")
    _, cert = make_signer(keys)
    with open(node.extra_conf, "a") as fh:
        fh.write(f"region_name = {REGION}\nmetadata_ipv6_addresses = fd00:ec2::254\n"
                 "[metadata]\n"
                 f"identity_key_file = {keys / 'identity.key'}\n"
                 f"identity_cert_file = {cert}\n"
                 "token_secret = e2e-token-secret\n")
    try:
        node.start()
        yield node
    finally:
        node.cleanup()


def _uid() -> str:
    return str(time.monotonic_ns())[-6:]


def in_guest(guest: str, code: str, *args: str, python: str = sys.executable,
             env: dict[str, str] | None = None) -> Any:
    """Run `code` with `python` inside the guest namespace; its last stdout line is JSON."""
    proc = subprocess.run(["ip", "netns", "exec", guest, python, "-c", code, *args],
                          capture_output=True, text=True, timeout=120,
                          env=_clean_env(env))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


HTTP = """
import json, sys, urllib.request, urllib.error
method, path = sys.argv[1], sys.argv[2]
headers = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
req = urllib.request.Request("http://169.254.169.254" + path, method=method, headers=headers)
try:
    r = urllib.request.urlopen(req, timeout=10)
    out = {"status": r.status, "body": r.read().decode("latin-1"), "headers": {k.lower(): v for k, v in r.headers.items()}}
except urllib.error.HTTPError as e:
    out = {"status": e.code, "body": e.read().decode("latin-1"), "headers": {k.lower(): v for k, v in e.headers.items()}}
print(json.dumps(out))
"""


def http(guest: str, method: str, path: str, **headers: str) -> dict[str, Any]:
    return dict(in_guest(guest, HTTP, method, path, json.dumps(headers)))


def token(guest: str, ttl: str = "300") -> str:
    got = http(guest, "PUT", "/latest/api/token", **{"X-aws-ec2-metadata-token-ttl-seconds": ttl})
    assert got["status"] == 200, got
    # haproxy lower-cases header names.
    assert got["headers"]["x-aws-ec2-metadata-token-ttl-seconds"] == ttl
    # The internal hop-limit header never reaches the guest.
    assert "x-openimds-hop-limit" not in got["headers"]
    return str(got["body"])


CLOUD_INIT_EC2 = """
import json
from cloudinit import url_helper
from cloudinit.sources.helpers import ec2
base = "http://169.254.169.254"
resp = url_helper.readurl(base + "/latest/api/token", request_method="PUT",
                          headers={"X-aws-ec2-metadata-token-ttl-seconds": "21600"}, timeout=5)
tok = resp.contents.decode()
cb = lambda url: {"X-aws-ec2-metadata-token": tok}
md = ec2.get_instance_metadata(api_version="2021-03-23", metadata_address=base,
                               headers_cb=cb, retries=0, timeout=5)
ident = ec2.get_instance_identity(api_version="2021-03-23", metadata_address=base,
                                  headers_cb=cb, retries=0, timeout=5)
ud = ec2.get_instance_userdata(api_version="2021-03-23", metadata_address=base,
                               headers_cb=cb, retries=0, timeout=5)
print(json.dumps({"md": md, "identity": ident,
                  "ud": ud.decode() if isinstance(ud, bytes) else ud}, default=str))
"""

BOTOCORE = """
import json
import botocore.session
from botocore.utils import IMDSFetcher, IMDSRegionProvider, resolve_imds_endpoint_mode
session = botocore.session.get_session()
region = IMDSRegionProvider(session).provide()

class Fetcher(IMDSFetcher):
    def get(self, path):
        tok = self._fetch_metadata_token()
        return self._get_request(path, self._default_retry, tok).text

# The settings botocore's own providers read from the environment (as IMDSRegionProvider does).
config = {k: session.get_config_variable(k) for k in (
    "ec2_metadata_service_endpoint", "ec2_metadata_v1_disabled")}
config["ec2_metadata_service_endpoint_mode"] = resolve_imds_endpoint_mode(session)
f = Fetcher(timeout=5, num_attempts=1, config=config)
print(json.dumps({"region": region, "instance_id": f.get("latest/meta-data/instance-id"),
                  "zone": f.get("latest/meta-data/placement/availability-zone/"),
                  "base": f.get_base_url(), "v1_disabled": bool(f._imds_v1_disabled)}))
"""

EC2_METADATA = """
import json
from ec2_metadata import EC2Metadata
m = EC2Metadata()
nics = m.network_interfaces
nic = nics[m.mac]
print(json.dumps({
    "instance_id": m.instance_id, "region": m.region, "account_id": m.account_id,
    "zone": m.availability_zone, "zone_id": m.availability_zone_id, "mac": m.mac,
    "life_cycle": m.instance_life_cycle, "partition": m.partition, "domain": m.domain,
    "private_ipv4": m.private_ipv4, "nic_ipv4s": nic.private_ipv4s, "vpc": nic.vpc_id,
    "subnet_cidr": nic.subnet_ipv4_cidr_block, "user_data": m.user_data.decode(),
    "tags": dict(m.tags), "keys": {k: v for k, v in m.public_keys.items()},
    "document": m.instance_identity_document,
}))
"""


def _require_cloud_init() -> None:
    ok = Path(SYSTEM_PYTHON).exists() and subprocess.run(
        [SYSTEM_PYTHON, "-c", "import cloudinit"], capture_output=True).returncode == 0
    if not ok:
        from tests.conftest import IN_CI

        reason = f"{SYSTEM_PYTHON} cannot import cloudinit (apt-get install cloud-init)"
        if IN_CI:
            pytest.fail(reason)
        pytest.skip(reason)


def _wait_status(guest: str, path: str, status: int, within: float = 30, **headers: str
                 ) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while True:
        got = http(guest, "GET", path, **headers)
        if got["status"] == status or time.monotonic() > deadline:
            return got
        time.sleep(0.2)


def test_required_mode_with_real_clients(cloud: Cloud, tmp_path: Path) -> None:
    _require_cloud_init()
    tag = _uid()
    net = cloud.cli("net-create", f"v2-{tag}")
    cloud.resource_ids.add(net["id"])
    cloud.cli("subnet-create", "--no-gateway", "--name", f"v2-sub-{tag}", f"v2-{tag}",
              "192.168.77.0/24")
    user_data = tmp_path / "ud"
    user_data.write_bytes(b"#cloud-config\nhostname: imdsv2\n")
    server = cloud.cli("server", "create", f"v2-vm-{tag}", "--network", f"v2-{tag}",
                       "--availability-zone", ZONE, "--user-data", str(user_data),
                       "--property", "team=blue", "--metadata-http-tokens", "required",
                       "--metadata-instance-metadata-tags", "enabled")
    other = cloud.cli("server", "create", f"v2-other-{tag}", "--network", f"v2-{tag}")
    port = cloud.server_port(server["id"])
    ip = port["fixed_ips"][0]["ip_address"]
    guest = cloud.boot_guest(port["id"])
    cloud.dhcp(guest)
    other_guest = cloud.boot_guest(cloud.server_port(other["id"])["id"])
    cloud.dhcp(other_guest)
    cloud.metadata(other_guest)  # the proxy has converged (optional mode answers tokenless)

    # required: a tokenless request is refused, on both trees.
    got = _wait_status(guest, "/latest/meta-data/instance-id", 401)
    assert got["status"] == 401, got
    assert http(guest, "GET", "/openstack/latest/meta_data.json")["status"] == 401
    tok = token(guest)
    ok = http(guest, "GET", "/openstack/latest/meta_data.json",
              **{"X-aws-ec2-metadata-token": tok})
    assert ok["status"] == 200 and json.loads(ok["body"])["uuid"] == server["id"]
    # A's token sent by B: 401 (bound to the instance), even though B is in optional mode.
    stolen = http(other_guest, "GET", "/latest/meta-data/instance-id",
                  **{"X-aws-ec2-metadata-token": tok})
    assert stolen["status"] == 401
    # A token PUT that passed through a proxy of the guest's (it carries X-Forwarded-For).
    relayed = http(guest, "PUT", "/latest/api/token",
                   **{"X-aws-ec2-metadata-token-ttl-seconds": "60",
                      "X-Forwarded-For": "10.9.9.9"})
    assert relayed["status"] == 403
    assert http(guest, "PUT", "/latest/api/token")["status"] == 400  # no TTL
    assert http(guest, "GET", "/latest/api/token")["status"] == 405

    # cloud-init's EC2 helpers, AWS mode (IMDSv2).
    ci = in_guest(guest, CLOUD_INIT_EC2, python=SYSTEM_PYTHON)
    assert ci["md"]["instance-id"].startswith("i-")
    assert ci["md"]["placement"]["region"] == REGION
    assert ci["md"]["local-ipv4"] == ip
    assert ci["md"]["tags"]["instance"] == {"team": "blue"}
    assert ci["identity"]["document"]["region"] == REGION
    assert ci["ud"] == user_data.read_text()

    # botocore, IMDSv1 disabled: tokens only; the region is the configured one.
    boto = in_guest(guest, BOTOCORE, env={"AWS_EC2_METADATA_V1_DISABLED": "true",
                                          "AWS_CONFIG_FILE": "/dev/null",
                                          "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"})
    assert boto == {"region": REGION, "instance_id": ci["md"]["instance-id"], "zone": ZONE,
                    "base": "http://169.254.169.254/", "v1_disabled": True}

    # The ec2-metadata package (IMDSv2 only).
    em = in_guest(guest, EC2_METADATA)
    assert em["instance_id"] == ci["md"]["instance-id"] and em["region"] == REGION
    assert em["account_id"] == server["tenant_id"]
    assert em["zone"] == ZONE and em["zone_id"] == f"{REGION}-{ZONE}"
    assert em["mac"] == port["mac_address"] and em["private_ipv4"] == ip
    assert em["nic_ipv4s"] == [ip] and em["vpc"] == net["id"]
    assert em["subnet_cidr"] == "192.168.77.0/24"
    assert em["life_cycle"] == "on-demand" and em["partition"] == "openstack"
    assert em["tags"] == {"team": "blue"}
    assert em["user_data"] == user_data.read_text()

    # The identity document verifies against the certificate the control plane publishes.
    base = "/latest/dynamic/instance-identity/"
    headers = {"X-aws-ec2-metadata-token": token(guest)}
    document = http(guest, "GET", base + "document", **headers)["body"]
    pkcs7 = http(guest, "GET", base + "rsa2048", **headers)["body"]
    cert = cloud.cli("server", "identity-certificate")["certificate"]
    (tmp_path / "document").write_text(document)
    (tmp_path / "sig.pem").write_text(f"-----BEGIN PKCS7-----\n{pkcs7}\n-----END PKCS7-----\n")
    (tmp_path / "cert.pem").write_text(cert)
    verified = subprocess.run(
        ["openssl", "smime", "-verify", "-in", str(tmp_path / "sig.pem"), "-inform", "PEM",
         "-content", str(tmp_path / "document"), "-certfile", str(tmp_path / "cert.pem"),
         "-noverify"], capture_output=True, timeout=30)
    assert verified.returncode == 0, verified.stderr
    assert json.loads(verified.stdout)["instanceId"] == ci["md"]["instance-id"]

    # Operators see which servers still make tokenless requests (saved once a second).
    deadline = time.monotonic() + 20
    while True:
        shown = cloud.cli("server", "show", server["id"])
        usage = shown["metadata_token_usage"]
        if usage["tokenless_requests"] >= 2 and usage["invalid_token_requests"] == 0:
            break
        assert time.monotonic() < deadline, usage
        time.sleep(0.3)
    assert shown["metadata_options"]["http_tokens"] == "required"
    other_usage = cloud.cli("server", "show", other["id"])["metadata_token_usage"]
    assert other_usage["invalid_token_requests"] >= 1  # the stolen token

    # http_endpoint disabled: every request from that server gets 403, within the feed's reach.
    cloud.cli_raw("server", "set", server["id"], "--metadata-http-endpoint", "disabled")
    got = _wait_status(guest, "/latest/meta-data/instance-id", 403, within=10,
                       **{"X-aws-ec2-metadata-token": tok})
    assert got["status"] == 403
    assert http(guest, "PUT", "/latest/api/token",
                **{"X-aws-ec2-metadata-token-ttl-seconds": "60"})["status"] == 403
    # The other server is untouched.
    assert http(other_guest, "GET", "/latest/meta-data/instance-id")["status"] == 200


def test_optional_mode_cloud_init_non_aws_path(cloud: Cloud) -> None:
    """cloud-init's EC2 helpers without a token (its non-AWS mode) keep working in optional
    mode, through the router path."""
    _require_cloud_init()
    tag = _uid()
    net = cloud.cli("net-create", f"v1-{tag}")
    cloud.resource_ids.add(net["id"])
    cloud.cli("subnet-create", "--name", f"v1-sub-{tag}", f"v1-{tag}", "172.30.9.0/24")
    router = cloud.cli("router-create", f"v1-r-{tag}")
    cloud.resource_ids.add(router["id"])
    cloud.cli_raw("router-interface-add", f"v1-r-{tag}", f"v1-sub-{tag}")
    server = cloud.cli("server", "create", f"v1-vm-{tag}", "--network", f"v1-{tag}")
    guest = cloud.boot_guest(cloud.server_port(server["id"])["id"])
    cloud.dhcp(guest)
    cloud.metadata(guest)
    code = (
        "import json\n"
        "from cloudinit.sources.helpers import ec2\n"
        "md = ec2.get_instance_metadata(api_version='2009-04-04',"
        " metadata_address='http://169.254.169.254', retries=0, timeout=5)\n"
        "print(json.dumps({'iid': md['instance-id'], 'keys': sorted(md)}))\n"
    )
    got = in_guest(guest, code, python=SYSTEM_PYTHON)
    assert got["iid"].startswith("i-") and "placement" in got["keys"]
    # Tokens work on the router path too.
    tok = token(guest, "60")
    ok = http(guest, "GET", "/latest/meta-data/placement/region",
              **{"X-aws-ec2-metadata-token": tok})
    assert (ok["status"], ok["body"]) == (200, REGION)


def _link_local_ready(guest: str, within: float = 30) -> str:
    """The guest's EUI-64 link-local address once DAD has finished."""
    def ready() -> str | None:
        out = subprocess.run(["ip", "-n", guest, "-6", "-o", "addr", "show", "dev", "eth0",
                              "scope", "link"], capture_output=True, text=True).stdout
        if "fe80::" in out and "tentative" not in out:
            return out.split()[3].split("/")[0]
        return None

    return str(wait_for(ready, timeout=within, interval=0.2))


CURL6 = ["curl", "-g", "-s", "--noproxy", "*", "-m", "5", "-w", "\\n%{http_code}"]


def curl6(guest: str, path: str, *args: str) -> tuple[int, str]:
    proc = subprocess.run(
        ["ip", "netns", "exec", guest, *CURL6, *args,
         f"http://[fe80::a9fe:a9fe%25eth0]{path}"],
        capture_output=True, text=True, timeout=30, env=_clean_env())
    body, _, code = proc.stdout.rpartition("\n")
    return int(code or "0"), body


def _accept_ra(guest: str) -> None:
    """What a guest OS does by default: take router advertisements on its interface."""
    subprocess.run(["ip", "netns", "exec", guest, "sysctl", "-qw",
                    "net.ipv6.conf.eth0.forwarding=0", "net.ipv6.conf.eth0.accept_ra=1",
                    "net.ipv6.conf.eth0.autoconf=1"], check=True, env=_clean_env())


def _addresses6(guest: str) -> list[str]:
    out = subprocess.run(["ip", "-n", guest, "-6", "-o", "addr", "show", "dev", "eth0"],
                         capture_output=True, text=True).stdout
    return [line.split()[3].split("/")[0] for line in out.splitlines()]


def _usable_address(guest: str, address: str) -> bool:
    out = subprocess.run(["ip", "-n", guest, "-6", "-o", "addr", "show", "dev", "eth0"],
                         capture_output=True, text=True).stdout
    return any(line.split()[3].split("/")[0] == address and "tentative" not in line
               for line in out.splitlines())


CRAWL = """
import http.client, json, sys
# One guest hammering the endpoint over one keep-alive connection (reopened after a close).
source = (sys.argv[3], 0) if len(sys.argv) > 3 else None
conn = http.client.HTTPConnection(sys.argv[1], 80, timeout=10, source_address=source)
codes, retry_after = [], None
for _ in range(int(sys.argv[2])):
    conn.request("GET", "/latest/meta-data/instance-id")
    r = conn.getresponse()
    r.read()
    codes.append(r.status)
    if r.status == 429 and retry_after is None:
        retry_after = r.getheader("Retry-After")
print(json.dumps({"codes": codes, "retry_after": retry_after}))
"""


def test_ipv6_only_instance_over_the_dhcp_path(cloud: Cloud) -> None:
    """An IPv6-only guest on an isolated slaac network: the DHCP namespace's dnsmasq advertises
    the prefix, the guest forms its fixed IP (EUI-64) with no default route, and reaches
    fe80::a9fe:a9fe on the DHCP port from its link-local address (identified by the MAC it
    encodes) and from its global address (identified as a fixed IP); tokens and the
    per-instance rate limit behave as over IPv4."""
    _require_cloud_init()
    tag = _uid()
    net = cloud.cli("net-create", f"v6-{tag}")
    cloud.resource_ids.add(net["id"])
    cloud.cli("subnet", "create", f"v6-sub-{tag}", "--network", f"v6-{tag}", "--subnet-range",
              "fd00:6e:7a::/64", "--ip-version", "6", "--no-gateway",
              "--ipv6-address-mode", "slaac", "--ipv6-ra-mode", "slaac")
    server = cloud.cli("server", "create", f"v6-vm-{tag}", "--network", f"v6-{tag}")
    port = cloud.server_port(server["id"])
    guest = cloud.boot_guest(port["id"])
    _accept_ra(guest)
    _link_local_ready(guest)
    address = port["fixed_ips"][0]["ip_address"]
    wait_for(lambda: _usable_address(guest, address), timeout=90, interval=0.3)
    routes = subprocess.run(["ip", "-n", guest, "-6", "route"], capture_output=True,
                            text=True).stdout
    assert "default" not in routes, routes  # the DHCP port is nobody's router
    status, body = _curl6_until(guest, "/openstack/latest/meta_data.json")
    assert json.loads(body)["uuid"] == server["id"]
    # From the global address: identified as the port's fixed IP.
    status, body = curl6(guest, "/openstack/latest/meta_data.json", "--interface", address)
    assert status == 200 and json.loads(body)["uuid"] == server["id"]
    status, tok = curl6(guest, "/latest/api/token", "-X", "PUT", "-H",
                        "X-aws-ec2-metadata-token-ttl-seconds: 60")
    assert status == 200
    status, iid = curl6(guest, "/latest/meta-data/instance-id", "-H",
                        f"X-aws-ec2-metadata-token: {tok}")
    assert status == 200 and iid.startswith("i-")
    # The token is the instance's, whichever of its addresses presents it.
    assert curl6(guest, "/latest/meta-data/instance-id", "-H",
                 f"X-aws-ec2-metadata-token: {tok}", "--interface", address) == (200, iid)
    assert curl6(guest, "/latest/meta-data/instance-id", "-H",
                 "X-aws-ec2-metadata-token: forged")[0] == 401
    # cloud-init's OpenStack reader over the IPv6 link-local address.
    got = in_guest(guest, OPENSTACK_READER, python=SYSTEM_PYTHON)
    assert got["uuid"] == server["id"]
    assert [(n["type"], n["ip_address"]) for n in got["net"]] == [("ipv6_slaac", address)]

    # The per-instance rate limit (burst 200, 5/s): one budget over both IPv6 addresses.
    crawl = in_guest(guest, CRAWL, "fe80::a9fe:a9fe%eth0", "150")
    assert crawl["codes"] == [200] * 150
    # From the global address: the same bucket.
    crawl = in_guest(guest, CRAWL, "fe80::a9fe:a9fe%eth0", "150", address)
    codes = crawl["codes"]
    assert codes.count(429) >= 50 and codes[:10] == [200] * 10, codes
    assert int(crawl["retry_after"]) >= 1


def _curl6_until(guest: str, path: str, *args: str, within: float = 60) -> tuple[int, str]:
    """The first 200 answer (agents and proxies may still be converging)."""
    def ok() -> tuple[int, str] | None:
        got = curl6(guest, path, *args)
        return got if got[0] == 200 else None

    return wait_for(ok, timeout=within, interval=0.3)  # type: ignore[no-any-return]


DHCLIENT6_HOOK = """#!/bin/sh
# Only `ip` on the guest's interface, never the host's /etc (MACHINE-NOTES).
case "$reason" in
  BOUND6|RENEW6|REBIND6)
    [ -n "$new_ip6_address" ] && ip -6 addr replace "$new_ip6_address/$new_ip6_prefixlen" \\
        dev "$interface" nodad ;;
esac
exit 0
"""


def _dhcpv6(guest: str, state: Path) -> None:
    """ISC dhclient asks dnsmasq for the guest's address (DHCPv6 stateful), once."""
    dhclient = shutil.which("dhclient")
    if dhclient is None:
        from tests.conftest import IN_CI

        reason = "dhclient missing (apt-get install isc-dhcp-client)"
        if IN_CI:
            pytest.fail(reason)
        pytest.skip(reason)
    hook = state / "dhclient6.sh"
    hook.write_text(DHCLIENT6_HOOK)
    hook.chmod(0o755)
    state.chmod(0o755)
    pidfile = state / f"dhclient6-{guest}.pid"
    try:
        proc = subprocess.run(
            ["ip", "netns", "exec", guest, dhclient, "-6", "-1", "-sf", str(hook),
             "-lf", str(state / f"dhclient6-{guest}.leases"), "-pf", str(pidfile), "eth0"],
            capture_output=True, text=True, timeout=90, env=_clean_env())
        assert proc.returncode == 0, proc.stderr[-2000:]
    finally:
        stop_by_pidfile(pidfile)  # it stays to renew: ours to stop, by pid


OPENSTACK_READER = (
    "import json\n"
    "from cloudinit.sources.helpers import openstack\n"
    "r = openstack.MetadataReader('http://[fe80::a9fe:a9fe%25eth0]', timeout=5, retries=2)\n"
    "r._read_ec2_metadata = lambda: {}  # 22.4.2 crawls 169.254.169.254 regardless\n"
    "d = r.read_v2()\n"
    "print(json.dumps({'uuid': d['metadata']['uuid'], 'project': d['metadata']['project_id'],"
    " 'net': d['networkdata']['networks']}))\n"
)


def test_ipv6_two_projects_same_prefix_and_address_router_and_dhcp_paths(
        cloud: Cloud, tmp_path: Path) -> None:
    """Two projects, each with a dhcpv6-stateful network on the same prefix and a server with
    the same fixed IPv6 address; project A routes its network (the router advertises it and
    answers fe80::a9fe:a9fe), project B's stays isolated (the DHCP port advertises it and
    answers). Each guest gets its address from dnsmasq over DHCPv6, and cloud-init's OpenStack
    reader over fe80::a9fe:a9fe returns its own instance, from link-local and global address
    alike: nothing leaks between the projects."""
    _require_cloud_init()
    tag = _uid()
    prefix, gateway, fixed = "fd00:6e:7b::/64", "fd00:6e:7b::1", "fd00:6e:7b::5"
    tenants = []
    for name in ("a", "b"):
        proj = f"v6p-{name}-{tag}"
        for args in (("project", "create", proj),
                     ("user", "create", f"v6u-{name}-{tag}", "--project", proj, "--password",
                      "pw-" + tag)):
            made = cloud.cli_raw(*args, *cloud.conf_args())
            assert made.returncode == 0, made.stderr
        env = {**cloud.env, "OS_USERNAME": f"v6u-{name}-{tag}", "OS_PASSWORD": "pw-" + tag,
               "OS_PROJECT_NAME": proj}
        net = cloud.cli("network", "create", "same6", env=env)
        subnet = cloud.cli("subnet", "create", "same6-sub", "--network", net["id"],
                           "--subnet-range", prefix, "--ip-version", "6", "--gateway", gateway,
                           "--ipv6-address-mode", "dhcpv6-stateful",
                           "--ipv6-ra-mode", "dhcpv6-stateful", env=env)
        router = None
        if name == "a":
            router = cloud.cli("router", "create", "edge6", env=env)
            cloud.cli("router", "add", "subnet", router["id"], subnet["id"], env=env)
        server = cloud.cli("server", "create", "twin6", "--network", net["id"], "--fixed-ip",
                           fixed, env=env)
        port = cloud.server_port(server["id"])
        assert port["fixed_ips"][0]["ip_address"] == fixed
        guest = cloud.boot_guest(port["id"])
        _accept_ra(guest)
        tenants.append((server, guest, router))

    for server, guest, router in tenants:
        _link_local_ready(guest)
        # The M-flag advertisement (the router's for A, the DHCP port's for B) gives the
        # on-link prefix; the address comes from dnsmasq's host entry.
        wait_for(lambda g=guest: "fd00:6e:7b::/64" in subprocess.run(
            ["ip", "-n", g, "-6", "route"], capture_output=True, text=True).stdout,
            timeout=90, interval=0.3)
        # Only its link-local address so far: identified by the MAC it encodes.
        assert not any(a.startswith("fd00:") for a in _addresses6(guest))
        status, body = _curl6_until(guest, "/openstack/latest/meta_data.json")
        assert json.loads(body)["uuid"] == server["id"]
        _dhcpv6(guest, tmp_path)
        assert _usable_address(guest, fixed) or wait_for(
            lambda g=guest: _usable_address(g, fixed), timeout=10)
        routes = subprocess.run(["ip", "-n", guest, "-6", "route"], capture_output=True,
                                text=True).stdout
        # Only the router is a default router; the DHCP port advertises with lifetime 0.
        assert ("default" in routes) is (router is not None), routes
        for args in ((), ("--interface", fixed)):
            status, body = _curl6_until(guest, "/openstack/latest/meta_data.json", *args)
            meta = json.loads(body)
            assert (meta["uuid"], meta["project_id"]) == (server["id"], server["tenant_id"])
        got = in_guest(guest, OPENSTACK_READER, python=SYSTEM_PYTHON)
        assert (got["uuid"], got["project"]) == (server["id"], server["tenant_id"])
        assert [(n["type"], n["ip_address"]) for n in got["net"]] == [
            ("ipv6_dhcpv6-stateful", fixed)]
    # A's requests went through its router namespace: only the router holds fe80::a9fe:a9fe
    # on a routed link.
    router = tenants[0][2]
    assert router is not None
    out = subprocess.run(["ip", "-n", f"qrouter-{router['id']}", "-6", "addr"],
                         capture_output=True, text=True).stdout
    assert "fe80::a9fe:a9fe" in out


def test_aws_ipv6_endpoint_on_the_router_path(cloud: Cloud) -> None:
    """`metadata_ipv6_addresses = fd00:ec2::254`: botocore in
    AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE=IPv6 reaches it through the guest's default route
    (the router), with IMDSv1 disabled; the guest is identified by its global fixed IP."""
    tag = _uid()
    net = cloud.cli("net-create", f"v6e-{tag}")
    cloud.resource_ids.add(net["id"])
    cloud.cli("subnet", "create", f"v6e-sub-{tag}", "--network", f"v6e-{tag}", "--subnet-range",
              "fd00:6e:7c::/64", "--ip-version", "6", "--gateway", "fd00:6e:7c::1",
              "--ipv6-address-mode", "slaac", "--ipv6-ra-mode", "slaac")
    router = cloud.cli("router-create", f"v6e-r-{tag}")
    cloud.resource_ids.add(router["id"])
    added = cloud.cli_raw("router-interface-add", f"v6e-r-{tag}", f"v6e-sub-{tag}")
    assert added.returncode == 0, added.stderr
    server = cloud.cli("server", "create", f"v6e-vm-{tag}", "--network", f"v6e-{tag}",
                       "--availability-zone", ZONE)
    port = cloud.server_port(server["id"])
    guest = cloud.boot_guest(port["id"])
    _accept_ra(guest)
    address = port["fixed_ips"][0]["ip_address"]
    _link_local_ready(guest)
    # The router advertises the prefix and itself as default router: SLAAC forms the fixed IP.
    wait_for(lambda: _usable_address(guest, address), timeout=90, interval=0.3)
    wait_for(lambda: "default via" in subprocess.run(
        ["ip", "-n", guest, "-6", "route"], capture_output=True, text=True).stdout,
        timeout=30, interval=0.3)
    env = _clean_env({"AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE": "IPv6",
                      "AWS_EC2_METADATA_V1_DISABLED": "true",
                      "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"})

    def botocore_ok() -> subprocess.CompletedProcess[str] | None:
        # The router namespace and its proxy may still be converging.
        proc = subprocess.run(["ip", "netns", "exec", guest, sys.executable, "-c", BOTOCORE],
                              capture_output=True, text=True, timeout=120, env=env)
        return proc if proc.returncode == 0 else None

    proc = wait_for(botocore_ok, timeout=60, interval=0.5)
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["base"] == "http://[fd00:ec2::254]/" and got["v1_disabled"]
    assert got["region"] == REGION and got["zone"] == ZONE
    assert got["instance_id"].startswith("i-")
    iid = _instance_id_over_link_local(guest)
    assert iid == got["instance_id"]


def _instance_id_over_link_local(guest: str) -> str:
    """The same instance id over fe80::a9fe:a9fe (a cross-check that the identities agree;
    only the router answers for it: the DHCP port leaves it to a router on the link)."""
    status, body = curl6(guest, "/latest/meta-data/instance-id")
    assert status == 200, body
    return body
