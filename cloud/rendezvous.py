"""A local gang's rendezvous and collectives on loopback only, never on this machine's other interfaces.

The nodes of a gang on the local provider are processes on this machine, so nothing they say to
each other needs to leave it. Left to themselves they would listen wider than that:

- torch.distributed's ``env://`` rendezvous (what Lightning's DDP uses, from MASTER_ADDR and
  MASTER_PORT) makes global rank 0 host a TCPStore, and the TCPStore server binds every
  interface (``::`` and ``0.0.0.0``), whatever MASTER_ADDR says: anyone who can reach this
  machine can then read and write the gang's keys, or join it.
- gloo (DDP on CPU) listens on the address this machine's hostname resolves to, which is often a
  LAN address; NCCL's bootstrap picks the first interface that is not loopback.

So the local provider marks every node of a gang it launches with :func:`local_gang_env`: the
gloo, NCCL and TensorPipe interface set to loopback, and the mark itself. The agent on each node
then calls :func:`hold_gang_rendezvous`; on rank 0 it binds the rendezvous port on 127.0.0.1
itself and starts torch's TCPStore server on that socket (TCPStore's ``master_listen_fd``), and
on every node it tells the training processes to be clients of that store
(``TORCHELASTIC_USE_AGENT_STORE=True``, as torchelastic's agent does), so no training process
starts a server of its own. A gang on EC2 is not marked: its rank 0 is its own instance, reached
by the others at its private address, with the security group deciding who may connect.

torch is imported only on rank 0 of a marked gang, when the store starts.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from cloud.errors import ProviderError
from cloud.provider import LOOPBACK, GangMember

LOOPBACK_GANG_ENV = "SPOTRUN_LOOPBACK_GANG"  # "1": this node's gang lives on this machine (the local provider)
# torch.distributed's switch (torch/distributed/rendezvous.py): every rank is a client of a store someone else hosts.
USE_AGENT_STORE_ENV = "TORCHELASTIC_USE_AGENT_STORE"
STORE_TIMEOUT = timedelta(minutes=5)  # how long the store's own operations wait (torch's default)


def loopback_interface() -> str:
    """The name of the loopback interface, as gloo and NCCL look interfaces up."""
    return "lo0" if sys.platform == "darwin" else "lo"


def local_gang_env() -> dict[str, str]:
    """The environment the local provider gives every node of a gang: the mark, and collectives on loopback.

    The interface variables reach the training processes through the agent's environment, and
    each library reads its own: gloo (DDP on CPU), NCCL's bootstrap (DDP on GPUs) and TensorPipe
    (torch.distributed.rpc).
    """
    interface = loopback_interface()
    return {
        LOOPBACK_GANG_ENV: "1",
        "GLOO_SOCKET_IFNAME": interface,
        "NCCL_SOCKET_IFNAME": interface,
        "TP_SOCKET_IFNAME": interface,
    }


@dataclass
class GangRendezvous:
    """What an agent holds while its training runs: the environment the training processes need, and on rank 0 the store."""

    env: dict[str, str]
    store: Any = None  # torch.distributed.TCPStore serving the gang (rank 0 of a local gang), else None

    def close(self) -> None:
        """Stop serving (once training has exited): torch stops the server and closes its socket with the last reference."""
        self.store = None


def hold_gang_rendezvous(member: GangMember, environ: Mapping[str, str] | None = None) -> GangRendezvous:
    """The rendezvous of this node of a gang, as its agent must hold it before it starts training.

    Nothing for a node the local provider did not mark (a gang on EC2, where rank 0's training
    hosts the store as usual). For a marked one, the training processes are told to use a store
    hosted for them; rank 0's agent hosts it, bound to ``127.0.0.1`` and the rendezvous port
    only, and holds it until :meth:`GangRendezvous.close`. One store serves one training run: a
    second run would meet the keys of the first.
    """
    environ = os.environ if environ is None else environ
    if environ.get(LOOPBACK_GANG_ENV) != "1":
        return GangRendezvous({})
    store = serve_on_loopback(member.rendezvous.port) if member.node == 0 else None
    return GangRendezvous({USE_AGENT_STORE_ENV: str(True)}, store)


def serve_on_loopback(port: int) -> Any:
    """torch's TCPStore server on ``127.0.0.1:port``, on a socket bound here (TCPStore alone would bind every interface).

    Clients that connect before the store is up wait in the socket's backlog; the socket is
    handed to the store, which closes it when it stops.
    """
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with listener:
        try:
            # As TCPStore does itself: a port left in TIME_WAIT by an earlier gang can be bound again.
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((LOOPBACK, port))
            listener.listen(socket.SOMAXCONN)
        except OSError as error:
            raise ProviderError(f"the gang's rendezvous cannot listen on {LOOPBACK}:{port}: {error}") from error
        from torch.distributed import TCPStore  # type: ignore[attr-defined]  # its documented home; torch's stubs do not re-export it

        # The store owns the descriptor it is given and closes it when it stops; ours closes on leaving.
        return TCPStore(LOOPBACK, port, None, True, STORE_TIMEOUT, wait_for_workers=False, master_listen_fd=os.dup(listener.fileno()))
