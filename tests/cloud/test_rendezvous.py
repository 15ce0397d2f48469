"""A local gang meets on loopback only: the rendezvous store and gloo, with real sockets read back from /proc/net."""

from __future__ import annotations

import ipaddress
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cloud.local import LocalProvider
from cloud.local_files import InstanceFiles, read_spec
from cloud.provider import LOOPBACK, GangMember, LaunchRequest, Market, OfferRequest
from cloud.rendezvous import USE_AGENT_STORE_ENV, GangRendezvous, hold_gang_rendezvous, local_gang_env

# What a training process of the gang does: an env:// init (as Lightning's DDP), one collective, then it waits to be told to stop.
WORKER = """
import sys, datetime, torch, torch.distributed as dist
dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=60))
total = torch.ones(1)
dist.all_reduce(total)
print(f"ready {int(total.item())}", flush=True)
sys.stdin.readline()
dist.destroy_process_group()
"""


def _listening() -> list[tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int, str]]:
    """Every TCP socket listening on this machine (in this network namespace): address, port, inode."""
    found = []
    for table in ("tcp", "tcp6"):
        for line in Path("/proc/net", table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A":  # TCP_LISTEN
                continue
            address_hex, port_hex = fields[1].split(":")
            # The kernel writes each 32-bit word of the address in host (little-endian) order.
            raw = b"".join(bytes.fromhex(address_hex[i : i + 8])[::-1] for i in range(0, len(address_hex), 8))
            found.append((ipaddress.ip_address(raw), int(port_hex, 16), fields[9]))
    return found


def _is_loopback(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
    return (mapped or address).is_loopback


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    return inodes


def test_the_local_provider_marks_each_node_of_a_gang_and_nothing_else_for_loopback(
    make_provider: Callable[..., LocalProvider], fake_agent: Callable[[str], Any], home: Path
) -> None:
    provider = make_provider()
    offer = provider.offers(OfferRequest(instance_types=("local",), market=Market.ON_DEMAND))[0]
    agent = fake_agent("agent")
    member = GangMember.joining(1, 2, port=provider.rendezvous_port(), rank0_address=LOOPBACK)
    node = provider.launch(offer, LaunchRequest(job="gang", attempt=1, token="gang-1-n1", agent_command=agent.command(), gang=member))
    single = provider.launch(offer, LaunchRequest(job="one", attempt=1, token="one-1", agent_command=agent.command()))

    node_env = read_spec(InstanceFiles.of(home, node.instance_id)).env  # type: ignore[union-attr]
    single_env = read_spec(InstanceFiles.of(home, single.instance_id)).env  # type: ignore[union-attr]
    assert local_gang_env().items() <= node_env.items()
    assert node_env["GLOO_SOCKET_IFNAME"] == "lo"
    assert not local_gang_env().keys() & single_env.keys()
    provider.terminate([node.instance_id, single.instance_id])


@pytest.mark.slow  # two real gloo processes
def test_a_local_gangs_rendezvous_and_collectives_listen_on_loopback_only(make_provider: Callable[..., LocalProvider]) -> None:
    # The probe sees a socket bound to every interface for what it is.
    with socket.socket() as wide:
        wide.bind(("0.0.0.0", 0))
        wide.listen()
        assert [not _is_loopback(address) for address, port, _ in _listening() if port == wide.getsockname()[1]] == [True]
    port = make_provider().rendezvous_port()
    nodes = 2
    members = [GangMember.joining(node, nodes, port=port, rank0_address=LOOPBACK) for node in range(nodes)]
    assert hold_gang_rendezvous(members[0], {}) == GangRendezvous({})  # an unmarked gang (EC2) is left as it was

    marked = {**os.environ, **local_gang_env()}
    held = [hold_gang_rendezvous(member, marked) for member in members]
    assert all(rendezvous.env == {USE_AGENT_STORE_ENV: "True"} for rendezvous in held)
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER],
            env={
                **marked,
                **held[node].env,
                "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": str(port),
                "WORLD_SIZE": str(nodes),
                "RANK": str(node),
            },
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for node in range(nodes)
    ]
    try:
        assert [worker.stdout.readline().strip() for worker in workers] == [f"ready {nodes}"] * nodes  # type: ignore[union-attr]
        listening = _listening()
        assert sorted((str(address), found) for address, found, _ in listening if found == port) == [("127.0.0.1", port)]
        workers_own = set().union(*(_socket_inodes(worker.pid) for worker in workers))
        gloo = [address for address, _, inode in listening if inode in workers_own]
        assert gloo and all(_is_loopback(address) for address in gloo), gloo
    finally:
        for worker in workers:
            worker.stdin.close()  # type: ignore[union-attr]
        codes = [worker.wait(timeout=60) for worker in workers]
    assert codes == [0] * nodes
    held[0].close()
    assert not [address for address, found, _ in _listening() if found == port]
