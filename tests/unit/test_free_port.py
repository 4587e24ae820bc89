"""free_port hands out ports a listener can bind, below the kernel's ephemeral range (where
no outgoing connection can take one between the pick and the bind)."""

from __future__ import annotations

import socket
from pathlib import Path

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


def test_without_the_kernels_range_the_usual_floor_is_assumed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(ready, "_EPHEMERAL", tmp_path / "missing")
    assert ready._ephemeral_floor() == 32768
    assert 1024 <= ready.free_port() < 32768


def test_a_range_that_leaves_no_room_below_gets_the_kernels_pick(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    ranges = tmp_path / "ip_local_port_range"
    ranges.write_text("1100\t60999\n")
    monkeypatch.setattr(ready, "_EPHEMERAL", ranges)
    port = ready.free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))  # free
    assert port >= 1024
