"""The socket guard that keeps every test process on this machine."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest


def test_remote_connection_is_refused_in_this_process() -> None:
    with pytest.raises(ConnectionRefusedError, match="blocked"):
        socket.create_connection(("203.0.113.10", 443), timeout=1)


def test_remote_connection_is_refused_in_child_processes() -> None:
    code = "import socket; socket.create_connection(('169.254.169.254', 80), timeout=1)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "blocked" in result.stderr


def test_loopback_is_allowed() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        with socket.create_connection(server.getsockname(), timeout=1):
            pass
