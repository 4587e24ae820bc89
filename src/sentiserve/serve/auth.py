"""Optional API key: inference and model control need ``Authorization: Bearer <key>``;
health, metadata and metrics stay open."""

from __future__ import annotations

import hmac
import re

from sentiserve.errors import UnauthorizedError

PROTECTED_PATHS = re.compile(r"^/v1/|^/v2/models/[^/]+(/versions/[^/]+)?/infer$|^/v2/repository/")


class ApiKey:
    """Checks bearer tokens in constant time. ``key`` None turns checking off."""

    def __init__(self, key: str | None) -> None:
        if key is not None and len(key) < 8:
            raise ValueError("an API key needs at least 8 characters")
        self._key = key.encode() if key else None

    @property
    def enabled(self) -> bool:
        return self._key is not None

    def check(self, authorization: str | None) -> None:
        """Raise UnauthorizedError unless ``authorization`` is ``Bearer <key>``.

        The message never says whether the header was missing, malformed or wrong.
        """
        if self._key is None:
            return
        scheme, _, token = (authorization or "").partition(" ")
        ok = hmac.compare_digest(token.strip().encode(), self._key)
        if not (ok and scheme.lower() == "bearer"):
            raise UnauthorizedError("missing or invalid API key")

    def protects(self, path: str) -> bool:
        return self.enabled and bool(PROTECTED_PATHS.search(path))
