"""free_port hands out ports a listener can bind, below the kernel's ephemeral range (where
no outgoing connection can take one between the pick and the bind)."""

from __future__ import annotations

import socket

import pytest

from sentiserve.local import ready


def test_ports_are_below_the_ephemeral_range_and_never_repeat() -> None:
    ports = [ready.free_port() for _ in range(50)]
    floor = ready._ephemeral_floor()
    assert len(set(ports)) == len(ports)
    assert all(1024 <= p < floor for p in ports)
    for port in ports:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))


def test_a_port_in_use_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    before = ready._handed_out
    taken = ready.free_port()
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", taken))
        listener.listen()
        monkeypatch.setattr(ready, "_handed_out", before)  # walk the same stretch again
        again = ready.free_port()
    assert again != taken
    assert again == taken + 1 or again < taken  # the next one along (wrapping at the top)
