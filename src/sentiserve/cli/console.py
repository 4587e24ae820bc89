"""Console output and error handling shared by every command."""

from __future__ import annotations

import json
import logging
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any, NoReturn

from rich.console import Console
from rich.markup import escape

from sentiserve.errors import SentiserveError
from sentiserve.settings import Settings

console = Console(stderr=True, highlight=False)
"""Progress and human-readable reports go to stderr; machine output (``--json``) to stdout."""


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(
            {"level": record.levelname, "logger": record.name, "message": record.getMessage()}
        )


def current_settings() -> Settings:
    """The settings ``main`` built for this invocation (a fresh read outside ``main``)."""
    import click

    context = click.get_current_context(silent=True)
    found = context.find_object(Settings) if context is not None else None
    return found if found is not None else Settings()


def setup(settings: Settings) -> None:
    """Configure logging and the data cache from settings (called once, from main)."""
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_json:
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("sentiserve")
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())


def fail(message: str, code: int = 1) -> NoReturn:
    """Print one error line and exit (inside a command or before the app runs)."""
    console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    raise SystemExit(code)


def engines_line(defaults: dict[str, str]) -> str:
    """``default engines: cpu -> int8, cuda -> fp32``."""
    return "default engines: " + ", ".join(f"{k} -> {v}" for k, v in defaults.items())


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn sentiserve's errors into one clear line and exit code 1 (no stack trace)."""
    try:
        yield
    except SentiserveError as exc:
        fail(str(exc))


def emit_json(obj: Any) -> None:
    """Print one JSON object on one line to stdout."""
    sys.stdout.write(json.dumps(obj, separators=(",", ":"), default=str) + "\n")
    sys.stdout.flush()


def step_printer() -> Callable[[str], None]:
    def show(message: str) -> None:
        console.print(f"[cyan]•[/] {message}")

    return show


def interrupt_on_sigterm() -> None:
    """Make SIGTERM act as Ctrl-C: a long-running command's ``wait()`` is interrupted and its
    ``finally`` stops what it started. (Stopping from the handler itself deadlocks: the
    interrupted ``Popen.wait`` holds the lock a second wait needs.)"""

    def interrupt(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
