"""Process-wide settings from the environment (prefix ``SENTISERVE_``).

Built inside ``main()``, never at import time.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Settings every command shares."""

    model_config = SettingsConfigDict(env_prefix="SENTISERVE_", extra="ignore")

    log_level: str = Field(default="WARNING", description="Python logging level for sentiserve.")
    """Python logging level for sentiserve's own loggers."""
    log_json: bool = Field(default=False, description="Log one JSON object per line.")
    """Log one JSON object per line instead of plain text."""
    cache_dir: Path = Field(
        default=Path.home() / ".cache" / "sentiserve",
        description="Downloaded data (the rt corpus) lives here.",
    )
    """Where downloaded data (the rt corpus) is cached."""
    threads: int | None = Field(default=None, ge=1, description="ONNX Runtime threads.")
    """ONNX Runtime intra-op threads; unset means one per core."""
    api_key: str | None = Field(default=None, min_length=8, description="Serving API key.")
    """When set, inference and model control need ``Authorization: Bearer <key>``."""
    api_keys_file: Path | None = Field(default=None, description="More API keys, one per line.")
    """A file of API keys (one per line, ``#`` comments), all valid at once; re-read when it
    changes or on SIGHUP, so keys rotate without a restart."""
