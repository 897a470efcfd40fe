"""openimds.linux.procfs: pure parsers on captured /proc text, then the thin reads on this
process (no root needed), and openimds.linux.files (atomic write with a check hook)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from openimds.linux import procfs
from openimds.linux.dnsmasq import _owns_pidfile
from openimds.linux.files import read_text, write_atomic

# Captured from real processes (haproxy and dnsmasq as the supervisors start them, a kernel
# thread, a comm with spaces and parentheses, a zombie).
HAPROXY_CMDLINE = b"haproxy\0-f\0/var/lib/openimds/ns-metadata-proxy/n1.conf\0"
HAPROXY_STAT = ("4242 (haproxy) S 1 4241 4241 0 -1 4194624 433 0 0 0 1 2 0 0 20 0 1 0 8123 "
                "22708224 2300 18446744073709551615 1 1 0 0 0 0 0 4096 2 0 0 0 17 3 0 0 0 0 0\n")
DNSMASQ_CMDLINE = (b"dnsmasq\0--no-hosts\0--pid-file=/var/lib/openimds/dhcp/n1/pid\0"
                   b"--dhcp-range=set:s1,10.0.0.0,static,255.255.255.0,86400s\0")
ODD_COMM_STAT = "77 (my (odd) name) R 1 77 77 0 -1 4194304 98 0 0 0 0 0 0 0 20 0 1 0 651719\n"
ZOMBIE_STAT = "5525 (haproxy) Z 1 5525 5525 0 -1 4227084 0 0 0 0 0 0 0 0 20 0 1 0 651800 0\n"
DEAD_STAT = "5526 (dnsmasq) X 1 5526 5526 0 -1 4227084 0 0 0 0 0 0 0 0 20 0 1 0 651801 0\n"
KTHREAD_STAT = "2 (kthreadd) S 0 0 0 0 -1 2129984 0 0 0 0 0 0 0 0 20 0 1 0 3 0 0\n"


@pytest.mark.parametrize("raw, argv", [
    (HAPROXY_CMDLINE, ("haproxy", "-f", "/var/lib/openimds/ns-metadata-proxy/n1.conf")),
    (b"", ()),  # a kernel thread or a zombie
    (b"a\0\0b\0", ("a", "", "b")),  # an empty argument stays in its place
    (b"nginx: master process", ("nginx: master process",)),  # rewritten, no terminator
    (b"x\xff\0", ("x\ufffd",)),
])
def test_parse_cmdline(raw: bytes, argv: tuple[str, ...]) -> None:
    assert procfs.parse_cmdline(raw) == argv


@pytest.mark.parametrize("text, state", [
    (HAPROXY_STAT, "S"),
    (ODD_COMM_STAT, "R"),
    (ZOMBIE_STAT, "Z"),
    ("", None),
    ("12 (truncated)", None),
])
def test_parse_stat_state(text: str, state: str | None) -> None:
    assert procfs.parse_stat_state(text) == state


@pytest.mark.parametrize("cmdline, stat_text, alive", [
    (HAPROXY_CMDLINE, HAPROXY_STAT, True),
    (HAPROXY_CMDLINE, ODD_COMM_STAT, True),
    (HAPROXY_CMDLINE, ZOMBIE_STAT, False),
    (DNSMASQ_CMDLINE, DEAD_STAT, False),
    (b"", KTHREAD_STAT, False),
    (HAPROXY_CMDLINE, "", False),
])
def test_live_argv_of(cmdline: bytes, stat_text: str, alive: bool) -> None:
    got = procfs.live_argv_of(cmdline, stat_text)
    assert (got == procfs.parse_cmdline(cmdline)) if alive else got is None


@pytest.mark.parametrize("text, pid", [
    ("4242\n", 4242),
    ("4242", 4242),
    ("  4242 \n", 4242),
    ("4242\n4243\n", 4242),  # haproxy with several processes: the first
    ("4242 1a2b3c\n", 4242),  # a pid and a digest (the dnsmasq marker's shape)
    ("", None),
    ("\n", None),
    ("-1\n", None),
    ("pid\n", None),
])
def test_parse_pid(text: str, pid: int | None) -> None:
    assert procfs.parse_pid(text) == pid


PROC_TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:90FD 00000000:0000 0A 00000000:00000000 00:00000000 00000000   101        0 11099 1
   1: 00000000:07E8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1145 1
   2: 0200000A:0050 0500000A:A1B2 01 00000000:00000000 00:00000000 00000000     0        0 3 1
"""


