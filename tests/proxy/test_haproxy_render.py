"""Pure tests of the haproxy config renderer: values in, text out, no processes."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import replace
from pathlib import Path

import pytest

from openimds.proxy.haproxy import (
    Bind,
    Connections,
    Identity,
    InstanceLimit,
    InvalidProxySpec,
    ProxySpec,
    RateLimit,
    Timeouts,
    config_owner,
    config_path,
    owned_proxy_ids,
    pidfile_path,
    proxy_spec_for_network,
    proxy_spec_for_router,
    render_haproxy_cfg,
    stats_socket_path,
)

NET = "6e2b1c2a-6d1b-4b7e-9a8e-2b7f3c1d0a11"
RTR = "8a4b1e2c-0000-4000-8000-000000000001"
STATE = "/var/lib/neutron"
SOCK = "/var/lib/neutron/metadata_proxy"


def lines(text: str) -> list[str]:
    return [ln.strip() for ln in text.splitlines()]


def listener(text: str) -> list[str]:
    ls = lines(text)
    return ls[ls.index("listen listener") + 1 :]


def net_spec(**kw: object) -> ProxySpec:
    return proxy_spec_for_network(NET, state_path=STATE, socket_path=SOCK, **kw)  # type: ignore[arg-type]


def rtr_spec(**kw: object) -> ProxySpec:
    return proxy_spec_for_router(RTR, state_path=STATE, socket_path=SOCK, **kw)  # type: ignore[arg-type]


def test_paths_follow_neutron_layout() -> None:
    assert config_path(STATE, NET) == f"{STATE}/ns-metadata-proxy/{NET}.conf"
    assert pidfile_path(STATE, NET) == f"{STATE}/external/pids/{NET}.pid.haproxy"
    assert stats_socket_path(STATE, NET) == f"{STATE}/ns-metadata-proxy/{NET}.sock"
    # Too long for sockaddr_un: no admin socket rather than a haproxy that cannot start.
    assert stats_socket_path("/" + "x" * 100, NET) is None


def test_stats_socket_leaves_room_for_haproxy_temporary_name() -> None:
    # haproxy binds `<path>.<pid>.tmp` first: a 99-byte path (a qmeta- proxy under the lab's
    # state folder) fits in sockaddr_un but not with that suffix, so no admin socket.
    tail = f"/ns-metadata-proxy/{NET}.sock"
    assert stats_socket_path("/" + "s" * (99 - len(tail) - 1), NET) is None
    fits = stats_socket_path("/" + "s" * (95 - len(tail) - 1), NET)
    assert fits is not None and len(fits) == 95


@pytest.mark.parametrize(
    "spec",
    [net_spec(), rtr_spec(), net_spec(router_id=RTR)],
    ids=["network", "router", "metadata-network"],
)
def test_every_identity_header_deleted_before_set(spec: ProxySpec) -> None:
    body = listener(render_haproxy_cfg(spec))
    deleted = [ln for ln in body if ln.startswith("http-request del-header")]
    assert deleted == [
        "http-request del-header X-OpenIMDS- -m beg",
        "http-request del-header X-Forwarded-For",
        "http-request del-header X-Instance-ID",
        "http-request del-header X-Instance-ID-Signature",
        "http-request del-header X-Tenant-ID",
        "http-request del-header X-Neutron-Network-ID",
        "http-request del-header X-Neutron-Router-ID",
        "http-request del-header X-OVN-Network-ID",
        "http-request del-header X-Metadata-Provider -m beg",
    ]
    set_lines = [ln for ln in body if ln.startswith("http-request set-header X-Neutron")]
    assert len(set_lines) == 1
    # set-header comes after every deletion, or the deletion would remove our own header.
    assert body.index(set_lines[0]) > max(body.index(d) for d in deleted)
    # The note that the guest sent X-Forwarded-For: after the guest's internal headers are
    # gone and before its X-Forwarded-For is.
    note = body.index(
        "http-request set-header X-OpenIMDS-Guest-Forwarded 1"
        " if { req.hdr_cnt(X-Forwarded-For) gt 0 }"
    )
    assert deleted.index("http-request del-header X-OpenIMDS- -m beg") == 0
    assert body.index(deleted[0]) < note < body.index(deleted[1])
    assert not [ln for ln in body if "add-header" in ln]


def test_network_sets_network_id_and_binds_metadata_address() -> None:
    body = listener(render_haproxy_cfg(net_spec()))
    assert f"http-request set-header X-Neutron-Network-ID {NET}" in body
    assert [ln for ln in body if ln.startswith("bind")] == ["bind 169.254.169.254:80"]
    # Pooled, shared connections to the agent, bounded per namespace (see test_global_and_defaults).
    assert f"server metadata {SOCK} maxconn 32 pool-max-conn 32 pool-purge-delay 5s" in body


def test_network_ipv6_listener_is_bracketed_with_interface() -> None:
    body = listener(render_haproxy_cfg(net_spec(ipv6_interface="tap0123abcd-ef")))
    assert [ln for ln in body if ln.startswith("bind")] == [
        "bind 169.254.169.254:80",
        "bind [fe80::a9fe:a9fe]:80 interface tap0123abcd-ef",
    ]


def test_router_sets_router_id_and_binds_wildcard_metadata_port() -> None:
    body = listener(render_haproxy_cfg(rtr_spec()))
    assert f"http-request set-header X-Neutron-Router-ID {RTR}" in body
    assert [ln for ln in body if ln.startswith("bind")] == ["bind 0.0.0.0:9697"]
    body6 = listener(render_haproxy_cfg(rtr_spec(ipv6=True, port=9698)))
    assert [ln for ln in body6 if ln.startswith("bind")] == [
        "bind 0.0.0.0:9698",
        "bind [::]:9698 v6only",
    ]


def test_metadata_network_is_the_networks_but_stamps_the_router() -> None:
    """Spec 3.6: files and ownership stay the network's, so an L3 agent sharing the
    state_path (whose proxy for RTR has files keyed by RTR) never takes it for its own."""
    spec = net_spec(router_id=RTR)
    assert (spec.kind, spec.resource_id) == ("network", NET)
    assert spec.stamped == Identity("router", RTR)
    assert spec.pidfile == pidfile_path(STATE, NET)
    assert spec.stats_socket == stats_socket_path(STATE, NET)
    text = render_haproxy_cfg(spec)
    assert lines(text)[:3] == [
        "# Generated by openimds for the metadata proxy; changes are overwritten.",
        f"# owner: network {NET}",
        "global",
    ]
    body = listener(text)
    assert [ln for ln in body if ln.startswith("http-request set-header X-Neutron")] == [
        f"http-request set-header X-Neutron-Router-ID {RTR}"
    ]
    assert [ln for ln in body if ln.startswith("bind")] == ["bind 169.254.169.254:80"]
    assert f"log-tag     haproxy-metadata-proxy-{NET}" in lines(text)
    # Every other proxy identifies its owner and has no owner line (unchanged text).
    for plain in (net_spec(), rtr_spec()):
        assert "# owner:" not in render_haproxy_cfg(plain)
        assert plain.stamped == Identity(plain.kind, plain.resource_id)


def test_lines_go_through_a_ring_to_the_agents_stream_sink() -> None:
    stream = f"{STATE}/ns-metadata-proxy/dhcp-agent-log.stream.sock"
    spec = replace(net_spec(log_target=f"{STATE}/ns-metadata-proxy/dhcp-agent-log.sock"),
                   log_stream=stream)
    ls = lines(render_haproxy_cfg(spec))
    g = ls[ls.index("global") + 1 : ls.index("ring openimds-log")]
    assert "log         ring@openimds-log local0 info" in g
    assert f"log-tag     haproxy-metadata-proxy-{NET}" in g
    ring = section(render_haproxy_cfg(spec), "ring openimds-log")
    assert ring == [
        "format      rfc3164",
        "maxlen      1024",
        "size        262144",
        "timeout connect 5s",
        "timeout server  32s",
        f"server      sink unix@{stream}",
    ]
    d = ls[ls.index("defaults") + 1 : ls.index("listen listener")]
    assert d[:3] == ["log global", "option httplog", "option dontlognull"]
    # Without a stream sink: no ring, one datagram per line as before.
    assert not [ln for ln in lines(render_haproxy_cfg(net_spec())) if ln.startswith("ring")]
    with pytest.raises(InvalidProxySpec, match="log_stream"):
        replace(spec, log_stream="relative.sock")
    with pytest.raises(InvalidProxySpec, match="log_stream"):
        replace(spec, log_stream="/" + "x" * 120)


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy not installed")
def test_ring_config_passes_haproxy_check(tmp_path: Path) -> None:
    spec = replace(net_spec(log_target=None), log_stream=str(tmp_path / "log.stream.sock"))
    cfg = tmp_path / "h.cfg"
    cfg.write_text(render_haproxy_cfg(spec))
    proc = subprocess.run(["haproxy", "-c", "-f", str(cfg)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_config_owner_reads_the_owner_line_else_the_header() -> None:
    assert config_owner(render_haproxy_cfg(net_spec())) == "network"
    assert config_owner(render_haproxy_cfg(rtr_spec())) == "router"
    assert config_owner(render_haproxy_cfg(net_spec(router_id=RTR))) == "network"
    assert config_owner("global\n    daemon\n") is None


def test_owned_proxy_ids_split_a_shared_state_path(tmp_path) -> None:  # type: ignore[no-untyped-def]
    state = str(tmp_path)
    other_net = "7e2b1c2a-6d1b-4b7e-9a8e-2b7f3c1d0a12"
    for spec in (
        proxy_spec_for_network(NET, state_path=state, socket_path=SOCK, router_id=RTR),
        proxy_spec_for_network(other_net, state_path=state, socket_path=SOCK),
        proxy_spec_for_router(RTR, state_path=state, socket_path=SOCK),
    ):
        path = config_path(state, spec.resource_id)
        (tmp_path / "ns-metadata-proxy").mkdir(exist_ok=True)
        with open(path, "w") as fh:
            fh.write(render_haproxy_cfg(spec))
    (tmp_path / "ns-metadata-proxy" / ".tmp-x.conf").write_text("")  # a write in progress
    (tmp_path / "ns-metadata-proxy" / f"{NET}.sock").write_text("")
    assert owned_proxy_ids(state, "network") == sorted([NET, other_net])
    assert owned_proxy_ids(state, "router") == [RTR]
    assert owned_proxy_ids(str(tmp_path / "missing"), "router") == []


def test_global_and_defaults() -> None:
    ls = lines(render_haproxy_cfg(net_spec(user="neutron", group="996", debug=True)))
    g = ls[ls.index("global") + 1 : ls.index("defaults")]
    assert "nbthread    1" in g
    assert "maxconn     4096" in g
    assert "user        neutron" in g
    assert "gid         996" in g  # numeric ids from the seed's command line
    assert f"pidfile     {STATE}/external/pids/{NET}.pid.haproxy" in g
    assert "daemon" in g
    assert "log         /dev/log local0 debug" in g
    assert f"log-tag     haproxy-metadata-proxy-{NET}" in g
    assert (
        f"stats socket {STATE}/ns-metadata-proxy/{NET}.sock mode 600 level admin "
        "expose-fd listeners" in g
    )
    d = ls[ls.index("defaults") + 1 : ls.index("listen listener")]
    for want in (
        "mode http",
        "option forwardfor",
        # Keep-alive to the agent, any idle connection usable by any guest's request: identity
        # is per request (headers deleted/set/appended every time), never per connection.
        "option http-keep-alive",
        "http-reuse always",
        "timeout http-request    5s",
        "timeout connect         30s",
        "timeout client          32s",
        "timeout server          32s",
        "timeout http-keep-alive 30s",
    ):
        assert want in d
    assert "option http-server-close" not in d


def test_no_user_no_log_when_not_asked() -> None:
    text = render_haproxy_cfg(net_spec(log_target=None))
    assert "user" not in text and "uid" not in text and "group" not in text
    assert "log" not in text.replace("log-tag", "")  # no log lines at all


def test_custom_timeouts() -> None:
    spec = net_spec(
        timeouts=Timeouts(connect=1, client=2, server=60, http_request=4, http_keep_alive=5)
    )
    ls = lines(render_haproxy_cfg(spec))
    for want in (
        "timeout connect         1s",
        "timeout client          2s",
        "timeout server          60s",
        "timeout http-request    4s",
        "timeout http-keep-alive 5s",
    ):
        assert want in ls


def test_rate_limit_variant() -> None:
    spec = rtr_spec(
        rate_limit=RateLimit(
            ip_version=6, base_window=20, base_limit=5, burst_window=2, burst_limit=3
        )
    )
    ls = lines(render_haproxy_cfg(spec))
    assert "backend base_rate_limiter" in ls
    assert "stick-table type ipv6 size 10k expire 20s store http_req_rate(20s)" in ls
    assert "stick-table type ipv6 size 10k expire 20s store http_req_rate(2s)" in ls
    body = listener("\n".join(ls))
    assert body[3:7] == [  # after the bind and the two per-source connection lines
        "http-request track-sc0 src table base_rate_limiter",
        "http-request track-sc1 src table burst_rate_limiter",
        "http-request deny deny_status 429 if { src_http_req_rate(base_rate_limiter) gt 5 }",
        "http-request deny deny_status 429 if { src_http_req_rate(burst_rate_limiter) gt 3 }",
    ]
    assert "rate_limiter" not in render_haproxy_cfg(rtr_spec())


def test_output_is_byte_stable() -> None:
    a = render_haproxy_cfg(net_spec(ipv6_interface="tapx", rate_limit=RateLimit()))
    b = render_haproxy_cfg(net_spec(ipv6_interface="tapx", rate_limit=RateLimit()))
    assert a == b
    assert a.endswith("\n") and "\t" not in a
    assert render_haproxy_cfg(net_spec()) != render_haproxy_cfg(
        net_spec(timeouts=Timeouts(server=33))
    )


@pytest.mark.parametrize(
    "change, fragment",
    [
        ({"resource_id": "x\n    server evil /tmp/s"}, "resource_id"),
        ({"resource_id": ""}, "resource_id"),
        ({"socket_path": "relative/sock"}, "socket_path"),
        ({"socket_path": "/tmp/with space"}, "socket_path"),
        ({"socket_path": "/" + "s" * 120}, "socket_path"),
        ({"pidfile": "/tmp/p\nuser root"}, "pidfile"),
        ({"user": "root\n"}, "user"),
        ({"binds": ()}, "binds"),
        ({"binds": (Bind("fe80::a9fe:a9fe", 80),)}, "interface"),
        ({"binds": (Bind("not-an-ip", 80),)}, "not an IP"),
        ({"binds": (Bind("0.0.0.0", 0),)}, "port"),
        ({"binds": (Bind("0.0.0.0", 80, v6only=True),)}, "v6only"),
        ({"rate_limit": RateLimit(ip_version=46)}, "exactly 4 or 6"),
        ({"kind": "subnet"}, "kind"),
        ({"identity": Identity("router", "r\n    server evil /tmp/s")}, "identity id"),
        ({"identity": Identity("subnet", RTR)}, "identity kind"),  # type: ignore[arg-type]
        ({"agent_maxconn": 0}, "agent_maxconn"),
    ],
)
def test_unsafe_or_impossible_values_are_refused(change: dict[str, object], fragment: str) -> None:
    base = {
        "kind": "network",
        "resource_id": NET,
        "binds": (Bind("169.254.169.254", 80),),
        "socket_path": SOCK,
        "pidfile": "/tmp/p.pid",
    }
    base.update(change)
    with pytest.raises(InvalidProxySpec, match=fragment):
        ProxySpec(**base)  # type: ignore[arg-type]


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy not installed")
def test_rendered_configs_pass_haproxy_check(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The installed haproxy (2.6 on Debian 12) accepts every variant, incl. `-m beg`."""
    for i, spec in enumerate(
        [
            net_spec(ipv6_interface="lo", rate_limit=RateLimit(), user="0", group="0"),
            rtr_spec(ipv6=True, rate_limit=RateLimit(ip_version=6), log_target=None),
            net_spec(router_id=RTR),
        ]
    ):
        cfg = tmp_path / f"{i}.cfg"
        cfg.write_text(render_haproxy_cfg(spec))
        proc = subprocess.run(["haproxy", "-c", "-f", str(cfg)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr


def test_per_source_connection_limit_is_checked_at_accept_for_both_families() -> None:
    text = render_haproxy_cfg(net_spec(connections=Connections(per_source=7, maxconn=999)))
    ls = lines(text)
    assert "maxconn     999" in ls
    table = ls.index("backend per_source_connections")
    # ipv6-keyed: IPv4 sources are stored as ::ffff:a.b.c.d in the same table.
    assert ls[table + 1] == "stick-table type ipv6 size 100k expire 60s store conn_cur"
    lis = listener(text)
    assert lis[len(net_spec().binds)] == (
        "tcp-request connection track-sc2 src table per_source_connections"
    )
    assert (
        "tcp-request connection reject if { sc2_conn_cur(per_source_connections) gt 7 }" in lis
    )
    # 0 = no limit: no table, no rule.
    none = render_haproxy_cfg(net_spec(connections=Connections(per_source=0)))
    assert "per_source_connections" not in none


def test_close_mode_for_an_agent_that_closes_after_every_answer() -> None:
    text = render_haproxy_cfg(
        rtr_spec(connections=Connections(agent_mode="close", agent_maxconn=4))
    )
    ls = lines(text)
    assert "option http-server-close" in ls and "http-reuse never" in ls
    assert "option http-keep-alive" not in ls and "http-reuse always" not in ls
    assert f"server metadata {SOCK} maxconn 4" in ls  # no idle pool to keep
    with pytest.raises(InvalidProxySpec, match="agent_mode"):
        net_spec(connections=Connections(agent_mode="pool"))  # type: ignore[arg-type]


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy not installed")
@pytest.mark.parametrize(
    "connections",
    [Connections(), Connections(per_source=0), Connections(agent_mode="close", agent_maxconn=4)],
)
def test_connection_settings_are_accepted_by_haproxy(
    connections: Connections, tmp_path: Path
) -> None:
    path = tmp_path / "h.cfg"
    path.write_text(render_haproxy_cfg(net_spec(connections=connections)).replace(
        "/dev/log", "127.0.0.1:514"))
    subprocess.run(["haproxy", "-c", "-q", "-f", str(path)], check=True)


def section(text: str, header: str) -> list[str]:
    ls = lines(text)
    start = ls.index(header) + 1
    end = ls.index("", start) if "" in ls[start:] else len(ls)
    return ls[start:end]


def test_hop_limit_header_becomes_a_dscp_and_never_reaches_the_guest() -> None:
    text = render_haproxy_cfg(net_spec())
    token = section(text, "backend token_put")
    assert "http-response set-tos 4 if { var(txn.hop_limit) -m int 1 }" in token
    assert "http-response set-tos 252 if { var(txn.hop_limit) -m int 63 }" in token
    # 64 is the kernel's default TTL: no DSCP, no rule.
    assert "http-response set-tos 0 if { var(txn.hop_limit) -m int 64 }" in token
    # The same agent behind both; only PUTs (the token's method) reach the 64 rules.
    assert token[-1] == f"server metadata {SOCK} maxconn 32 pool-max-conn 32 pool-purge-delay 5s"
    body = listener(text)
    assert not [ln for ln in body if "set-tos" in ln and "hop_limit) -m int" in ln]
    assert "use_backend token_put if METH_PUT" in body
    # Whichever backend answered: unmarked after a token answer, internal header deleted.
    assert ("http-response set-tos 0 if { var(sess.hop_marked) -m found } "
            "!{ var(txn.hop_limit) -m found }") in body
    assert "http-response del-header X-OpenIMDS-Hop-Limit" in body
    assert not [ln for ln in lines(text) if "set-mark" in ln]
    # set-tos needs no privilege: a proxy that drops to another user keeps the hop limit.
    dropped = section(render_haproxy_cfg(net_spec(user="998")), "backend token_put")
    assert "http-response set-tos 4 if { var(txn.hop_limit) -m int 1 }" in dropped


def test_token_backend_follows_the_listeners_health_checks() -> None:
    two = Connections(identity="haproxy_map", api_servers=(("10.1.0.1", 8775), ("::1", 8775)))
    token = section(render_haproxy_cfg(rtr_spec(connections=two)), "backend token_put")
    assert token[-2:] == [
        "server api0 10.1.0.1:8775 maxconn 32 pool-max-conn 32 pool-purge-delay 5s "
        "track listener/api0",
        "server api1 [::1]:8775 maxconn 32 pool-max-conn 32 pool-purge-delay 5s "
        "track listener/api1 backup",
    ]


MAP = Connections(identity="haproxy_map", api_servers=(("127.0.0.1", 8775),))


def test_map_mode_identifies_from_the_map_and_forwards_to_the_api() -> None:
    text = render_haproxy_cfg(net_spec(connections=MAP))
    ls = lines(text)
    # Ownership and the map's scope are readable without any X-Neutron-* header line.
    assert ls[1:3] == [f"# owner: network {NET}",
                       f"# identity-map: network {NET} {STATE}/ns-metadata-proxy/{NET}.map"]
    assert config_owner(text) == "network"
    lis = listener(text)
    assert not any("X-Neutron-" in ln and ln.startswith("http-request set-header") for ln in lis)
    assert not any(SOCK in ln for ln in ls)
    lookup = lis.index(f"http-request set-var(txn.guest) src,map_ip({STATE}/ns-metadata-proxy/"
                       f"{NET}.map)")
    # Every guest identity header is deleted before the map's values are set.
    last_delete = max(i for i, ln in enumerate(lis) if ln.startswith("http-request del-header"))
    assert last_delete < lookup
    assert lis[lookup + 1] == (
        'http-request return status 404 content-type "text/plain; charset=utf-8" string '
        f'"Instance was not found on network {NET}." if !{{ var(txn.guest) -m found }}')
    for n, name in ((1, "X-Instance-ID"), (2, "X-Tenant-ID"), (3, "X-Instance-ID-Signature")):
        assert f"http-request set-header {name} %[var(txn.guest),field({n},|)]" in lis
    assert "option forwardfor" in ls  # X-Forwarded-For = the source, appended
    assert lis[-1] == "server api0 127.0.0.1:8775 maxconn 32 pool-max-conn 32 pool-purge-delay 5s"
    # Several API hosts: failover in order, like the agent's.
    two = Connections(identity="haproxy_map", api_servers=(("10.1.0.1", 8775), ("::1", 8775)))
    tail = listener(render_haproxy_cfg(rtr_spec(connections=two)))[-2:]
    assert tail == [
        "server api0 10.1.0.1:8775 maxconn 32 pool-max-conn 32 pool-purge-delay 5s check inter 2s",
        "server api1 [::1]:8775 maxconn 32 pool-max-conn 32 pool-purge-delay 5s check inter 2s "
        "backup",
    ]


def test_map_mode_listens_in_the_namespace_it_is_given() -> None:
    spec = replace(net_spec(connections=MAP, ipv6_interface="tap1"), bind_netns=f"qdhcp-{NET}")
    lis = listener(render_haproxy_cfg(spec))
    assert lis[:2] == [f"bind 169.254.169.254:80 namespace qdhcp-{NET}",
                       f"bind [fe80::a9fe:a9fe]:80 namespace qdhcp-{NET} interface tap1"]


def test_map_mode_refuses_what_it_cannot_render() -> None:
    with pytest.raises(InvalidProxySpec, match="metadata API's address"):
        net_spec(connections=Connections(identity="haproxy_map"))
    with pytest.raises(InvalidProxySpec, match="api server host"):
        net_spec(connections=Connections(identity="haproxy_map", api_servers=(("a b", 1),)))
    with pytest.raises(InvalidProxySpec, match="admin socket"):
        proxy_spec_for_network(NET, state_path="/" + "x" * 90, socket_path=SOCK, connections=MAP)
    with pytest.raises(InvalidProxySpec, match="bind_netns"):
        replace(net_spec(connections=MAP), bind_netns="a b")


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy not installed")
def test_map_mode_config_passes_haproxy_check() -> None:
    # A short state path: the admin socket must fit in sockaddr_un.
    with tempfile.TemporaryDirectory(prefix="orc-", dir="/tmp") as tmp:
        _check_map_mode_config(Path(tmp))


def _check_map_mode_config(tmp_path: Path) -> None:
    spec = proxy_spec_for_network(NET, state_path=str(tmp_path), socket_path=SOCK,
                                  connections=MAP, log_target=None, router_id=RTR)
    assert spec.map_file is not None
    Path(spec.map_file).parent.mkdir(parents=True)
    Path(spec.map_file).write_text("10.0.0.5 vm|proj|sig\n")
    cfg = tmp_path / "h.cfg"
    cfg.write_text(render_haproxy_cfg(spec))
    proc = subprocess.run(["haproxy", "-c", "-f", str(cfg)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_map_mode_applies_the_agents_per_instance_limit() -> None:
    limited = Connections(identity="haproxy_map", api_servers=(("127.0.0.1", 8775),),
                          instance_limit=InstanceLimit(rate=5.0, burst=200))
    text = render_haproxy_cfg(net_spec(connections=limited))
    ls = lines(text)
    # 200 at once, 5/s on average: a 40 s window holding at most 200, keyed by the instance.
    table = ls.index("backend instance_rate_limiter")
    assert ls[table + 1] == ("stick-table type string len 64 size 100k expire 40s "
                             "store http_req_rate(40s)")
    lis = listener(text)
    track = lis.index("http-request track-sc0 var(txn.guest),field(1,|) table "
                      "instance_rate_limiter")
    assert lis[track + 1].startswith("http-request deny deny_status 429 ")
    assert lis[track + 1].endswith(
        "hdr Retry-After 1 if { sc0_http_req_rate(instance_rate_limiter) gt 200 }")
    # Neutron's per-source limiter holds sticky counter 0 when on: it then applies alone.
    both = render_haproxy_cfg(net_spec(connections=limited, rate_limit=RateLimit()))
    assert "instance_rate_limiter" not in both and "base_rate_limiter" in both
    # The agent's path: the agent applies it.
    agent = Connections(instance_limit=InstanceLimit(rate=5.0, burst=200))
    assert "instance_rate_limiter" not in render_haproxy_cfg(net_spec(connections=agent))
