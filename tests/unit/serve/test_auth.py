"""API keys: one from the environment, more from a file, rotation without a restart."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sentiserve.errors import ConfigError, UnauthorizedError
from sentiserve.serve import auth
from sentiserve.serve.auth import ApiKeys, read_keys


def test_no_keys_means_no_checking() -> None:
    keys = ApiKeys()
    assert not keys.enabled
    keys.check(None)


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer wrong-key-1", "Basic k-one-123"])
def test_wrong_or_missing_keys_are_refused_alike(header: str | None) -> None:
    keys = ApiKeys("k-one-123")
    with pytest.raises(UnauthorizedError, match="^missing or invalid API key$"):
        keys.check(header)


def test_short_key_is_refused() -> None:
    with pytest.raises(ConfigError, match="at least 8"):
        ApiKeys("short")


def test_a_keys_file_holds_several_valid_keys(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text("# team A\nk-one-123\n\n  k-two-456  \n")
    keys = ApiKeys("k-env-789", path)
    for key in ("k-one-123", "k-two-456", "k-env-789"):
        keys.check(f"Bearer {key}")
    with pytest.raises(UnauthorizedError):
        keys.check("Bearer k-three-000")


@pytest.mark.parametrize(
    ("text", "message"),
    [("short\n", r"keys:1"), ("ok-key-123\nhas space 1\n", r"keys:2")],
)
def test_invalid_keys_files_name_the_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "keys"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        read_keys(path)


def test_rotation_without_restart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(auth, "RECHECK_S", 0.0)
    path = tmp_path / "keys"
    path.write_text("old-key-123\n")
    keys = ApiKeys(None, path)
    keys.check("Bearer old-key-123")
    path.write_text("old-key-123\nnew-key-456\n")  # the file changes: re-read on next check
    keys.check("Bearer new-key-456")
    path.write_text("new-key-456\n")
    os.utime(path, ns=(1, 1))  # a different modification time, same size as before or not
    with pytest.raises(UnauthorizedError):
        keys.check("Bearer old-key-123")
    keys.check("Bearer new-key-456")


def test_a_broken_file_keeps_the_keys_in_force(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text("good-key-123\n")
    keys = ApiKeys(None, path)
    path.write_text("bad\n")
    assert not keys.reload()
    keys.check("Bearer good-key-123")
    path.unlink()
    assert not keys.reload()
    keys.check("Bearer good-key-123")
    path.write_text("next-key-123\n")
    assert keys.reload()  # what SIGHUP calls
    keys.check("Bearer next-key-123")
