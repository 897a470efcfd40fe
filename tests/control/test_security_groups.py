"""Security groups and rules (Neutron shapes), servers naming them, and the compute views."""

from __future__ import annotations

from .conftest import Api


async def test_default_group_appears_with_neutron_rules(api: Api) -> None:
    groups = (await api.ok("alice", "GET", "/v2.0/security-groups"))["security_groups"]
    [default] = groups
    assert default["name"] == "default"
    rules = {(r["direction"], r["ethertype"], r["remote_group_id"])
             for r in default["security_group_rules"]}
    assert rules == {("egress", "IPv4", None), ("egress", "IPv6", None),
                     ("ingress", "IPv4", default["id"]), ("ingress", "IPv6", default["id"])}
    again = (await api.ok("alice", "GET", "/v2.0/security-groups"))["security_groups"]
    assert [g["id"] for g in again] == [default["id"]]  # made once
    bob = (await api.ok("bob", "GET", "/v2.0/security-groups"))["security_groups"]
    assert [g["id"] for g in bob] != [default["id"]]
    status, _ = await api.call("alice", "DELETE", f"/v2.0/security-groups/{default['id']}")
    assert status == 409


async def test_group_and_rule_lifecycle(api: Api) -> None:
    group = (await api.ok("alice", "POST", "/v2.0/security-groups", {"security_group": {
        "name": "web", "description": "http"}}))["security_group"]
    rule = (await api.ok("alice", "POST", "/v2.0/security-group-rules", {
        "security_group_rule": {"security_group_id": group["id"], "direction": "ingress",
                                "protocol": "tcp", "port_range_min": 80,
                                "port_range_max": 80,
                                "remote_ip_prefix": "0.0.0.0/0"}}))["security_group_rule"]
    assert (rule["protocol"], rule["port_range_min"], rule["remote_ip_prefix"]) == (
        "tcp", 80, "0.0.0.0/0")
    status, body = await api.call("alice", "POST", "/v2.0/security-group-rules", {
        "security_group_rule": {"security_group_id": group["id"], "direction": "ingress",
                                "protocol": "tcp", "port_range_min": 80,
                                "port_range_max": 80, "remote_ip_prefix": "0.0.0.0/0"}})
    assert status == 409 and body["NeutronError"]["type"] == "SecurityGroupRuleExists"
    for bad in ({"direction": "sideways"}, {"direction": "ingress", "protocol": "carrier"},
                {"direction": "ingress", "ethertype": "IPv6", "remote_ip_prefix": "10.0.0.0/8"},
                {"direction": "ingress", "port_range_min": 90, "port_range_max": 80}):
        status, _ = await api.call("alice", "POST", "/v2.0/security-group-rules", {
            "security_group_rule": {"security_group_id": group["id"], **bad}})
        assert status == 400, bad
    listed = (await api.ok("alice", "GET", "/v2.0/security-group-rules",
                           params={"security_group_id": group["id"]}))["security_group_rules"]
    assert len(listed) == 3  # two egress defaults + ours
    status, _ = await api.call("bob", "GET", f"/v2.0/security-groups/{group['id']}")
    assert status == 404
    await api.ok("alice", "DELETE", f"/v2.0/security-group-rules/{rule['id']}")
    await api.ok("alice", "PUT", f"/v2.0/security-groups/{group['id']}", {"security_group": {
        "name": "web2"}})
    named = (await api.ok("alice", "GET", "/v2.0/security-groups", params={"name": "web2"}))
    assert [g["id"] for g in named["security_groups"]] == [group["id"]]


async def test_servers_name_existing_groups(api: Api) -> None:
    group = (await api.ok("alice", "POST", "/v2.0/security-groups", {"security_group": {
        "name": "web"}}))["security_group"]
    status, body = await api.call("alice", "POST", "/v2.1/servers", {"server": {
        "name": "vm", "security_groups": [{"name": "nope"}]}})
    assert status == 400
    body = await api.ok("alice", "POST", "/v2.1/servers", {"server": {
        "name": "vm", "security_groups": [{"name": "web"}]}}, status=202)
    sid = body["server"]["id"]
    groups = (await api.ok("alice", "GET", f"/v2.1/servers/{sid}/os-security-groups"))
    assert [(g["id"], g["name"]) for g in groups["security_groups"]] == [(group["id"], "web")]
    await api.ok("alice", "POST", f"/v2.1/servers/{sid}/action",
                 {"addSecurityGroup": {"name": "default"}}, status=202)
    shown = (await api.ok("alice", "GET", f"/v2.1/servers/{sid}"))["server"]
    assert shown["security_groups"] == [{"name": "web"}, {"name": "default"}]
    status, body = await api.call("alice", "DELETE", f"/v2.0/security-groups/{group['id']}")
    assert status == 409 and body["NeutronError"]["type"] == "SecurityGroupInUse"
    await api.ok("alice", "POST", f"/v2.1/servers/{sid}/action",
                 {"removeSecurityGroup": {"name": "web"}}, status=202)
    await api.ok("alice", "DELETE", f"/v2.0/security-groups/{group['id']}")
    status, _ = await api.call("alice", "POST", f"/v2.1/servers/{sid}/action",
                               {"reboot": {"type": "SOFT"}})
    assert status == 400
