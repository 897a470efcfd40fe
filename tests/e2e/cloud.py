"""A real one-node openimds cloud for end-to-end tests: `openimds all-in-one` as a process.

Built on the suite's node harness (tests/support/node.py `AllInOneNode`, shared with the
benchmarks). Everything lives in names made unique there: the state directory, the fabric
namespace `oit-fab-<hex>`, guest namespaces `oit-g-<hex>`, and `qdhcp-`/`qrouter-` namespaces
of the uuid4 resources the test creates. Teardown stops all-in-one by pid, kills only processes
inside those namespaces or naming the state directory, deletes the namespaces and the state
directory. The control-plane and metadata API listen on free loopback ports; metadata traffic
to 169.254.169.254 only ever leaves guest namespaces.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
import uuid
from typing import Any

from tests.support.node import REPO, AllInOneNode, clean_env, guest_get, udhcpc

__all__ = ["REPO", "Cloud", "_clean_env"]

# The name the e2e tests import (the environment without proxy variables).
_clean_env = clean_env


class Cloud(AllInOneNode):
    """One all-in-one node plus helpers to drive it like an operator and a guest would."""

    def __init__(self, *, lease_duration: int = 86400) -> None:
        super().__init__(
            prefix="oit-e2e", ns_prefix="oit", conf_name="test.conf",
            lease_duration=lease_duration,
            # Heartbeats carry each agent's synced revision; tests wait on it. [DEFAULT] comes
            # last: tests append their own [DEFAULT] options to this file.
            conf_head="[AGENT]\nreport_interval = 2\n",
        )
        self.extra_conf = self.conf
        self.script = self.write_udhcpc_script()
        self.guests: list[str] = []
        self.env: dict[str, str] = {}

    # ---- lifecycle -------------------------------------------------------------------------
    def ready(self) -> bool:
        """The control API answers the CLI, with the environment of the node's openrc."""
        self.env = clean_env(self.openrc)
        return self._cli_ok("network", "list")

    # ---- operator --------------------------------------------------------------------------
    def _cli_ok(self, *args: str) -> bool:
        return self.cli_raw(*args).returncode == 0

    def cli_raw(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "openimds", *args],
            capture_output=True, text=True, timeout=60, env=env or self.env, cwd=REPO,
        )

    def cli(self, *args: str, env: dict[str, str] | None = None) -> Any:
        """Run an openimds CLI command with `-f json` and return the parsed output."""
        proc = self.cli_raw(*args, "-f", "json", env=env)
        assert proc.returncode == 0, f"openimds {' '.join(args)} failed: {proc.stderr}"
        value = json.loads(proc.stdout) if proc.stdout.strip() else None
        if isinstance(value, dict) and "id" in value:
            self.resource_ids.add(str(value["id"]))
        return value

    def server_port(self, server_id: str) -> dict[str, Any]:
        ports = self.cli("port", "list", "--device-id", server_id)
        assert len(ports) == 1, ports
        return dict(ports[0])

    def conf_args(self) -> list[str]:
        return ["--config-file", str(self.state / "openimds.conf"),
                "--config-file", str(self.extra_conf)]

    # ---- guest -----------------------------------------------------------------------------
    def boot_guest(self, port_id: str, *, configure_ip: bool = False) -> str:
        """Plug the port into a fresh guest namespace with the real `openimds port-plug`."""
        ns = f"oit-g-{uuid.uuid4().hex[:8]}"
        self.guests.append(ns)
        self.namespaces.append(ns)
        args = ["port", "plug", port_id, "--netns", ns, *self.conf_args()]
        if configure_ip:
            args.append("--configure-ip")
        proc = self.cli_raw(*args)
        assert proc.returncode == 0, proc.stderr
        return ns

    def dhcp(self, guest: str, *, within: float = 60) -> str:
        """A lease from dnsmasq with option 121 asked for; returns the guest's IPv4 routes.

        Retried until `within` seconds: the DHCP agent may still be starting dnsmasq for a
        network created a moment ago."""
        return udhcpc(guest, self.script, within=within, timeout=60)

    def fetch(self, guest: str, path: str, *, host: str = "169.254.169.254",
              timeout: float = 10) -> tuple[int, bytes]:
        """GET http://<host><path> from inside the guest namespace: (status, body)."""
        return guest_get(guest, path, host=host, timeout=timeout)

    def metadata(self, guest: str, *, retries: float = 15) -> dict[str, Any]:
        """meta_data.json as the guest sees it (retried while agents converge)."""
        deadline = time.monotonic() + retries
        while True:
            with contextlib.suppress(AssertionError):
                status, body = self.fetch(guest, "/openstack/latest/meta_data.json", timeout=5)
                if status == 200:
                    return dict(json.loads(body))
            if time.monotonic() > deadline:
                status, body = self.fetch(guest, "/openstack/latest/meta_data.json", timeout=5)
                raise AssertionError(f"metadata not served: {status} {body[:200]!r}")
            time.sleep(0.3)

    def read_opts(self, network_id: str) -> str:
        return (self.state / "dhcp" / network_id / "opts").read_text()
