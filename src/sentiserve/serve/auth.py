"""API keys: checked in constant time against every valid key. Which operations need one
is the request policy's decision (:mod:`sentiserve.serve.policy`): inference and model
control; health, metadata and metrics stay open.

Keys come from ``SENTISERVE_API_KEY`` (one) and from a keys file (``--api-keys-file``: one
key per line, ``#`` comments), so several keys are valid at once and a key can be rotated
without a restart: add the new key to the file, move clients over, remove the old one. The
file is re-read when it changes (its modification time and size are checked at most once a
second, on the next protected request) and on SIGHUP. A file that cannot be read or holds
an invalid key is refused with an error in the log, and the keys in force stay in force.
"""

from __future__ import annotations

import hmac
import logging
import threading
import time
from pathlib import Path

from sentiserve.errors import ConfigError, UnauthorizedError

logger = logging.getLogger(__name__)

MIN_KEY_LENGTH = 8
RECHECK_S = 1.0
"""How often, at most, the keys file's modification time is looked at."""


def read_keys(path: Path) -> list[str]:
    """The keys in a keys file.

    Raises:
        ConfigError: The file cannot be read, or a key is too short or holds whitespace.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the API keys file {path}: {exc}") from exc
    keys = []
    for number, line in enumerate(text.splitlines(), start=1):
        key = line.strip()
        if not key or key.startswith("#"):
            continue
        if len(key) < MIN_KEY_LENGTH or any(c.isspace() for c in key):
            raise ConfigError(
                f"{path}:{number}: an API key needs {MIN_KEY_LENGTH}+ characters and no spaces"
            )
        keys.append(key)
    return keys


class ApiKeys:
    """Checks bearer tokens in constant time against every valid key.

    Args:
        key: One key (``SENTISERVE_API_KEY``), or None.
        file: A keys file, or None. With neither, checking is off.

    Raises:
        ConfigError: The key is too short, or the keys file is unreadable or invalid.
    """

    def __init__(self, key: str | None = None, file: Path | None = None) -> None:
        if key is not None and len(key) < MIN_KEY_LENGTH:
            raise ConfigError(f"an API key needs at least {MIN_KEY_LENGTH} characters")
        self._fixed = [key.encode()] if key else []
        self.file = file
        self._from_file: list[bytes] = []
        self._stamp: tuple[int, int] | None = None
        self._checked = 0.0
        self._lock = threading.Lock()
        if file is not None:
            self._load(file)

    @property
    def enabled(self) -> bool:
        return bool(self._fixed) or self.file is not None

    def _load(self, file: Path) -> None:
        keys = read_keys(file)
        stat = file.stat()
        with self._lock:
            self._from_file = [k.encode() for k in keys]
            self._stamp = (stat.st_mtime_ns, stat.st_size)
        logger.info("API keys: %d from %s", len(keys), file)

    def reload(self) -> bool:
        """Re-read the keys file; on failure keep the keys in force. Whether it loaded."""
        if self.file is None:
            return False
        try:
            self._load(self.file)
        except (ConfigError, OSError) as exc:
            logger.error("API keys not reloaded, the previous keys stay in force: %s", exc)
            return False
        return True

    def _reload_if_changed(self) -> None:
        now = time.monotonic()
        if self.file is None or now - self._checked < RECHECK_S:
            return
        self._checked = now
        try:
            stat = self.file.stat()
        except OSError:
            return  # reported by reload() when the file comes back changed
        if (stat.st_mtime_ns, stat.st_size) != self._stamp:
            self.reload()

    def check(self, authorization: str | None) -> None:
        """Raise UnauthorizedError unless ``authorization`` is ``Bearer <a valid key>``.

        The message never says whether the header was missing, malformed or wrong.
        """
        if not self.enabled:
            return
        self._reload_if_changed()
        scheme, _, token = (authorization or "").partition(" ")
        given = token.strip().encode()
        with self._lock:
            keys = self._fixed + self._from_file
        ok = False
        for key in keys:  # every key compared, so timing says nothing about which matched
            ok |= hmac.compare_digest(given, key)
        if not (ok and scheme.lower() == "bearer"):
            raise UnauthorizedError("missing or invalid API key")
