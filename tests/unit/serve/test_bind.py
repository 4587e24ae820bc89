"""The HTTP listener: clear errors, and no Nagle stall on keep-alive responses."""

from __future__ import annotations

import socket

import pytest

from sentiserve.serve.app import BindError, bind


def test_listener_disables_nagle_for_accepted_connections() -> None:
    sock = bind("127.0.0.1", 0, "HTTP")
    try:
        client = socket.create_connection(sock.getsockname())
        accepted, _ = sock.accept()
        # Inherited from the listener: responses are never held for the peer's delayed ACK.
        assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        accepted.close()
        client.close()
    finally:
        sock.close()


def test_port_in_use_names_the_address() -> None:
    first = bind("127.0.0.1", 0, "HTTP")
    try:
        port = first.getsockname()[1]
        with pytest.raises(BindError, match=f"cannot bind HTTP to 127.0.0.1:{port}"):
            bind("127.0.0.1", port, "HTTP")
    finally:
        first.close()