def test_parse_proc_net_tcp_listeners_only() -> None:
    assert procfs.parse_proc_net_tcp(PROC_TCP, ipv6=False) == {("127.0.0.1", 37117),
                                                              ("0.0.0.0", 2024)}
    assert procfs.parse_proc_net_tcp(PROC_TCP.splitlines()[0], ipv6=False) == set()


@pytest.mark.parametrize("argv, pidfile, ours", [
    (procfs.parse_cmdline(DNSMASQ_CMDLINE), "/var/lib/openimds/dhcp/n1/pid", True),
    (("/usr/sbin/dnsmasq", "--pid-file=/p"), "/p", True),
    (("dnsmasq", "--pid-file=/other"), "/p", False),
    (("dnsmasq-wrapper", "--pid-file=/p"), "/p", False),
    (("dnsmasq", "--pid-file", "/p"), "/p", False),
    ((), "/p", False),
])
def test_dnsmasq_argv_check(argv: tuple[str, ...], pidfile: str, ours: bool) -> None:
    assert _owns_pidfile(argv, pidfile) is ours


def test_daemon_env_keeps_path_only() -> None:
    env = {"PATH": "/bin", "http_proxy": "http://p:3128", "HOME": "/root"}
    assert procfs.daemon_env(env) == {"PATH": "/bin"}
    assert procfs.daemon_env({}) == {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    assert procfs.daemon_env() == {"PATH": os.environ.get("PATH",
                                                          "/usr/sbin:/usr/bin:/sbin:/bin")}


# ---- the reads, on this very process ----------------------------------------------------


def test_reads_on_this_process(tmp_path: Path) -> None:
    me = os.getpid()
    argv = procfs.live_argv(me)
    assert argv is not None and os.path.basename(argv[0]).startswith("python")
    assert me in procfs.all_pids()
    assert procfs.netns_id(me) == procfs.netns_id(os.getppid()) is not None
    assert procfs.pid_in_netns(me, None)
    assert not procfs.pid_in_netns(me, "openimds-no-such-netns")
    assert procfs.named_netns_id("openimds-no-such-netns") is None
    pidfile = tmp_path / "pid"
    assert procfs.read_pid_file(str(pidfile)) is None
    pidfile.write_text(f"{me}\n")
    assert procfs.read_pid_file(str(pidfile)) == me
    assert isinstance(procfs.listening_sockets(me), set)


def test_reads_on_a_gone_pid() -> None:
    # pid_max bounds real pids; this one can not exist.
    gone = 2**22 + 1
    assert procfs.live_argv(gone) is None
    assert procfs.netns_id(gone) is None
    assert not procfs.pid_in_netns(gone, None)
    assert procfs.listening_sockets(gone) == set()


# ---- files -------------------------------------------------------------------------------


def test_write_atomic_replaces_with_mode(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "hosts"
    write_atomic(str(path), "one\n")
    assert path.read_text() == "one\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert stat.S_IMODE(path.parent.stat().st_mode) & 0o755 == 0o755
    write_atomic(str(path), "two\n", 0o600)
    assert read_text(str(path)) == "two\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert os.listdir(path.parent) == ["hosts"]
    assert read_text(str(tmp_path / "missing")) is None


def test_write_atomic_check_sees_the_new_file_and_can_refuse(tmp_path: Path) -> None:
    path = tmp_path / "haproxy.conf"
    path.write_text("old\n")
    seen: list[str] = []

    def check(tmp: str) -> None:
        seen.append(Path(tmp).read_text())
        assert os.path.dirname(tmp) == str(tmp_path)  # same folder: the rename is atomic
        raise ValueError("rejected")

    with pytest.raises(ValueError, match="rejected"):
        write_atomic(str(path), "new\n", check=check)
    assert seen == ["new\n"]
    assert path.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["haproxy.conf"]  # no temporary file left behind
    write_atomic(str(path), "new\n", check=seen.append)
    assert path.read_text() == "new\n" and len(seen) == 2
