"""Hosts on this machine: one network namespace each, on one switch (`make cluster`).

Each host is a namespace `slc-<name>` with a veth link to a bridge in the namespace
`slc-switch`, addressed 10.77.0.<n>/24; the machine's own namespace joins as
10.77.0.1 (where the orchestrating script runs), so nothing else of the machine is
touched. A link can be cut (set down on the switch's side) and restored, a host can
lose one peer (a blackhole route), and every process in a host can be SIGKILLed.
`Network.remove` kills whatever runs in the namespaces and deletes them; it runs on
exit, Ctrl-C or failure, and before a start (leftovers of a run that was killed).
Needs root (ip netns).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from dataclasses import dataclass, field

PREFIX = "slc-"
SWITCH = f"{PREFIX}switch"
SUBNET = "10.77.0"
ROOT_LINK = f"{PREFIX}root"


def ip(*args: str, check: bool = True) -> str:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


@dataclass
class Network:
    """The hosts, by name, and their addresses."""

    hosts: dict[str, str] = field(default_factory=dict)  # name -> address

    @staticmethod
    def namespace(name: str) -> str:
        return f"{PREFIX}{name}"

    def exec(self, name: str) -> list[str]:
        """The command prefix that runs a program on host `name`."""
        return ["ip", "netns", "exec", self.namespace(name)]

    def create(self, names: list[str]) -> None:
        self.remove()
        ip("netns", "add", SWITCH)
        ip("-n", SWITCH, "link", "add", "br0", "type", "bridge")
        ip("-n", SWITCH, "link", "set", "br0", "up")
        # The machine itself, as 10.77.0.1: the orchestrator's seat.
        ip("link", "add", ROOT_LINK, "type", "veth", "peer", "name", "root", "netns", SWITCH)
        ip("-n", SWITCH, "link", "set", "root", "master", "br0", "up")
        ip("addr", "add", f"{SUBNET}.1/24", "dev", ROOT_LINK)
        ip("link", "set", ROOT_LINK, "up")
        for n, name in enumerate(names, start=2):
            ns = self.namespace(name)
            ip("netns", "add", ns)
            ip("-n", ns, "link", "set", "lo", "up")
            ip(
                "-n",
                ns,
                "link",
                "add",
                "eth0",
                "type",
                "veth",
                "peer",
                "name",
                name,
                "netns",
                SWITCH,
            )
            ip("-n", SWITCH, "link", "set", name, "master", "br0", "up")
            address = f"{SUBNET}.{n}"
            ip("-n", ns, "addr", "add", f"{address}/24", "dev", "eth0")
            ip("-n", ns, "link", "set", "eth0", "up")
            self.hosts[name] = address

    def cut(self, name: str) -> None:
        """Host `name` loses the network (its link is down on the switch's side)."""
        ip("-n", SWITCH, "link", "set", name, "down")

    def restore(self, name: str) -> None:
        ip("-n", SWITCH, "link", "set", name, "up")

    def blackhole(self, name: str, peer: str) -> None:
        """Host `name` can no longer reach host `peer` (the rest of the network it can)."""
        ip("-n", self.namespace(name), "route", "add", "blackhole", f"{self.hosts[peer]}/32")

    def unblackhole(self, name: str, peer: str) -> None:
        ip("-n", self.namespace(name), "route", "del", "blackhole", f"{self.hosts[peer]}/32")

    def kill(self, name: str) -> int:
        """SIGKILL every process on host `name`; how many there were."""
        pids = [int(p) for p in ip("netns", "pids", self.namespace(name), check=False).split()]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return len(pids)

    def remove(self) -> None:
        """Kill what runs in the namespaces of this prefix and delete them (and the link)."""
        found = [line.split()[0] for line in ip("netns", "list", check=False).splitlines()]
        for ns in found:
            if ns.startswith(PREFIX):
                for pid in ip("netns", "pids", ns, check=False).split():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(pid), signal.SIGKILL)
        for ns in found:
            if ns.startswith(PREFIX):
                ip("netns", "del", ns, check=False)
        ip("link", "del", ROOT_LINK, check=False)
        self.hosts.clear()
